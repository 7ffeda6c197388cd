"""Gateway authentication and authorisation against the real kube-apiserver (TokenReview,
SubjectAccessReview with real RBAC objects and ServiceAccount tokens from the TokenRequest API),
and viewer tokens checked by the real livekit-server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from gateway_clients import metric, scrape
from livekit import api as lkapi
from livekit import rtc

from camfleet.ai import AsyncPublisher
from camfleet_dev.gateway import RunningGateway, run_gateway
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.redis import RedisServer
from overlay_gateway.settings import Settings

CAMERAS = """
apiVersion: camfleet.io/v1alpha1
kind: Camera
metadata: {{name: door}}
spec:
  source: {{url: "rtsp://127.0.0.1:8554/door"}}
  room: door-room
---
apiVersion: camfleet.io/v1alpha1
kind: Camera
metadata: {{name: lobby}}
spec:
  source: {{url: "rtsp://127.0.0.1:8554/lobby"}}
  access: {{groups: [lobby-viewers]}}
"""

VIEW_ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: camera-viewer}}
rules:
  - apiGroups: [camfleet.io]
    resources: [cameras/view]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: viewer-can-view}}
subjects: [{{kind: ServiceAccount, name: viewer, namespace: {ns}}}]
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: camera-viewer}}
"""

# `get` on the Camera itself is not `get` on cameras/view: reading a spec is not watching video.
READ_ONLY_ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: camera-reader}}
rules:
  - apiGroups: [camfleet.io]
    resources: [cameras]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader-can-read}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {ns}}}]
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: camera-reader}}
"""


@dataclass
class Bed:
    gw: RunningGateway
    kube: KubeCluster
    ns: str
    viewer: str  # ServiceAccount bearer tokens
    reader: str
    livekit: LiveKitServer
    redis_url: str


@pytest.fixture
async def bed(
    kube: KubeCluster,
    camera_crd: object,
    namespace: str,
    redis_server: RedisServer,
    livekit_server: LiveKitServer,
) -> AsyncIterator[Bed]:
    def setup() -> tuple[str, str]:
        kube.apply(CAMERAS.format(), namespace=namespace)
        for sa in ("viewer", "reader"):
            kube.kubectl("create", "serviceaccount", sa, "-n", namespace)
        kube.apply(READ_ONLY_ROLE.format(ns=namespace), namespace=namespace)
        return (
            kube.service_account_token(namespace, "viewer", "10m"),
            kube.service_account_token(namespace, "reader", "10m"),
        )

    viewer, reader = await asyncio.to_thread(setup)
    settings = Settings.model_validate(
        {
            "redis_url": redis_server.url,
            "auth_modes": ["kubernetes", "proxy"],
            # Only 127.0.0.2 is "the auth proxy"; everyone else connects from 127.0.0.1.
            "proxy_cidrs": ["127.0.0.2/32"],
            "kubeconfig": kube.kubeconfig,
            "authz_deny_cache_seconds": 0,
            "livekit_url": livekit_server.url,
            "livekit_api_key": livekit_server.api_key,
            "livekit_api_secret": livekit_server.api_secret,
            "viewer_token_ttl_seconds": 120,
            "reader_linger_seconds": 0,
        }
    )
    async with run_gateway(settings) as gw:
        yield Bed(gw, kube, namespace, viewer, reader, livekit_server, redis_server.url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def proxied(user: str, groups: str) -> dict[str, str]:
    return {"X-Forwarded-User": user, "X-Forwarded-Groups": groups}


def session(source: str = "127.0.0.1") -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


async def post_token(
    gw: RunningGateway, camera: str, headers: dict[str, str], source: str = "127.0.0.1"
) -> tuple[int, dict[str, Any]]:
    async with (
        session(source) as s,
        s.post(gw.url + "/api/token", json={"camera": camera}, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def list_cameras(
    gw: RunningGateway, headers: dict[str, str], source: str = "127.0.0.1"
) -> tuple[int, list[str]]:
    async with session(source) as s, s.get(gw.url + "/api/cameras", headers=headers) as resp:
        body = await resp.json()
        return resp.status, [c["camera"] for c in body.get("cameras", [])]


async def subscribe(
    gw: RunningGateway, camera: str, headers: dict[str, str], source: str = "127.0.0.1"
) -> dict[str, Any]:
    """Connect, subscribe to one camera, return the server's answer (subscribed or error)."""
    async with (
        session(source) as s,
        s.ws_connect(gw.ws_url, headers=headers, protocols=("camfleet.v1",)) as ws,
    ):
        hello = json.loads((await ws.receive(timeout=5)).data)
        assert hello["type"] == "hello"
        await ws.send_str(json.dumps({"type": "subscribe", "cameras": [camera]}))
        answer: dict[str, Any] = json.loads((await ws.receive(timeout=10)).data)
        return answer


