"""The gateway's history API and AI path health against the real kube-apiserver (RBAC), a real
PostgreSQL filled by the real archiver (or its writer, for rows at chosen times) and real Redis.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from gateway_clients import metric, scrape

from camfleet.ai import AsyncPublisher
from camfleet.events import Event
from camfleet_archiver.main import Service
from camfleet_archiver.metrics import Metrics
from camfleet_archiver.schema import migrate
from camfleet_archiver.settings import Settings as ArchiverSettings
from camfleet_archiver.writer import Writer, to_record
from camfleet_dev.gateway import RunningGateway, run_gateway
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.process import free_port
from camfleet_dev.testbed.redis import RedisServer
from overlay_gateway.settings import Settings

CAMERAS = """
apiVersion: camfleet.io/v1alpha1
kind: Camera
metadata: {name: dock}
spec:
  source: {url: "rtsp://127.0.0.1:8554/dock"}
  history: {retention: 7d}
---
apiVersion: camfleet.io/v1alpha1
kind: Camera
metadata: {name: yard}
spec:
  source: {url: "rtsp://127.0.0.1:8554/yard"}
"""

VIEW_DOCK = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: dock-viewer}}
rules:
  - apiGroups: [camfleet.io]
    resources: [cameras/view]
    verbs: [get]
    resourceNames: [dock]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: viewer-views-dock}}
subjects: [{{kind: ServiceAccount, name: viewer, namespace: {ns}}}]
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: dock-viewer}}
"""

STATIC = "history-token-" + secrets.token_hex(4)


@dataclass
class Bed:
    gw: RunningGateway
    ns: str
    viewer: str
    dsn: str
    redis_url: str


def gateway_settings(redis_url: str, kube: KubeCluster | None, **extra: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "auth_modes": ["kubernetes", "static"] if kube else ["static"],
        "static_token": STATIC,
        "kube_enabled": kube is not None,
        "authz_deny_cache_seconds": 0,
        "reader_linger_seconds": 0,
        "xread_block_ms": 500,
    }
    if kube is not None:
        base["kubeconfig"] = kube.kubeconfig
    base.update(extra)
    return Settings.model_validate(base)


