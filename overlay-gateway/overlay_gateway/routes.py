"""HTTP and WebSocket handlers. Each handler reads its collaborators from typed app keys."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

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
from overlay_gateway.broker import ReplayResult
from overlay_gateway.guard import GuardedWebSocketResponse
from overlay_gateway.hub import Connection, text_frame
from overlay_gateway.limits import TokenBucket
from overlay_gateway.protocol import (
    PONG,
    PROTOCOL_VERSION,
    ErrorCode,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    dumps,
    error_message,
    parse_client_message,
)
from overlay_gateway.tokens import mint_viewer_token, room_name

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


class _Session:
    """One WebSocket client: parses its messages and (un)subscribes it."""

    def __init__(
        self,
        app: web.Application,
        ws: web.WebSocketResponse,
        conn: Connection,
        identity: Identity,
    ) -> None:
        self.app = app
        self.ws = ws
        self.conn = conn
        self.identity = identity
        self.settings = settings = app[keys.SETTINGS]
        self.hub = app[keys.HUB]
        self.broker = app[keys.BROKER]
        self.metrics = app[keys.METRICS]
        self.subscribes = TokenBucket(
            settings.subscribe_rate_per_second, settings.subscribe_burst, time.monotonic()
        )
        self.refused_in_a_row = 0

    def send(self, payload: bytes) -> None:
        self.conn.send(text_frame(payload), None)

    def error(self, code: ErrorCode, message: str, camera: str | None = None) -> None:
        self.send(error_message(code, message, camera))

    async def refuse(self, code: WSCloseCode, reason: str) -> None:
        """Close the connection for a violation: the close frame is the last frame it gets."""
        self.metrics.protocol_closes.labels(str(int(code))).inc()
        log.info(
            "closing client connection",
            extra={"connection": self.conn.ident, "code": int(code), "reason": reason},
        )
        # Off the fan-out first: no event frame may follow the close frame.
        self.release()
        # close() sends the close frame, then reads (drains) until the client's close frame.
        await self.ws.close(code=code, message=reason.encode()[:123])

    def release(self) -> None:
        for camera in self.hub.remove(self.conn):
            self.broker.release(camera)

    async def handle(self, data: str) -> None:
        try:
            msg = parse_client_message(data)
        except ProtocolError as exc:
            self.error(exc.code, exc.message)
            return
        if isinstance(msg, Ping):
            self.send(PONG)
        elif isinstance(msg, Unsubscribe):
            for camera in dict.fromkeys(msg.cameras):
                if self.hub.unsubscribe(self.conn, camera):
                    self.broker.release(camera)
                self.send(dumps({"type": "unsubscribed", "camera": camera}))
        elif isinstance(msg, Subscribe):
            await self._subscribe(msg)

    def _refused(self, reason: str, n: int = 1) -> None:
        self.metrics.subscribes_refused.labels(reason).inc(n)

    async def _subscribe(self, msg: Subscribe) -> None:
        settings = self.settings
        if not self.subscribes.take(time.monotonic()):
            self._refused("rate_limited")
            self.refused_in_a_row += 1
            if self.refused_in_a_row >= settings.subscribe_burst:
                await self.refuse(WSCloseCode.POLICY_VIOLATION, "too many subscribe messages")
                return
            self.error(
                ErrorCode.RATE_LIMITED,
                f"at most {settings.subscribe_rate_per_second:g} subscribe messages a second",
            )
            return
        self.refused_in_a_row = 0
        if len(msg.cameras) > settings.max_cameras_per_message:
            self._refused("too_many_cameras")
            self.error(
                ErrorCode.TOO_MANY_CAMERAS,
                f"at most {settings.max_cameras_per_message} cameras per subscribe message",
            )
            return
        unknown = set(msg.since) - set(msg.cameras)
        if unknown:
            self.error(ErrorCode.BAD_REQUEST, "since names cameras not being subscribed")
            return
        wanted: list[str] = []
        for camera in dict.fromkeys(msg.cameras):
            try:
                parse_camera(camera)
            except ValueError:
                self.error(ErrorCode.INVALID_CAMERA, "expected '<namespace>/<name>'", camera)
                continue
            if camera in self.conn.cameras:
                continue  # already live; a second subscribe is a no-op
            wanted.append(camera)
        # Cameras past the connection's limit are refused before they cost a lookup.
        room = max(0, settings.max_subscriptions - len(self.conn.cameras))
        if len(wanted) > room:
            self._refused("too_many_subscriptions", len(wanted) - room)
            for camera in wanted[room:]:
                self._too_many(camera)
            wanted = wanted[:room]
        authorizer = self.app[keys.AUTHORIZER]
        try:
            decisions = await asyncio.gather(
                *(authorizer.check(self.identity, parse_camera(c)) for c in wanted)
            )
        except AuthUnavailable:
            for camera in wanted:
                self.error(ErrorCode.UNAVAILABLE, "authorisation unavailable, retry", camera)
            return
        allowed: list[str] = []
        for camera, decision in zip(wanted, decisions, strict=True):
            if decision is Decision.NOT_FOUND:
                self.error(ErrorCode.NOT_FOUND, "no such camera", camera)
            elif decision is not Decision.ALLOWED:
                self.error(ErrorCode.FORBIDDEN, "not allowed to view this camera", camera)
            elif len(self.conn.cameras) >= self.settings.max_subscriptions:
                self._too_many(camera)
            else:
                # Attached now (frames held back) so that nothing published meanwhile is lost.
                self.hub.subscribe(self.conn, camera)
                allowed.append(camera)
        await asyncio.gather(*(self._activate(c, msg.since.get(c)) for c in allowed))

    def _too_many(self, camera: str) -> None:
        self.error(
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            f"at most {self.settings.max_subscriptions} cameras per connection",
            camera,
        )

    async def _activate(self, camera: str, since: str | None) -> None:
        try:
            await self.broker.watch(camera)
        except BaseException:
            # watch() holds its reference from before its first await: give it back.
            if self.hub.unsubscribe(self.conn, camera):
                self.broker.release(camera)
            raise
        replay = ReplayResult([], False)
        if since is not None:
            try:
                replay = await self.broker.replay(camera, since, self.settings.replay_max_events)
            except (RedisError, OSError):
                # Live delivery goes on; the client learns that history is incomplete.
                replay = ReplayResult([], True)
        state = "degraded" if self.broker.degraded(camera) else "live"
        ack = dumps(
            {
                "type": "subscribed",
                "camera": camera,
                "replayed": len(replay.events),
                "gap": replay.gap,
                "state": state,
            }
        )
        self.hub.activate(self.conn, camera, [text_frame(ack)], replay.events, since)


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
    ws = GuardedWebSocketResponse(
        protocols=(WS_SUBPROTOCOL,),
        heartbeat=settings.heartbeat_seconds,
        max_msg_size=settings.max_message_bytes,
        compress=False,  # pre-built frames are shared verbatim; no per-client deflate state
    )
    await ws.prepare(request)
    admission.admit(request.protocol)
    transport = request.transport
    if transport is None:
        return ws
    conn = Connection(
        hub,
        transport,
        ident=f"c{next(_conn_ids)}",
        queue_size=settings.send_queue_size,
        high_water=settings.socket_high_water_bytes,
        slow_timeout=settings.slow_client_timeout_seconds,
        # The client does not read, so a close frame would never reach it: cut the socket.
        kick=lambda _reason: transport.abort(),
    )
    hub.add(conn)
    sessions = app[keys.SESSIONS]
    sessions.add(ws)
    session = _Session(app, ws, conn, identity)
    log.info(
        "client connected",
        extra={"connection": conn.ident, "user": identity.user, "via": identity.via},
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
    session.send(dumps(hello))
    guard = ws.guard
    try:
        async for msg in ws:
            if guard.violation is not None:
                # The guard stopped the frame; this message only woke us up.
                await session.refuse(guard.violation.code, guard.violation.reason)
                break
            if msg.type is WSMsgType.TEXT:
                await session.handle(msg.data)
            elif msg.type is WSMsgType.BINARY:  # pragma: no cover - the guard refuses them
                await session.refuse(WSCloseCode.UNSUPPORTED_DATA, "text frames only")
            elif msg.type is WSMsgType.ERROR:
                break
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
    finally:
        session.release()
        sessions.discard(ws)
        log.info(
            "client disconnected",
            extra={"connection": conn.ident, "dropped": conn.dropped, "code": ws.close_code},
        )
    return ws


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
