"""``/healthz`` and ``/metrics``: what the kubelet and Prometheus see of this ingest.

``/healthz`` is 200 only while frames flow into LiveKit (one published in the last
``window`` seconds): the readiness probe then tracks "Live" and the operator sees a reconnecting
ingest as not ready. Metrics live in a registry of their own (no process-global state).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from camfleet import ingest_contract as ic
from camfleet_ingest.failures import REASONS
from camfleet_ingest.snapshot import Snapshots

RATE_WINDOW_S = 5.0


class IngestState:
    """Counters and the frame clock shared by the supervisor and the HTTP endpoints."""

    def __init__(self, camera: str, window: float) -> None:
        self.window = window
        self.last_frame: float | None = None  # monotonic time of the last published frame
        self._recent: deque[tuple[float, int]] = deque()
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"camera": camera}
        r = self.registry
        self.frames = Counter(
            "camfleet_ingest_frames", "Frames published to LiveKit", ["camera"], registry=r
        ).labels(**labels)
        self.bytes = Counter(
            "camfleet_ingest_bytes", "Encoded bytes published", ["camera"], registry=r
        ).labels(**labels)
        self.fps = Gauge(
            "camfleet_ingest_fps",
            f"Frames per second over {RATE_WINDOW_S:.0f}s",
            ["camera"],
            registry=r,
        ).labels(**labels)
        self.bitrate = Gauge(
            "camfleet_ingest_bitrate_bps",
            f"Bits per second over {RATE_WINDOW_S:.0f}s",
            ["camera"],
            registry=r,
        ).labels(**labels)
        self.reconnects = Counter(
            "camfleet_ingest_reconnects", "Reconnect attempts", ["camera", "side"], registry=r
        )
        self.keyframe_requests = Counter(
            "camfleet_ingest_keyframe_requests",
            "Keyframe requests from LiveKit",
            ["camera"],
            registry=r,
        ).labels(**labels)
        self.audio_frames = Counter(
            "camfleet_ingest_audio_frames",
            "Decoded audio chunks handed to the audio track",
            ["camera"],
            registry=r,
        ).labels(**labels)
        self.audio_dropped = Counter(
            "camfleet_ingest_audio_dropped",
            "Decoded audio chunks dropped (late: the track's queue was full, or not published)",
            ["camera"],
            registry=r,
        ).labels(**labels)
        self.last_failure = Gauge(
            "camfleet_ingest_last_failure",
            "1 for the reason of the most recent failure, 0 for the others",
            ["camera", "reason"],
            registry=r,
        )
        self.publishing = Gauge(
            "camfleet_ingest_publishing",
            "1 while frames flow into LiveKit",
            ["camera"],
            registry=r,
        ).labels(**labels)
        self.info = Gauge(
            "camfleet_ingest_info",
            "Source and mode (value is always 1)",
            ["camera", "mode", "codec", "resolution"],
            registry=r,
        )
        self.camera = camera
        for reason in REASONS:
            self.last_failure.labels(camera, reason).set(0)

    def frame_published(self, size: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.last_frame = now
        self.frames.inc()
        self.bytes.inc(size)
        self._recent.append((now, size))

    def healthy(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.last_frame is not None and now - self.last_frame <= self.window

    def rates(self, now: float | None = None) -> tuple[float, float]:
        """(fps, bits per second) over the last RATE_WINDOW_S seconds."""
        now = time.monotonic() if now is None else now
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()
        frames = len(self._recent)
        size = sum(s for _, s in self._recent)
        return frames / RATE_WINDOW_S, size * 8 / RATE_WINDOW_S

    def failed(self, reason: str) -> None:
        """A classified failure: frames stop now, so /healthz says so at once rather than when
        the window runs out (the pod's readiness, and the Camera's status, follow sooner)."""
        self.last_frame = None
        for known in REASONS:
            self.last_failure.labels(self.camera, known).set(1 if known == reason else 0)

    def reconnecting(self, side: str) -> None:
        self.reconnects.labels(self.camera, side).inc()

    def source_info(self, mode: str, codec: str, resolution: str) -> None:
        self.info.clear()
        self.info.labels(self.camera, mode, codec, resolution).set(1)

    def render(self) -> bytes:
        fps, bps = self.rates()
        self.fps.set(fps)
        self.bitrate.set(bps)
        self.publishing.set(1 if self.healthy() else 0)
        return generate_latest(self.registry)


STATE = web.AppKey("state", IngestState)
SNAPSHOTS: web.AppKey[Snapshots | None] = web.AppKey("snapshots")


async def _healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.healthy():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "no frames"}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _snapshot(request: web.Request) -> web.Response:
    snapshots = request.app[SNAPSHOTS]
    try:
        still = None if snapshots is None else await snapshots.snapshot()
    except ValueError as exc:  # a keyframe that does not decode: say so, keep serving
        return web.json_response({"status": f"snapshot failed: {exc}"}, status=503)
    if still is None:
        return web.json_response({"status": "no keyframe yet"}, status=404)
    return web.Response(
        body=still.jpeg,
        content_type="image/jpeg",
        headers={
            ic.SNAPSHOT_TAKEN_HEADER: str(still.taken_at_ms),
            "Cache-Control": "no-store",  # the gateway keeps the copies
        },
    )


def init_app(state: IngestState, snapshots: Snapshots | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app[SNAPSHOTS] = snapshots
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get(ic.SNAPSHOT_PATH, _snapshot)
    return app


@asynccontextmanager
async def serve(
    state: IngestState, host: str, port: int, snapshots: Snapshots | None = None
) -> AsyncIterator[web.AppRunner]:
    """Run the HTTP endpoints for as long as the caller's ``async with`` lasts."""
    runner = web.AppRunner(init_app(state, snapshots), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner
    finally:
        await runner.cleanup()