@pytest.fixture
async def bed(
    kube: KubeCluster,
    camera_crd: object,
    namespace: str,
    redis_server: RedisServer,
    postgres: PostgresServer,
) -> AsyncIterator[Bed]:
    def setup() -> str:
        kube.apply(CAMERAS, namespace=namespace)
        kube.kubectl("create", "serviceaccount", "viewer", "-n", namespace)
        kube.apply(VIEW_DOCK.format(ns=namespace), namespace=namespace)
        return kube.service_account_token(namespace, "viewer", "10m")

    viewer = await asyncio.to_thread(setup)
    dsn = postgres.create_database(f"h_{secrets.token_hex(4)}")
    await asyncio.to_thread(migrate, dsn)
    settings = gateway_settings(redis_server.url, kube, postgres_dsn=dsn, overlay_stale_seconds=1.5)
    async with run_gateway(settings) as gw:
        yield Bed(gw, namespace, viewer, dsn, redis_server.url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(
    gw: RunningGateway, path: str, headers: dict[str, str], params: Any = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(gw.url + path, headers=headers, params=params) as resp,
    ):
        return resp.status, await resp.json()


def detection(camera: str, ts_ms: int, labels: tuple[str, ...]) -> dict[str, Any]:
    return {
        "camera": camera,
        "ts": ts_ms,
        "source": "history-test",
        "objects": [
            {"id": f"t{i}", "label": label, "score": 0.8, "box": [0.2, 0.2, 0.3, 0.3]}
            for i, label in enumerate(labels)
        ],
    }


async def store(dsn: str, camera: str, items: list[tuple[int, tuple[str, ...]]]) -> list[str]:
    """Rows as the archiver writes them, at chosen capture times; their entry ids."""
    seq = int(time.time() * 1000)
    records, ids = [], []
    for n, (ts, labels) in enumerate(items):
        entry = f"{seq}-{n}"
        ids.append(entry)
        body = Event.model_validate(detection(camera, ts, labels)).to_json()
        records.append(to_record(camera, entry, body))
    writer = Writer(dsn, Metrics(), set())
    await writer.write(records)
    await writer.close()
    return ids


async def test_history_follows_camera_view_rights(bed: Bed) -> None:
    gw, ns = bed.gw, bed.ns
    for path in (f"/api/cameras/{ns}/dock/events", f"/api/cameras/{ns}/dock/timeline"):
        assert (await get(gw, path, {}))[0] == 401
        assert (await get(gw, path, bearer("not-a-token")))[0] == 401
        status, _ = await get(gw, path, bearer(bed.viewer))
        assert status == 200
    # The viewer may view dock only: yard is forbidden, a missing camera looks the same.
    for camera in ("yard", "ghost"):
        status, body = await get(gw, f"/api/cameras/{ns}/{camera}/events", bearer(bed.viewer))
        assert status == 403
        assert body["error"]["code"] == "forbidden"
        status, _ = await get(gw, f"/api/cameras/{ns}/{camera}/timeline", bearer(bed.viewer))
        assert status == 403
    # The static token may view everything; a missing camera is then a 404.
    status, _ = await get(gw, f"/api/cameras/{ns}/ghost/events", bearer(STATIC))
    assert status == 404


async def test_events_pages_stay_stable_while_rows_arrive(bed: Bed) -> None:
    camera = f"{bed.ns}/dock"
    start = int(datetime(2026, 11, 30, 8, tzinfo=UTC).timestamp() * 1000)
    first = await store(bed.dsn, camera, [(start + i * 100, ("person",)) for i in range(250)])
    path = f"/api/cameras/{camera}/events"
    window = {"from": str(start), "to": str(start + 3_600_000), "limit": "100"}
    seen: list[str] = []
    times: list[int] = []
    status, page = await get(bed.gw, path, bearer(bed.viewer), window)
    assert status == 200
    assert len(page["events"]) == 100
    seen += [e["id"] for e in page["events"]]
    times += [e["ts"] for e in page["events"]]
    # Rows arrive meanwhile, before the cursor and after it (a late worker, a live one).
    late = await store(bed.dsn, camera, [(start + 50 + i * 1000, ("car",)) for i in range(20)])
    later = await store(bed.dsn, camera, [(start + 30_000 + i, ("dog",)) for i in range(30)])
    while page["next"]:
        status, page = await get(
            bed.gw, path, bearer(bed.viewer), {**window, "cursor": page["next"]}
        )
        assert status == 200
        seen += [e["id"] for e in page["events"]]
        times += [e["ts"] for e in page["events"]]
    assert times == sorted(times)
    assert len(seen) == len(set(seen)), "a row came twice"
    assert set(first) <= set(seen), "a row was skipped"
    assert set(later) <= set(seen)
    # Late rows that sort before the cursor are not on later pages; those after it are.
    assert not set(late[:10]) & set(seen)
    assert set(late[10:]) <= set(seen)
    assert len(seen) == 250 + 10 + 30
    # Descending order and a label filter.
    status, page = await get(
        bed.gw, path, bearer(bed.viewer), {**window, "order": "desc", "label": "dog", "limit": "5"}
    )
    assert status == 200
    assert [e["ts"] for e in page["events"]] == [start + 30_000 + i for i in (29, 28, 27, 26, 25)]
    assert page["events"][0]["objects"][0]["label"] == "dog"


async def test_timeline_counts_per_bucket_and_label(bed: Bed) -> None:
    camera = f"{bed.ns}/dock"
    start = int(datetime(2026, 11, 29, 10, tzinfo=UTC).timestamp() * 1000)
    items = [(start + i * 1000, ("person",)) for i in range(90)]  # 90 s of persons
    items += [(start + 60_000 + i * 1000, ("car", "person")) for i in range(10)]
    await store(bed.dsn, camera, items)
    params = {"from": str(start), "to": str(start + 120_000), "bucket": "60"}
    status, body = await get(bed.gw, f"/api/cameras/{camera}/timeline", bearer(bed.viewer), params)
    assert status == 200
    assert body["bucketSeconds"] == 60
    assert body["buckets"] == [
        {"start": start, "counts": {"person": 60}},
        {"start": start + 60_000, "counts": {"car": 10, "person": 40}},
    ]
    assert body["totals"] == {"person": 100, "car": 10}
    params["label"] = "car"
    _, body = await get(bed.gw, f"/api/cameras/{camera}/timeline", bearer(bed.viewer), params)
    assert body["buckets"] == [{"start": start + 60_000, "counts": {"car": 10}}]
    # ISO-8601 works as well as epoch ms.
    iso = {"from": "2026-11-29T10:00:00Z", "to": "2026-11-29T10:02:00+00:00", "bucket": "60"}
    _, by_iso = await get(bed.gw, f"/api/cameras/{camera}/timeline", bearer(bed.viewer), iso)
    assert by_iso["totals"] == {"person": 100, "car": 10}


async def test_timeline_from_the_rollup_agrees_with_counting_the_events(bed: Bed) -> None:
    """An aligned range is answered from the archiver's rollup up to its last whole 10 s and from
    the events after that; an unaligned one from the events alone: the counts must agree."""
    camera = f"{bed.ns}/dock"  # the camera the viewer may view, an hour no other test uses
    start = int(datetime(2026, 11, 29, 11, tzinfo=UTC).timestamp() * 1000)
    items = [(start + i * 1000 + 250, ("person",)) for i in range(95)]
    items += [(start + 92_000 + i * 100, ("bike",)) for i in range(20)]
    await store(bed.dsn, camera, items)
    path = f"/api/cameras/{camera}/timeline"
    aligned = {"from": str(start), "to": str(start + 95_500), "bucket": "30"}  # ends mid-bucket
    status, body = await get(bed.gw, path, bearer(bed.viewer), aligned)
    assert status == 200
    assert body["buckets"] == [
        {"start": start, "counts": {"person": 30}},
        {"start": start + 30_000, "counts": {"person": 30}},
        {"start": start + 60_000, "counts": {"person": 30}},
        {"start": start + 90_000, "counts": {"bike": 20, "person": 5}},
    ]
    # One millisecond later the rollup's buckets no longer fit: counted from the events.
    shifted = {"from": str(start + 1), "to": str(start + 95_500), "bucket": "30"}
    _, other = await get(bed.gw, path, bearer(bed.viewer), shifted)
    assert other["totals"] == body["totals"] == {"person": 95, "bike": 20}
    assert [b["start"] - 1 for b in other["buckets"]] == [b["start"] for b in body["buckets"]]
    labelled = {**aligned, "label": "bike"}
    _, bikes = await get(bed.gw, path, bearer(bed.viewer), labelled)
    assert bikes["buckets"] == [{"start": start + 90_000, "counts": {"bike": 20}}]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "yesterday"}, "from: 'yesterday' is neither epoch milliseconds nor ISO-8601"),
        ({"from": "2000", "to": "1000"}, "from must be before to"),
        ({"limit": "0"}, "limit must be from 1 to 1000"),
        ({"limit": "1000000"}, "limit must be from 1 to 1000"),
        ({"limit": "ten"}, "limit must be a whole number"),
        ({"cursor": "bm9wZQ"}, "cursor is not one this API returned"),
        ({"cursor": "%%%"}, "cursor is not one this API returned"),
        ({"order": "sideways"}, "order must be asc or desc"),
        ({"label": "x" * 200}, "label must be 1 to 128 characters"),
        ({"colour": "red"}, "unknown parameter 'colour'"),
        ({"to": "2026-13-40T99:00:00Z"}, "to: '2026-13-40T99:00:00Z' is neither"),
    ],
)
async def test_bad_event_parameters_are_400_with_a_reason(
    bed: Bed, params: dict[str, str], message: str
) -> None:
    status, body = await get(
        bed.gw, f"/api/cameras/{bed.ns}/dock/events", bearer(bed.viewer), params
    )
    assert status == 400
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["message"].startswith(message), body


