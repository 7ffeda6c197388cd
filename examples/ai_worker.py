"""Example AI worker: reads a camera's frames from its LiveKit room, detects colourful blobs,
publishes the boxes stamped with the frame they were found on.

The detector is real but needs no downloaded weights: on a mostly grey scene (the test
pattern, a parking lot at dusk…) it finds saturated regions with numpy, one box per hue. On the
test camera it finds the moving orange square exactly, frame by frame.

    LIVEKIT_API_KEY=… LIVEKIT_API_SECRET=… python examples/ai_worker.py \\
        --camera default/lobby --livekit-url ws://127.0.0.1:7880 --redis-url redis://127.0.0.1:6379/0

Each event carries `ts = user_timestamp // 1000` and `frame = frame_id` of the frame it was
computed on (docs/ai-sdk.md), so the viewer draws it on that very frame.

Exit status: 0 on SIGTERM/SIGINT; 1 when the frames cannot be recovered (the room stays
unreachable, or the stream stays stalled) so that its Deployment restarts it; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from camfleet.ai import AsyncPublisher
from camfleet.ai.frames import (
    MAX_RECOVERIES,
    STALL_TIMEOUT_S,
    FrameHealth,
    FramesLost,
    StampedFrame,
    subscribe_frames,
    subscriber_token,
)

log = logging.getLogger("ai_worker")

SOURCE = "blob-detector"
EXIT_SETTLE_S = 1.0
#: Chroma (max - min channel) above which a pixel counts as "colourful".
CHROMA_MIN = 90
#: Coarse pass on every STEP-th pixel, then edges refined at full resolution.
STEP = 4
MIN_PIXELS = 24  # coarse pixels: ~400 full-resolution pixels
HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta")


@dataclass(frozen=True)
class Blob:
    label: str
    score: float
    x: int
    y: int
    w: int
    h: int


def _hue_names(rgb: npt.NDArray[np.int16]) -> npt.NDArray[np.intp]:
    """Index into HUES for each pixel (rows of r, g, b)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    d = np.maximum(mx - mn, 1).astype(np.float32)
    hue = (
        np.where(
            mx == r,
            ((g - b) / d) % 6,
            np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4),
        )
        * 60.0
    )
    # Bucket edges in degrees: red <15, orange <45, yellow <70, green <160, cyan <200,
    # blue <250, purple <290, magenta <335, red again.
    edges = np.array([15, 45, 70, 160, 200, 250, 290, 335], dtype=np.float32)
    idx = np.searchsorted(edges, hue, side="right")
    return np.where(idx == len(edges), 0, idx)


