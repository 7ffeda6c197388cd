"""HTTP and WebSocket handlers. Each handler reads its collaborators from typed app keys."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from camfleet.events import parse_camera
from overlay_gateway import keys
from overlay_gateway.auth import (
    Authenticator,
    AuthUnavailable,
    Decision,
    Identity,
    RequestInfo,
    authenticate,
)
from overlay_gateway.channel import Channel
from overlay_gateway.hub import Connection, text_frame
from overlay_gateway.protocol import PROTOCOL_VERSION, ErrorCode, dumps
from overlay_gateway.session import Session
from overlay_gateway.tokens import mint_viewer_token, room_name
from overlay_gateway.upgrade import TakenOver, handshake, take_over

log = logging.getLogger(__name__)

# The viewer page, built by `npm run build` in overlay-gateway/web (not committed).
STATIC_DIR = Path(__file__).with_name("static")

WS_SUBPROTOCOL = "camfleet.v1"
WS_PATH = "/ws"
_conn_ids = itertools.count(1)


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _request_info(request: web.Request) -> RequestInfo:
    return RequestInfo({k.lower(): v for k, v in request.headers.items()}, request.remote)


async def _identify(request: web.Request) -> Identity | web.Response:
    try:
        authenticators: Sequence[Authenticator] = request.app[keys.AUTHENTICATORS]
        identity = await authenticate(authenticators, _request_info(request))
    except AuthUnavailable:
        return _json_error(503, ErrorCode.UNAVAILABLE, "authentication backend unavailable")
    if identity is None:
        return _json_error(401, "unauthenticated", "valid credentials required")
    return identity


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if await request.app[keys.BROKER].ping():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "redis unreachable"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def list_cameras(request: web.Request) -> web.Response:
    identity = await _identify(request)
    if isinstance(identity, web.Response):
        return identity
    try:
        cameras = await request.app[keys.AUTHORIZER].viewable(identity)
    except AuthUnavailable:
        return _json_error(503, ErrorCode.UNAVAILABLE, "Kubernetes API unavailable")
    items = []
    for obj in cameras:
        meta = obj.get("metadata", {})
        ref = parse_camera(f"{meta.get('namespace')}/{meta.get('name')}")
        items.append(
            {
                "camera": str(ref),
                "namespace": ref.namespace,
                "name": ref.name,
                "phase": (obj.get("status") or {}).get("phase"),
                "room": room_name(ref, obj),
            }
        )
    items.sort(key=lambda c: str(c["camera"]))
    # AI path health: fresh / stale since T / none, from the relayed events and the streams.
    overlays = await request.app[keys.FRESHNESS].states(
        request.app[keys.REDIS], [str(c["camera"]) for c in items]
    )
    for item in items:
        item["overlays"] = overlays[str(item["camera"])]
    return web.json_response({"cameras": items})


async def issue_token(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    identity = await _identify(request)
    if isinstance(identity, web.Response):
        return identity
    try:
        body = await request.json()
        ref = parse_camera(body["camera"])
    except (ValueError, KeyError, TypeError):
        return _json_error(400, ErrorCode.BAD_REQUEST, 'body must be {"camera": "<ns>/<name>"}')
    if settings.livekit_api_key is None or settings.livekit_api_secret is None:
        return _json_error(503, ErrorCode.UNAVAILABLE, "LiveKit credentials not configured")
    authorizer = request.app[keys.AUTHORIZER]
    try:
        decision = await authorizer.check(identity, ref)
        camera = await authorizer.camera(ref) if decision is Decision.ALLOWED else None
    except AuthUnavailable:
        return _json_error(503, ErrorCode.UNAVAILABLE, "Kubernetes API unavailable")
    if decision is Decision.NOT_FOUND:
        return _json_error(404, ErrorCode.NOT_FOUND, f"camera {ref} not found")
    if decision is not Decision.ALLOWED:
        return _json_error(403, ErrorCode.FORBIDDEN, f"not allowed to view {ref}")
    room = room_name(ref, camera)
    jwt, participant, expires = mint_viewer_token(
        api_key=settings.livekit_api_key.get_secret_value(),
        api_secret=settings.livekit_api_secret.get_secret_value(),
        identity=identity,
        room=room,
        ttl_seconds=settings.viewer_token_ttl_seconds,
    )
    request.app[keys.METRICS].tokens_issued.inc()
    log.info("viewer token issued", extra={"user": identity.user, "camera": str(ref)})
    return web.json_response(
        {
            "token": jwt,
            "url": settings.livekit_url,
            "room": room,
            "identity": participant,
            "expiresAt": expires,
        }
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings, hub, m = app[keys.SETTINGS], app[keys.HUB], app[keys.METRICS]
    admission = app[keys.ADMISSION]
    # Pending handshakes count, this one included (unless its connection served a request before).
    if admission.over_limit(extra=0 if admission.holds(request.protocol) else 1):
        m.connections_refused.labels("capacity").inc()
        return _json_error(503, "capacity", "connection limit reached on this replica")
    identity = await _identify(request)
    if isinstance(identity, web.Response):
        m.connections_refused.labels("unauthenticated").inc()
        return identity
    answer = handshake(request, WS_SUBPROTOCOL)
    if isinstance(answer, web.Response):
        return answer
    admission.admit(request.protocol)
    transport = request.transport
    if transport is None or transport.is_closing():
        return TakenOver()  # the client left meanwhile: nothing to answer
    ident = f"c{next(_conn_ids)}"
    channel = Channel(app[keys.CHANNELS], transport, settings.max_message_bytes, ident)
    # From here on the socket is the channel's; aiohttp keeps nothing of it (upgrade.py).
    tail = take_over(request, channel)
    conn = Connection(
        hub,
        transport,
        ident=ident,
        queue_size=settings.send_queue_size,
        high_water=settings.socket_high_water_bytes,
        slow_timeout=settings.slow_client_timeout_seconds,
        # The client does not read, so a close frame would never reach it: cut the socket.
        kick=channel.abort,
    )
    hub.add(conn)
    session = Session(app, channel, conn, identity)
    log.info(
        "client connected",
        extra={"connection": ident, "user": identity.user, "via": identity.via},
    )
    hello: dict[str, Any] = {
        "type": "hello",
        "v": PROTOCOL_VERSION,
        "user": identity.user,
        "heartbeat": settings.heartbeat_seconds,
        "limits": {
            "subscriptions": settings.max_subscriptions,
            "camerasPerMessage": settings.max_cameras_per_message,
            "subscribesPerSecond": settings.subscribe_rate_per_second,
            "messageBytes": settings.max_message_bytes,
        },
    }
    channel.open(session, answer + text_frame(dumps(hello)), tail)
    return TakenOver()


async def viewer_page(_request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return web.Response(
            status=503, text="viewer not built: run `npm run build` in overlay-gateway/web"
        )
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


async def favicon(_request: web.Request) -> web.StreamResponse:
    # Browsers ask for /favicon.ico whatever the page links; an SVG answers both.
    icon = STATIC_DIR / "favicon.svg"
    if not icon.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        icon, headers={"Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400"}
    )


async def static_file(request: web.Request) -> web.StreamResponse:
    root = STATIC_DIR.resolve()
    path = (root / request.match_info["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", viewer_page)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/static/{path:.+}", static_file)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(WS_PATH, websocket)
    app.router.add_get("/api/cameras", list_cameras)
    app.router.add_post("/api/token", issue_token)