async def test_rbac_refuses_then_allows_after_a_rolebinding(bed: Bed) -> None:
    gw, ns = bed.gw, bed.ns
    door = f"{ns}/door"
    # No or bad credentials: 401 everywhere.
    assert (await post_token(gw, door, {}))[0] == 401
    assert (await post_token(gw, door, bearer("not-a-token")))[0] == 401
    async with session() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(gw.ws_url, headers=bearer("not-a-token"))
        assert refused.value.status == 401

    # Authenticated by TokenReview, but no RBAC for cameras/view.
    answer = await subscribe(gw, door, bearer(bed.viewer))
    assert answer == {
        "type": "error",
        "code": "forbidden",
        "message": "not allowed to view this camera",
        "camera": door,
    }
    status, body = await post_token(gw, door, bearer(bed.viewer))
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert await list_cameras(gw, bearer(bed.viewer)) == (200, [])
    # A missing camera looks the same as a forbidden one to someone who may not view.
    assert (await post_token(gw, f"{ns}/ghost", bearer(bed.viewer)))[0] == 403
    # `get` on cameras is not `get` on cameras/view.
    assert (await post_token(gw, door, bearer(bed.reader)))[0] == 403
    assert (await subscribe(gw, door, bearer(bed.reader)))["code"] == "forbidden"

    await asyncio.to_thread(bed.kube.apply, VIEW_ROLE.format(ns=ns), ns)
    deadline = time.monotonic() + 10
    while (status := (await post_token(gw, door, bearer(bed.viewer)))[0]) == 403:
        assert time.monotonic() < deadline, "the RoleBinding never took effect"
        await asyncio.sleep(0.1)  # the apiserver's RBAC cache catches up asynchronously
    assert status == 200

    answer = await subscribe(gw, door, bearer(bed.viewer))
    assert answer["type"] == "subscribed"
    assert answer["camera"] == door
    status, body = await post_token(gw, f"{ns}/ghost", bearer(bed.viewer))
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert await list_cameras(gw, bearer(bed.viewer)) == (200, [door, f"{ns}/lobby"])
    # The reader's rights did not change.
    assert (await post_token(gw, door, bearer(bed.reader)))[0] == 403

    # And events flow to the allowed viewer, authenticated through the browser-style subprotocol.
    proto = "base64url.bearer.authorization.k8s.io." + base64.urlsafe_b64encode(
        bed.viewer.encode()
    ).decode().rstrip("=")
    async with session() as s, s.ws_connect(gw.ws_url, protocols=("camfleet.v1", proto)) as ws:
        assert ws.protocol == "camfleet.v1"
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
        await ws.send_str(json.dumps({"type": "subscribe", "cameras": [door]}))
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "subscribed"
        async with AsyncPublisher(bed.redis_url) as pub:
            sent = await pub.publish(
                {"camera": door, "ts": int(time.time() * 1000), "source": "t", "objects": []}
            )
        got = json.loads((await ws.receive(timeout=5)).data)
        assert (got["type"], got["id"]) == ("event", sent)