def _chroma(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    # Channel-wise maximum/minimum: much faster than a reduction over a length-3 axis.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)


def _span(mask_1d: npt.NDArray[np.bool_]) -> tuple[int, int] | None:
    hits = np.flatnonzero(mask_1d)
    if hits.size == 0:
        return None
    return int(hits[0]), int(hits[-1])


def detect(rgb: npt.NDArray[np.uint8]) -> list[Blob]:
    """Colourful blobs on a (h, w, 3) RGB frame: one box per hue, in pixels."""
    height, width = rgb.shape[:2]
    coarse = rgb[::STEP, ::STEP]
    ys, xs = np.nonzero(_chroma(coarse) >= CHROMA_MIN)
    if ys.size < MIN_PIXELS:
        return []
    # Hue only for the (few) colourful pixels.
    hues = _hue_names(coarse[ys, xs].astype(np.int16))
    blobs: list[Blob] = []
    for index, label in enumerate(HUES):
        sel = hues == index
        if int(sel.sum()) < MIN_PIXELS:
            continue
        # Refine the edges at full resolution inside the coarse box plus one coarse step.
        y0 = max(0, int(ys[sel].min()) * STEP - STEP)
        y1 = min(height, int(ys[sel].max()) * STEP + 2 * STEP)
        x0 = max(0, int(xs[sel].min()) * STEP - STEP)
        x1 = min(width, int(xs[sel].max()) * STEP + 2 * STEP)
        crop = rgb[y0:y1, x0:x1]
        fine = (_chroma(crop) >= CHROMA_MIN) & (_hue_names(crop.astype(np.int16)) == index)
        frows, fcols = _span(fine.any(axis=1)), _span(fine.any(axis=0))
        if frows is None or fcols is None:
            continue
        bx, by = x0 + fcols[0], y0 + frows[0]
        bw, bh = fcols[1] - fcols[0] + 1, frows[1] - frows[0] + 1
        # Score: how solid the blob is inside its box (1.0 for a filled rectangle).
        fill = float(fine.sum()) / float(bw * bh)
        blobs.append(Blob(label, round(min(1.0, fill), 3), bx, by, bw, bh))
    return blobs


def to_event(camera: str, frame: StampedFrame, blobs: list[Blob]) -> dict[str, object]:
    w, h = frame.width, frame.height
    return {
        "camera": camera,
        "ts": frame.ts_ms if frame.ts_ms is not None else time.time_ns() // 1_000_000,
        **({"frame": frame.frame_id} if frame.frame_id is not None else {}),
        "source": SOURCE,
        "objects": [
            {
                "id": f"{b.label}-1",
                "label": b.label,
                "score": b.score,
                "box": [
                    b.x / w,
                    b.y / h,
                    min(b.w / w, 1 - b.x / w),
                    min(b.h / h, 1 - b.y / h),
                ],
            }
            for b in blobs
        ],
    }


async def run(args: argparse.Namespace, api_key: str, api_secret: str) -> int:
    """Detect and publish until interrupted (0), or until the frames cannot be recovered (1)."""
    namespace, name = args.camera.split("/", 1)
    room = args.room or f"{namespace}-{name}"
    identity = args.identity or f"ai-{SOURCE}-{namespace}-{name}"
    started = time.monotonic()
    health = FrameHealth()
    frames = subscribe_frames(
        args.livekit_url,
        # Minted at every (re)join: a worker running for days never rejoins with an expired one.
        lambda: subscriber_token(api_key, api_secret, room=room, identity=identity),
        stall_timeout=args.stall_timeout,
        max_recoveries=args.max_recoveries,
        health=health,
    )
    async with AsyncPublisher(args.redis_url) as publisher, contextlib.aclosing(frames):
        try:
            async for frame in frames:
                blobs = detect(frame.rgb)
                # Empty events too: they tell the viewer that nothing is on this frame.
                await publisher.publish(to_event(args.camera, frame, blobs))
                if health.frames % 250 == 0:
                    rate = health.frames / (time.monotonic() - started)
                    log.info(
                        "%d frames (%.1f fps, %d skipped, %d stalls, %d rejoins), last %s",
                        *(health.frames, rate, health.skipped, health.stalls, health.rejoins),
                        blobs,
                    )
        except FramesLost as exc:
            # Exiting is the recovery left: the Deployment restarts the worker.
            log.error("giving up: %s", exc)
            # The SDK's native threads may still be finishing the failed connection; exiting
            # under them aborts the process (a Rust panic, SIGABRT) instead of status 1.
            await asyncio.sleep(EXIT_SETTLE_S)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camera", required=True, help="<namespace>/<name>")
    parser.add_argument("--room", help="LiveKit room (default <namespace>-<name>)")
    parser.add_argument("--identity", help="participant identity in the room")
    parser.add_argument(
        "--livekit-url", default=os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880")
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=STALL_TIMEOUT_S,
        help="seconds without a frame on a published track before recovering",
    )
    parser.add_argument(
        "--max-recoveries",
        type=int,
        default=MAX_RECOVERIES,
        help="recoveries in a row without a frame before exiting with status 1",
    )
    args = parser.parse_args(argv)
    api_key = os.environ.get("LIVEKIT_API_KEY")
    api_secret = os.environ.get("LIVEKIT_API_SECRET")
    if not api_key or not api_secret:
        print("set LIVEKIT_API_KEY and LIVEKIT_API_SECRET", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            return await run(args, api_key, api_secret)
        return 0

    return asyncio.run(guarded())


if __name__ == "__main__":
    raise SystemExit(main())
