"""Overlay drift in the viewer, measured in real headless Chromium on the whole media path.

    .venv/bin/python benchmarks/viewer_drift.py --seconds 60

Starts the test bed (kube-apiserver, Redis, livekit-server, the RTSP test camera), `camfleet
ingest`, the example AI worker and the gateway (tests/browser/viewer_stack.py), opens the page,
waits for the hold-back to settle, then for every displayed frame compares its stamp (LiveKit
frame metadata) with the stamp of the boxes drawn on it. Prints one JSON object:

- frames: displayed frames with metadata; exact: boxes stamped for that very frame;
  earlier: boxes of an earlier frame (drawn dashed); missing: nothing recent enough to draw;
- exact_share: exact / (exact + earlier), p95_frames: 95th percentile of the drift in frames;
- late_events: events that arrived after their frame was on screen (what the hold-back is for);
  exact_share_of_analysed: exact / (exact + late_events): of the frames the AI worker did
  analyse, how many showed their own boxes (the sync's own accuracy, AI frame skipping aside);
- hold_back_ms: the jitter-buffer target the page settled on; video/AI latency (capture → display,
  capture → event arrival) in ms; chromium_cpu: Chromium's CPU use in cores over the window.

With `--probe` the page also reads the test pattern's frame code from the picture in each frame
callback (costs CPU): `picture_agreement` is the share of frames whose picture, as read then,
is the frame the stamp named (the rest: the compositor had already shown the next frame).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from viewer_stack import ViewerStack  # noqa: E402

from camfleet_dev.testbed.browser import launch_chromium  # noqa: E402
from camfleet_dev.testbed.kube import KubeCluster  # noqa: E402
from camfleet_dev.testbed.livekit import LiveKitServer  # noqa: E402
from camfleet_dev.testbed.redis import RedisServer  # noqa: E402
from camfleet_dev.testbed.rtsp import RtspCamera  # noqa: E402
from camfleet_dev.testbed.tools import tools_dir  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
CLIP_FRAMES = 200  # the test clip's frame code loops every 200 frames


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found - {root}


def chromium_cpu_seconds() -> float:
    total = 0.0
    for pid in _descendants(os.getpid()):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if "chromium" in exe:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def picture_agreement(trace: list[dict[str, Any]]) -> float | None:
    pairs = [
        (e["frameId"] - e["code"]) % CLIP_FRAMES
        for e in trace
        if e["frameId"] is not None and e["code"] is not None
    ]
    if not pairs:
        return None
    offset = Counter(pairs).most_common(1)[0][0]
    return round(float(sum(p == offset for p in pairs)) / len(pairs), 4)


async def measure(seconds: float, settle: float, probe: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="camfleet-viewer-bench-") as tmp:
        return await _measure(Path(tmp), seconds, settle, probe)


async def _measure(state: Path, seconds: float, settle: float, probe: bool) -> dict[str, Any]:
    with (
        KubeCluster(state / "kube") as kube,
        RedisServer(state / "redis") as redis,
        LiveKitServer(state / "livekit") as livekit,
        RtspCamera(state / "rtsp", tools_dir() / "media") as rtsp,
    ):
        crd = ROOT / "crds" / "camera.yaml"
        kube.kubectl("apply", "--server-side", "-f", str(crd))
        kube.wait_established("cameras.camfleet.io")
        stack = ViewerStack(kube, redis, livekit, rtsp, state / "stack")
        await stack.start()
        try:
            async with async_playwright() as pw:
                browser = await launch_chromium(pw)
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                # ?testhooks loads window.camfleetViewer; ?probe also reads frame codes.
                await page.goto(stack.url + ("/?probe" if probe else "/?testhooks"))
                await page.wait_for_selector("#signin:not([hidden])")
                await page.fill("#token", stack.token("viewer"))
                await page.press("#token", "Enter")
                camera = stack.camera
                read = "c => window.camfleetViewer.stats(c)"
                deadline = time.monotonic() + 60
                while not ((await page.evaluate(read, camera)) or {}).get("framesWithMetadata"):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no video in 60 s\n{stack.logs()}")
                    await asyncio.sleep(0.5)
                await asyncio.sleep(settle)  # let the hold-back settle
                await page.evaluate("c => window.camfleetViewer.resetDrift(c)", camera)
                start: dict[str, Any] = await page.evaluate(read, camera)
                cpu0, t0 = chromium_cpu_seconds(), time.monotonic()
                await asyncio.sleep(seconds)
                cpu1, t1 = chromium_cpu_seconds(), time.monotonic()
                end: dict[str, Any] = await page.evaluate(read, camera)
                trace = await page.evaluate("c => window.camfleetViewer.trace(c)", camera)
                await browser.close()
        finally:
            await stack.stop()
    drift = end["drift"]
    late = end["lateEvents"] - start["lateEvents"]
    return {
        "seconds": seconds,
        "frames": drift["frames"],
        "fps_displayed": round(drift["frames"] / seconds, 1),
        "exact": drift["exact"],
        "earlier": drift["earlier"],
        "missing": drift["missing"],
        "exact_share": drift["exactShare"],
        "p95_frames": drift["p95"],
        "late_events": late,
        "exact_share_of_analysed": drift["exact"] / max(1, drift["exact"] + late),
        "events_per_s": round((end["eventsReceived"] - start["eventsReceived"]) / seconds, 1),
        "hold_back_ms": round(end["holdBackMs"], 1),
        "video_latency_ms": end["videoLatencyMs"],
        "ai_latency_ms": end["eventLatencyMs"],
        "chromium_cpu_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
        "sync_mode": end["syncMode"],
        "picture_agreement": picture_agreement(trace) if probe else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=10.0, help="warm-up before measuring")
    parser.add_argument("--probe", action="store_true", help="also read frame codes (CPU)")
    args = parser.parse_args()
    result = asyncio.run(measure(args.seconds, args.settle, args.probe))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