async def test_bad_timeline_parameters_and_repeats_are_400(bed: Bed) -> None:
    path = f"/api/cameras/{bed.ns}/dock/timeline"
    status, body = await get(
        bed.gw, path, bearer(bed.viewer), {"from": "0", "to": "86400000", "bucket": "1"}
    )
    assert status == 400
    assert "buckets requested, at most 2000" in body["error"]["message"]
    status, body = await get(bed.gw, path, bearer(bed.viewer), [("label", "a"), ("label", "b")])
    assert status == 400
    assert body["error"]["message"] == "each parameter at most once"
    status, body = await get(bed.gw, path, bearer(bed.viewer), {"bucket": "-5"})
    assert status == 400


async def test_history_not_configured_or_down_is_503(redis_server: RedisServer) -> None:
    headers = bearer(STATIC)
    async with run_gateway(gateway_settings(redis_server.url, None)) as gw:
        status, body = await get(gw, "/api/cameras/shop/door/events", headers)
        assert status == 503
        assert body["error"]["message"] == "history not configured"
    down = f"postgresql://camfleet:camfleet@127.0.0.1:{free_port()}/camfleet"
    async with run_gateway(gateway_settings(redis_server.url, None, postgres_dsn=down)) as gw:
        started = time.monotonic()
        status, body = await get(gw, "/api/cameras/shop/door/events", headers)
        assert status == 503
        assert body["error"]["message"] == "history database unavailable"
        assert time.monotonic() - started < 5
        # Live overlays do not depend on it.
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/readyz") as resp:
            assert resp.status == 200


