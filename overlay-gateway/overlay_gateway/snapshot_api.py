"""`GET /api/cameras/{ns}/{name}/snapshot.jpg`: the camera's latest still (docs/gateway.md).

Same authorisation as viewing the camera (401, 403, 404 for a camera that does not exist).
The JPEG is the ingest's latest keyframe, fetched through `stills.Stills` (Redis first); when
the ingest is not running, the last known still with its age. Cache headers: `private` (the
answer depends on who asks), `max-age` of the refresh period, an `ETag` of the capture time
(`If-None-Match` → 304), `Last-Modified`, and `X-Camfleet-Taken-At` (ms since the epoch),
`X-Camfleet-Snapshot-Age` (seconds) and `X-Camfleet-Snapshot-Live` for the viewer's label.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from email.utils import formatdate

import aiohttp
from aiohttp import web
from livekit import api

from camfleet import ingest_contract as ic
from camfleet.events import parse_camera
from overlay_gateway import keys
from overlay_gateway.auth import Authenticator, AuthUnavailable, Decision, RequestInfo, authenticate
from overlay_gateway.protocol import ErrorCode
from overlay_gateway.stills import Still, Stills
from overlay_gateway.tokens import room_name

__all__ = ["STILLS", "setup_snapshot_routes"]

STILLS = web.AppKey("stills", Stills)
AGE_HEADER = "X-Camfleet-Snapshot-Age"
LIVE_HEADER = "X-Camfleet-Snapshot-Live"


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def snapshot(request: web.Request) -> web.StreamResponse:
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        authenticators: Sequence[Authenticator] = request.app[keys.AUTHENTICATORS]
        identity = await authenticate(authenticators, RequestInfo(headers, request.remote))
    except AuthUnavailable:
        return _error(503, ErrorCode.UNAVAILABLE, "authentication backend unavailable")
    if identity is None:
        return _error(401, "unauthenticated", "valid credentials required")
    try:
        ref = parse_camera(f"{request.match_info['namespace']}/{request.match_info['name']}")
    except ValueError:
        return _error(400, ErrorCode.INVALID_CAMERA, "expected /api/cameras/<namespace>/<name>/…")
    authorizer = request.app[keys.AUTHORIZER]
    try:
        decision = await authorizer.check(identity, ref)
        camera = await authorizer.camera(ref) if decision is Decision.ALLOWED else None
    except AuthUnavailable:
        return _error(503, ErrorCode.UNAVAILABLE, "Kubernetes API unavailable")
    if decision is Decision.NOT_FOUND:
        return _error(404, ErrorCode.NOT_FOUND, f"camera {ref} not found")
    if decision is not Decision.ALLOWED:
        return _error(403, ErrorCode.FORBIDDEN, f"not allowed to view {ref}")
    still = await request.app[STILLS].latest(ref, room_name(ref, camera))
    if still is None:
        return _error(404, "no_snapshot", f"no snapshot of {ref} yet")
    return _answer(request, still, request.app[keys.SETTINGS].snapshot_refresh_seconds)


def _answer(request: web.Request, still: Still, refresh: float) -> web.Response:
    etag = f'"{still.taken_at_ms}"'
    age = max(0.0, time.time() - still.taken_at_ms / 1000)
    headers = {
        # private: the answer depends on who asks (authorisation); a shared cache must not keep it
        "Cache-Control": f"private, max-age={int(refresh)}",
        "ETag": etag,
        "Last-Modified": formatdate(still.taken_at_ms / 1000, usegmt=True),
        ic.SNAPSHOT_TAKEN_HEADER: str(still.taken_at_ms),
        AGE_HEADER: f"{age:.1f}",
        LIVE_HEADER: "true" if still.live else "false",
    }
    if etag in (t.strip() for t in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=still.jpeg, content_type="image/jpeg", headers=headers)


async def _stills_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    http = aiohttp.ClientSession()
    livekit = None
    if settings.livekit_api_key is not None and settings.livekit_api_secret is not None:
        livekit = api.LiveKitAPI(
            settings.livekit_server_url,
            settings.livekit_api_key.get_secret_value(),
            settings.livekit_api_secret.get_secret_value(),
            session=http,
        )
    app[STILLS] = Stills(
        app[keys.REDIS],
        http,
        livekit,
        refresh=settings.snapshot_refresh_seconds,
        timeout=settings.snapshot_timeout_seconds,
        keep=settings.snapshot_keep_seconds,
        max_bytes=settings.snapshot_max_bytes,
    )
    yield
    await http.close()


def setup_snapshot_routes(app: web.Application) -> None:
    """Needs the Redis client (`keys.REDIS`): register after the app's Redis context."""
    app.cleanup_ctx.append(_stills_ctx)
    app.router.add_get("/api/cameras/{namespace}/{name}/snapshot.jpg", snapshot)