async def test_access_groups_and_trusted_proxy_headers(bed: Bed) -> None:
    gw, ns = bed.gw, bed.ns
    carol = proxied("carol@example.com", "staff, lobby-viewers")
    # From the proxy's address: carol is in the lobby's access.groups, nothing grants the door.
    assert (await subscribe(gw, f"{ns}/lobby", carol, "127.0.0.2"))["type"] == "subscribed"
    assert (await subscribe(gw, f"{ns}/door", carol, "127.0.0.2"))["code"] == "forbidden"
    status, body = await post_token(gw, f"{ns}/lobby", carol, "127.0.0.2")
    assert status == 200
    assert body["room"] == f"{ns}-lobby"  # default room name
    assert body["identity"].startswith("viewer:carol@example.com:")
    # (Other tests' namespaces may still hold lobbies open to the same group.)
    status, cams = await list_cameras(gw, carol, "127.0.0.2")
    assert (status, [c for c in cams if c.startswith(f"{ns}/")]) == (200, [f"{ns}/lobby"])
    # The same headers from anywhere else are not believed.
    assert (await post_token(gw, f"{ns}/lobby", carol, "127.0.0.1"))[0] == 401
    assert (await list_cameras(gw, carol, "127.0.0.1"))[0] == 401
    # The SA's own groups are not lobby-viewers.
    assert (await post_token(gw, f"{ns}/lobby", bearer(bed.viewer)))[0] == 403


async def test_viewer_token_cannot_publish_on_livekit(bed: Bed) -> None:
    gw, ns = bed.gw, bed.ns
    carol = proxied("carol", "lobby-viewers")
    status, body = await post_token(gw, f"{ns}/lobby", carol, "127.0.0.2")
    assert status == 200
    assert body["url"] == bed.livekit.url
    claims = lkapi.TokenVerifier(bed.livekit.api_key, bed.livekit.api_secret).verify(body["token"])
    assert claims.video is not None
    assert claims.video.room == body["room"]
    assert claims.video.room_join is True
    assert claims.video.can_subscribe is True
    assert claims.video.can_publish is False
    assert claims.video.can_publish_data is False
    assert body["expiresAt"] - time.time() <= 120

    # Control: a token that may publish gets its track published quickly on this server...
    control_jwt = (
        lkapi.AccessToken(bed.livekit.api_key, bed.livekit.api_secret)
        .with_identity("control-publisher")
        .with_grants(lkapi.VideoGrants(room_join=True, room=body["room"], can_publish=True))
        .to_jwt()
    )
    control, viewer = rtc.Room(), rtc.Room()
    await control.connect(body["url"], control_jwt)
    await viewer.connect(body["url"], body["token"])
    try:
        source = rtc.VideoSource(64, 64)
        ok = rtc.LocalVideoTrack.create_video_track("allowed", source)
        started = time.monotonic()
        await asyncio.wait_for(
            control.local_participant.publish_track(ok, rtc.TrackPublishOptions()), 5
        )
        assert time.monotonic() - started < 1.5  # so 3 s without a publication is a refusal
        # ...while the viewer's attempt is refused: livekit-server drops the AddTrack request
        # of a participant without can_publish, so the SDK never gets a publication.
        sneaky = rtc.LocalVideoTrack.create_video_track("sneaky", source)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                viewer.local_participant.publish_track(sneaky, rtc.TrackPublishOptions()), 3
            )
        async with lkapi.LiveKitAPI(
            bed.livekit.http_url, bed.livekit.api_key, bed.livekit.api_secret
        ) as lk:
            participants = await lk.room.list_participants(
                lkapi.ListParticipantsRequest(room=body["room"])
            )
        by_id = {p.identity: p for p in participants.participants}
        me = by_id[body["identity"]]
        assert me.permission.can_publish is False
        assert me.permission.can_publish_data is False
        assert me.permission.can_subscribe is True
        assert list(me.tracks) == []  # nothing got published
        assert [t.name for t in by_id["control-publisher"].tracks] == ["allowed"]
    finally:
        await viewer.disconnect()
        await control.disconnect()


async def test_unknown_cameras_cost_one_api_lookup_per_cache_period(bed: Bed) -> None:
    gw, ns = bed.gw, bed.ns
    lookups = "camfleet_gateway_camera_lookups_total"
    before = metric(await scrape(gw), lookups, 'result="not_found"')
    # Denials are not cached in this bed (AUTHZ_DENY_CACHE_SECONDS=0): each subscribe is
    # authorised again, but the Camera's absence is remembered for a while, whoever asks.
    for _ in range(3):
        answer = await subscribe(gw, f"{ns}/ghost", bearer(bed.viewer))
        assert answer["code"] == "forbidden"  # not allowed to learn that it does not exist
    assert metric(await scrape(gw), lookups, 'result="not_found"') - before == 1