async def overlays(gw: RunningGateway, camera: str) -> dict[str, Any]:
    status, body = await get(gw, "/api/cameras", bearer(STATIC))
    assert status == 200
    (item,) = [c for c in body["cameras"] if c["camera"] == camera]
    result: dict[str, Any] = item["overlays"]
    return result


async def until(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_stale_overlays_appear_and_clear(bed: Bed) -> None:
    """No AI worker: "none"; events: "fresh"; silence past the threshold: "stale since T" (and
    the age metric grows for a watched camera); events again: "fresh"."""
    gw, camera = bed.gw, f"{bed.ns}/yard"
    assert await overlays(gw, camera) == {"state": "none"}
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(gw.ws_url, headers=bearer(STATIC), protocols=("camfleet.v1",)) as ws,
        AsyncPublisher(bed.redis_url) as pub,
    ):
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
        await ws.send_str(json.dumps({"type": "subscribe", "cameras": [camera]}))
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "subscribed"
        entry = await pub.publish(detection(camera, int(time.time() * 1000), ("person",)))
        assert json.loads((await ws.receive(timeout=10)).data)["id"] == entry
        fresh = await overlays(gw, camera)
        assert fresh["state"] == "fresh"
        assert fresh["lastEventAt"] == int(entry.split("-")[0])
        label = f'camera="{camera}"'
        assert 0 <= metric(await scrape(gw), "camfleet_gateway_last_event_age_seconds", label) < 1.5

        async def stale() -> dict[str, Any] | None:
            state = await overlays(gw, camera)
            return state if state["state"] == "stale" else None

        went_stale = await until(stale, 10, "stale overlays")
        assert went_stale["staleSince"] == int(entry.split("-")[0])
        assert metric(await scrape(gw), "camfleet_gateway_last_event_age_seconds", label) > 1.5
        await pub.publish(detection(camera, int(time.time() * 1000), ("person",)))

        async def fresh_again() -> bool:
            return (await overlays(gw, camera))["state"] == "fresh"

        await until(fresh_again, 10, "fresh overlays again")


async def test_archived_events_are_served_by_the_gateway(
    bed: Bed, redis_server: RedisServer
) -> None:
    """The whole history path: SDK → Redis → archiver → PostgreSQL → gateway."""
    camera = f"{bed.ns}/dock"
    service = Service(
        ArchiverSettings(
            redis_url=bed.redis_url,
            postgres_dsn=bed.dsn,
            consumer="e2e",
            group=f"g-{secrets.token_hex(3)}",
            discover_seconds=0.3,
            block_ms=100,
            kube_enabled=False,
        ),
        Metrics(),
    )
    await service.start()
    try:
        now = int(time.time() * 1000)
        async with AsyncPublisher(bed.redis_url) as pub:
            ids = await pub.publish_many(
                [detection(camera, now - 1000 + i, ("person",)) for i in range(20)]
            )
        params = {"from": str(now - 60_000), "label": "person", "limit": "50"}

        async def archived() -> list[str] | None:
            _, body = await get(bed.gw, f"/api/cameras/{camera}/events", bearer(bed.viewer), params)
            got = [e["id"] for e in body["events"]]
            return got if set(ids) <= set(got) else None

        got = await until(archived, 20, "the archived events")
        assert [i for i in got if i in ids] == ids
    finally:
        await service.close()
