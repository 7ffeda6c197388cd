"""The gateway's playback API against the real kube-apiserver (RBAC), a real PostgreSQL index
and a real S3-compatible store: the same authorisation as viewing, signed URLs the store itself
honours (the bytes never pass through the gateway), gaps, and clear 400s."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import obstore
import pytest
from obstore.store import S3Store
from test_history_api import CAMERAS, STATIC, VIEW_DOCK, bearer, gateway_settings, get

from camfleet.recording import Gap, Segment, segment_key
from camfleet_archiver.schema import migrate
from camfleet_dev.gateway import RunningGateway, run_gateway
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.s3 import S3Server
from camfleet_ingest.recording.index import SegmentIndex

T0 = 1_796_000_000_000_000  # µs since the epoch


@dataclass
class Bed:
    gw: RunningGateway
    ns: str
    viewer: str
    blobs: dict[str, bytes]


@pytest.fixture
async def bed(
    kube: KubeCluster,
    camera_crd: object,
    namespace: str,
    redis_server: RedisServer,
    postgres: PostgresServer,
    s3_server: S3Server,
) -> AsyncIterator[Bed]:
    def setup() -> str:
        kube.apply(CAMERAS, namespace=namespace)
        kube.kubectl("create", "serviceaccount", "viewer", "-n", namespace)
        kube.apply(VIEW_DOCK.format(ns=namespace), namespace=namespace)
        return kube.service_account_token(namespace, "viewer", "10m")

    viewer = await asyncio.to_thread(setup)
    dsn = postgres.create_database(f"p_{secrets.token_hex(4)}")
    await asyncio.to_thread(migrate, dsn)
    bucket = s3_server.create_bucket(f"play-{secrets.token_hex(3)}")
    store = S3Store(
        bucket,
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    # Three 4 s segments of `dock` with a 6 s gap after the second, as the ingest writes them.
    index = SegmentIndex(dsn, timeout_s=5)
    camera = f"{namespace}/dock"
    blobs: dict[str, bytes] = {}
    for start in (T0, T0 + 4_000_000, T0 + 14_000_000):
        key = segment_key("site", camera, start)
        blobs[key] = secrets.token_bytes(2048)
        await obstore.put_async(store, key, blobs[key])
        await index.add_segment(
            Segment(
                camera=camera,
                start_us=start,
                end_us=start + 4_000_000,
                first_frame=start // 40_000,
                frames=100,
                keyframes_us=(0, 2_000_000),
                size=len(blobs[key]),
                key=key,
            )
        )
    await index.add_gap(
        Gap(camera=camera, start_us=T0 + 8_000_000, end_us=T0 + 14_000_000, reason="BufferFull")
    )
    await index.close()
    settings = gateway_settings(
        redis_server.url,
        kube,
        postgres_dsn=dsn,
        recording_store_url=f"s3://{bucket}/site",
        recording_s3_public_endpoint=s3_server.endpoint,
        recording_s3_region=s3_server.region,
        recording_s3_access_key_id=s3_server.access_key_id,
        recording_s3_secret_access_key=s3_server.secret_access_key,
        recording_url_ttl_seconds=60,
    )
    async with run_gateway(settings) as gw:
        yield Bed(gw, namespace, viewer, blobs)


def recordings(bed: Bed, camera: str = "dock") -> str:
    return f"/api/cameras/{bed.ns}/{camera}/recordings"


RANGE = {"from": str(T0 // 1000), "to": str(T0 // 1000 + 60_000)}


async def test_a_viewer_gets_signed_urls_the_store_answers(bed: Bed) -> None:
    status, body = await get(bed.gw, recordings(bed), bearer(bed.viewer), RANGE)
    assert status == 200, body
    segments = body["segments"]
    assert [s["start"] for s in segments] == [T0, T0 + 4_000_000, T0 + 14_000_000]
    assert segments[0]["keyframes"] == [0, 2_000_000]
    assert body["gaps"] == [
        {"start": T0 + 8_000_000, "end": T0 + 14_000_000, "reason": "BufferFull"}
    ]
    async with aiohttp.ClientSession() as session:
        for segment, blob in zip(segments, bed.blobs.values(), strict=True):
            url = segment["url"]
            assert url.startswith(bed.gw.url) is False  # from the store, not the gateway
            async with session.get(url) as resp:
                assert resp.status == 200
                assert await resp.read() == blob
            # The signature is what opens it: the bare object URL is refused by the store.
            async with session.get(url.split("?", 1)[0]) as resp:
                assert resp.status == 403
    # A range that starts inside a segment returns that segment too.
    inside = {"from": str(T0 // 1000 + 5_000), "to": str(T0 // 1000 + 6_000)}
    status, body = await get(bed.gw, recordings(bed), bearer(bed.viewer), inside)
    assert status == 200
    assert [s["start"] for s in body["segments"]] == [T0 + 4_000_000]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"from": str(T0 // 1000 + 1000), "to": str(T0 // 1000)}, "from must be before to"),
        ({"from": "0", "to": str(T0 // 1000)}, "at most 24 hours"),
        ({"from": "yesterday"}, "neither epoch milliseconds nor ISO-8601"),
        ({"label": "person"}, "unknown parameter"),
    ],
)
async def test_bad_parameters_are_a_clear_400(bed: Bed, params: dict[str, str], words: str) -> None:
    status, body = await get(bed.gw, recordings(bed), bearer(bed.viewer), params)
    assert status == 400, body
    assert words in body["error"]["message"]


async def test_playback_is_authorised_like_viewing(bed: Bed) -> None:
    status, body = await get(bed.gw, recordings(bed, "yard"), bearer(bed.viewer), RANGE)
    assert status == 403, body
    status, _ = await get(bed.gw, recordings(bed), {}, RANGE)
    assert status == 401
    status, body = await get(bed.gw, recordings(bed, "nope"), bearer(STATIC), RANGE)
    assert status == 404, body
    no_auth: dict[str, Any] = {"Authorization": "Bearer wrong"}
    status, _ = await get(bed.gw, recordings(bed), no_auth, RANGE)
    assert status == 401
