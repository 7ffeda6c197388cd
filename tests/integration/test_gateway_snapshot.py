"""`GET /api/cameras/{ns}/{name}/snapshot.jpg` against the real kube-apiserver (RBAC), real
Redis, the real livekit-server and a real `camfleet-ingest` pulling the test bed's camera.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_ingest_audio import jpeg_code
from test_ingest_media import Ingest, running_ingest

from camfleet_dev.gateway import RunningGateway, run_gateway
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera
from overlay_gateway.settings import Settings
from overlay_gateway.snapshot_api import STILLS

CAMERAS = """
apiVersion: camfleet.io/v1alpha1
kind: Camera
metadata: {name: dock}
spec:
  source: {url: "rtsp://127.0.0.1:8554/h264"}
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

STATIC = "snapshot-token-" + secrets.token_hex(4)
REFRESH = 1.0


@dataclass
class Bed:
    gw: RunningGateway
    settings: Settings
    ns: str
    viewer: str
    ingest: Ingest


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def bed(
    kube: KubeCluster,
    camera_crd: object,
    namespace: str,
    redis_server: RedisServer,
    livekit_server: LiveKitServer,
    rtsp_camera: RtspCamera,
    tmp_path: Path,
) -> AsyncIterator[Bed]:
    def setup() -> str:
        kube.apply(CAMERAS, namespace=namespace)
        kube.kubectl("create", "serviceaccount", "viewer", "-n", namespace)
        kube.apply(VIEW_DOCK.format(ns=namespace), namespace=namespace)
        return kube.service_account_token(namespace, "viewer", "10m")

    viewer = await asyncio.to_thread(setup)
    settings = Settings.model_validate(
        {
            "redis_url": redis_server.url,
            "auth_modes": ["kubernetes", "static"],
            "static_token": STATIC,
            "kubeconfig": kube.kubeconfig,
            "authz_deny_cache_seconds": 0,
            "livekit_url": livekit_server.url,
            "livekit_api_key": livekit_server.api_key,
            "livekit_api_secret": livekit_server.api_secret,
            "snapshot_refresh_seconds": REFRESH,
        }
    )
    async with (
        running_ingest(
            livekit_server,
            tmp_path,
            rtsp_camera.url("h264"),
            camera=f"{namespace}/dock",
            advertise_host="127.0.0.1",
        ) as ingest,
        run_gateway(settings) as gw,
    ):
        await ingest.wait_health(200, within=20)
        yield Bed(gw, settings, namespace, viewer, ingest)


async def get(gw: RunningGateway, path: str, headers: dict[str, str]) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as s, s.get(gw.url + path, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_snapshot_api_authorised_cached_and_last_known(bed: Bed) -> None:
    dock = f"/api/cameras/{bed.ns}/dock/snapshot.jpg"
    status, jpeg, headers = await get(bed.gw, dock, bearer(bed.viewer))
    assert status == 200, jpeg[:200]
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Cache-Control"] == f"private, max-age={int(REFRESH)}"
    assert headers["X-Camfleet-Snapshot-Live"] == "true"
    assert float(headers["X-Camfleet-Snapshot-Age"]) < 10  # the latest keyframe (GOP 2 s)
    assert headers["ETag"] == f'"{headers["X-Camfleet-Taken-At"]}"'
    assert headers["Last-Modified"].endswith("GMT")
    assert jpeg_code(jpeg)[2] % 50 == 0  # one of the camera's keyframes
    # The browser's revalidation: same still, no body.
    status, body, _ = await get(
        bed.gw, dock, bearer(bed.viewer) | {"If-None-Match": headers["ETag"]}
    )
    assert (status, body) == (304, b"")

    # Authorisation as for viewing: no credentials, another camera, an unknown camera.
    assert (await get(bed.gw, dock, {}))[0] == 401
    status, body, _ = await get(
        bed.gw, f"/api/cameras/{bed.ns}/yard/snapshot.jpg", bearer(bed.viewer)
    )
    assert status == 403
    assert b"forbidden" in body
    status, body, _ = await get(bed.gw, f"/api/cameras/{bed.ns}/nope/snapshot.jpg", bearer(STATIC))
    assert status == 404
    assert b"not_found" in body
    # yard exists and may be viewed with the static token, but no ingest ever ran for it.
    status, body, _ = await get(bed.gw, f"/api/cameras/{bed.ns}/yard/snapshot.jpg", bearer(STATIC))
    assert status == 404
    assert b"no_snapshot" in body

    # The ingest stops (an on-demand camera nobody watches): the last known still, with its
    # age, from Redis, at this replica and at a second one that never fetched it.
    bed.ingest.kill()
    await asyncio.sleep(REFRESH + 0.2)
    status, last, later = await get(bed.gw, dock, bearer(bed.viewer))
    assert status == 200
    assert later["X-Camfleet-Snapshot-Live"] == "false"
    assert int(later["X-Camfleet-Taken-At"]) >= int(headers["X-Camfleet-Taken-At"])
    assert float(later["X-Camfleet-Snapshot-Age"]) >= REFRESH
    async with run_gateway(bed.settings) as replica:
        status, other, there = await get(replica, dock, bearer(bed.viewer))
        assert status == 200
        assert other == last
        assert there["X-Camfleet-Snapshot-Live"] == "false"


async def test_one_fetch_per_refresh_whoever_asks(bed: Bed) -> None:
    """Twenty viewers at once, twice: the ingest is asked once per refresh period at most."""
    dock = f"/api/cameras/{bed.ns}/dock/snapshot.jpg"
    # A replica with a long refresh period: both rounds fall inside it, however slow the machine.
    settings = bed.settings.model_copy(update={"snapshot_refresh_seconds": 60.0})
    async with run_gateway(settings) as gw:
        stills = gw.app[STILLS]
        for _ in range(2):
            answers = await asyncio.gather(*(get(gw, dock, bearer(STATIC)) for _ in range(20)))
            assert {a[0] for a in answers} == {200}
            assert len({a[1] for a in answers}) == 1
        assert stills.fetches == 1
