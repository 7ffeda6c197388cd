"""History endpoints: `/api/cameras/{ns}/{name}/events` and `/timeline` (docs/gateway.md).

Same authorisation as viewing the camera: authenticate (401), then SubjectAccessReview /
access groups for that camera (403, or 404 for a missing camera the caller could view). Every
failure is an answer with a JSON error, never a 500: bad parameters 400, PostgreSQL down or
too slow 503, no database configured 503 "history not configured".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from camfleet.events import CameraRef, parse_camera
from overlay_gateway import keys
from overlay_gateway.auth import Authenticator, AuthUnavailable, Decision, RequestInfo, authenticate
from overlay_gateway.history import (
    BadQuery,
    History,
    HistoryUnavailable,
    parse_events_query,
    parse_timeline_query,
)
from overlay_gateway.protocol import ErrorCode
from overlay_gateway.recordings import parse_playback_query

log = logging.getLogger(__name__)

__all__ = ["setup_history_routes"]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _authorised(request: web.Request) -> tuple[CameraRef, History] | web.Response:
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
    try:
        decision = await request.app[keys.AUTHORIZER].check(identity, ref)
    except AuthUnavailable:
        return _error(503, ErrorCode.UNAVAILABLE, "Kubernetes API unavailable")
    if decision is Decision.NOT_FOUND:
        return _error(404, ErrorCode.NOT_FOUND, f"camera {ref} not found")
    if decision is not Decision.ALLOWED:
        return _error(403, ErrorCode.FORBIDDEN, f"not allowed to view {ref}")
    history = request.app[keys.HISTORY]
    if history is None:
        return _error(503, ErrorCode.UNAVAILABLE, "history not configured")
    return ref, history


def _handler(
    run: Callable[[History, str, dict[str, str], web.Request], Awaitable[dict[str, Any]]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        found = await _authorised(request)
        if isinstance(found, web.Response):
            return found
        ref, history = found
        params = dict(request.query)
        if len(params) != len(request.query):
            return _error(400, ErrorCode.BAD_REQUEST, "each parameter at most once")
        try:
            body = await run(history, str(ref), params, request)
        except BadQuery as exc:
            return _error(400, ErrorCode.BAD_REQUEST, str(exc))
        except HistoryUnavailable as exc:
            log.warning("history query failed", extra={"camera": str(ref), "error": str(exc)})
            return _error(503, ErrorCode.UNAVAILABLE, str(exc))
        return web.json_response(body)

    return handle


async def _events(
    history: History, camera: str, params: dict[str, str], request: web.Request
) -> dict[str, Any]:
    max_limit = request.app[keys.SETTINGS].history_max_limit
    return await history.events(parse_events_query(camera, params, max_limit=max_limit))


async def _timeline(
    history: History, camera: str, params: dict[str, str], _request: web.Request
) -> dict[str, Any]:
    return await history.timeline(parse_timeline_query(camera, params))


async def _recordings(
    _history: History, camera: str, params: dict[str, str], request: web.Request
) -> dict[str, Any]:
    """Recorded segments (signed URLs) and gaps of a range (docs/recording.md)."""
    recordings = request.app[keys.RECORDINGS]
    if recordings is None:
        raise HistoryUnavailable("playback not configured (no recording store)")
    query = parse_playback_query(camera, params, datetime.now(UTC))
    return await recordings.segments(query)


def setup_history_routes(app: web.Application) -> None:
    base = "/api/cameras/{namespace}/{name}"
    app.router.add_get(f"{base}/recordings", _handler(_recordings))
    app.router.add_get(f"{base}/events", _handler(_events))
    app.router.add_get(f"{base}/timeline", _handler(_timeline))
