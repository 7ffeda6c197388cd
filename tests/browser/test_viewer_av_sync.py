"""Audio and video in sync in real headless Chromium: the beep's frame and the audio onset.

The test camera's `h264-aac` variant has, in every 8 s lap, a 1 kHz beep that starts at video
frame 100 (`camfleet_dev.testbed.media.BEEP_FRAME`) → `camfleet-ingest` (AAC → Opus) →
livekit-server → the viewer's tile, unmuted. Chromium plays the audio out into a PulseAudio null
sink (`camfleet_dev.testbed.pulse`), a real output device that pulls samples at the real rate.
(`totalSamplesReceived` stayed 0 before sound.ts fed the audio receiver's encoded frames through;
whether Chromium without any output device also renders them was not re-tested.)

The page times both on `performance.now()`:
- video: each presented picture's `expectedDisplayTime` (requestVideoFrameCallback) with the frame
  code read from the picture (as `benchmarks/peers.py` does);
- audio: the tile's track → MediaStreamAudioSourceNode → an AudioWorklet that finds the first
  loud sample after ≥ 0.5 s of silence; its context time is mapped to `performance.now()` with
  `AudioContext.getOutputTimestamp()` (the time the sample reaches the context's output).

offset = audio onset - presentation of frame 100 (positive: the sound is late).
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright
from test_viewer_page import open_signed_in, poll, stats
from viewer_stack import ViewerStack

from camfleet_dev.testbed.browser import launch_chromium
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.media import BEEP_FRAME, FPS, FRAMES
from camfleet_dev.testbed.pulse import PulseServer
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera

MAX_OFFSET_MS = 80.0  # issue #15's done-when
BEEPS = 3  # one per 8 s lap
FRAME_MS = 1000 / FPS

MEASURE_JS = """
async (camera) => {
  const tile = document.querySelector(`article.tile[data-camera="${camera}"]`);
  const video = tile.querySelector('video');
  const audio = tile.querySelector('audio');
  const S = (window.__avsync = { frames: [], onsets: [], outputLatency: null });
  const canvas = document.createElement('canvas');
  canvas.width = 256;
  canvas.height = 8;
  const g = canvas.getContext('2d', { willReadFrequently: true });
  const read = (v) => {
    const vw = v.videoWidth, vh = v.videoHeight;
    if (!vw || !vh) return null;
    const row = Math.max(8, Math.round(vh / 27));
    g.drawImage(v, 0, row / 4, Math.floor(vw / 16) * 16, row / 2, 0, 0, 256, 8);
    const px = g.getImageData(0, 0, 256, 8).data;
    let value = 0;
    for (let bit = 0; bit < 16; bit++) {
      let sum = 0, n = 0;
      for (let x = bit * 16 + 4; x < bit * 16 + 12; x++)
        for (let y = 2; y < 6; y++) {
          const i = (y * 256 + x) * 4;
          sum += (px[i] + px[i + 1] + px[i + 2]) / 3;
          n++;
        }
      value = (value << 1) | (sum / n > 127 ? 1 : 0);
    }
    return value;
  };
  const cb = (now, meta) => {
    const code = read(video);
    if (code !== null && S.frames.length < 20000) S.frames.push([meta.expectedDisplayTime, code]);
    video.requestVideoFrameCallback(cb);
  };
  video.requestVideoFrameCallback(cb);

  const ctx = new AudioContext({ latencyHint: 'interactive' });
  const worklet = `
    class Onset extends AudioWorkletProcessor {
      constructor() { super(); this.quiet = 0; }
      process(inputs) {
        const ch = inputs[0] && inputs[0][0];
        if (!ch) return true;
        for (let i = 0; i < ch.length; i++) {
          if (Math.abs(ch[i]) > 0.1) {
            if (this.quiet > sampleRate / 2)
              this.port.postMessage({ t: currentTime + i / sampleRate });
            this.quiet = 0;
          } else this.quiet++;
        }
        return true;
      }
    }
    registerProcessor('onset', Onset);`;
  const url = URL.createObjectURL(new Blob([worklet], { type: 'text/javascript' }));
  await ctx.audioWorklet.addModule(url);
  const node = new AudioWorkletNode(ctx, 'onset');
  node.port.onmessage = (ev) => {
    const ts = ctx.getOutputTimestamp();
    S.onsets.push({
      at: ts.performanceTime + (ev.data.t - ts.contextTime) * 1000,
      seen: performance.now(),
    });
  };
  ctx.createMediaStreamSource(audio.srcObject).connect(node);
  node.connect(ctx.destination);
  await ctx.resume();
  S.outputLatency = ctx.outputLatency;
  S.state = ctx.state;
}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sync_stack(
    kube: KubeCluster,
    camera_crd: Path,
    redis_server: RedisServer,
    livekit_server: LiveKitServer,
    rtsp_camera: RtspCamera,
    testbed_dir: Path,
) -> AsyncIterator[ViewerStack]:
    stack = ViewerStack(
        kube,
        redis_server,
        livekit_server,
        rtsp_camera,
        testbed_dir / "viewer-avsync",
        clip="h264-aac",
        ingest_env={"CAMFLEET_INGEST_AUDIO": "auto"},
        with_worker=False,
    )
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sound_browser(testbed_dir: Path) -> AsyncIterator[Browser]:
    """Headless Chromium whose audio output is a PulseAudio null sink."""
    with PulseServer(testbed_dir / "pulse") as pulse:
        async with async_playwright() as pw:
            chromium = await launch_chromium(pw, pulse.env)
            try:
                yield chromium
            finally:
                await chromium.close()


async def audio_stats(page: Page, camera: str) -> dict[str, Any]:
    result: dict[str, Any] | None = await page.evaluate(
        "c => window.camfleetViewer.audioStats(c)", camera
    )
    return result or {}


def beep_presentation(frames: list[list[float]], onset: float) -> float | None:
    """When frame `BEEP_FRAME` of the lap around `onset` was presented, from the pictures.

    The frame itself if it was presented and read; else the nearest read frame within ±5,
    shifted by its distance in frame periods (a dropped or misread picture).
    """
    best: tuple[float, float] | None = None  # (distance, estimate)
    lap_ms = FRAMES * FRAME_MS
    for at, code in frames:
        if abs(at - onset) > lap_ms / 2:
            continue
        d = code - BEEP_FRAME
        if abs(d) > 5:
            continue
        if best is None or abs(d) < best[0]:
            best = (abs(d), at - d * FRAME_MS)
    return None if best is None else best[1]


async def test_the_beep_plays_with_its_frame(
    sound_browser: Browser, sync_stack: ViewerStack
) -> None:
    page = await open_signed_in(sound_browser, sync_stack, "viewer")
    camera = sync_stack.camera
    try:
        await poll(
            lambda: stats(page, camera),
            lambda s: s.get("framesDisplayed", 0) > 10 and s["sound"]["track"],
            30,
            "video and audio on the tile",
        )
        await page.locator(f'article.tile[data-camera="{camera}"] button.sound').click()
        assert (await stats(page, camera))["sound"]["muted"] is False
        # Chromium renders the received audio out: its pipeline pulls samples (48 kHz).
        first = await audio_stats(page, camera)
        await poll(
            lambda: audio_stats(page, camera),
            lambda r: (
                r.get("totalSamplesReceived", 0) > first.get("totalSamplesReceived", 0) + 48_000
            ),
            10,
            "a second of audio samples played out",
        )
        await page.evaluate(MEASURE_JS, camera)
        result: dict[str, Any] = await poll(
            lambda: page.evaluate("window.__avsync"),
            lambda r: len(r["onsets"]) >= BEEPS,
            BEEPS * FRAMES / FPS + 4,
            f"{BEEPS} beeps heard",
        )
        # Each onset follows ≥ 0.5 s of silence: a beep's start, never the middle of one.
        onsets = [o["at"] for o in result["onsets"][:BEEPS]]
        offsets = []
        for onset in onsets:
            shown = beep_presentation(result["frames"], onset)
            assert shown is not None, f"no picture near frame {BEEP_FRAME} around the beep"
            offsets.append(onset - shown)
        median = statistics.median(offsets)
        video = await stats(page, camera)
        sound = await audio_stats(page, camera)
        cut = sound.get("removedSamplesForAcceleration", 0)
        emitted = max(1, sound.get("jitterBufferEmittedCount", 0))
        context = (
            f"offsets (audio onset - frame {BEEP_FRAME} shown) {[round(o) for o in offsets]} ms; "
            f"audio jitter buffer {1000 * sound.get('jitterBufferDelay', 0) / emitted:.0f} ms "
            f"(target {1000 * sound.get('jitterBufferTargetDelay', 0) / emitted:.0f}); "
            f"video hold-back {video.get('holdBackMs')} ms, "
            f"jitterBufferTarget {video.get('jitterBufferTarget')}; "
            f"Web Audio outputLatency {result['outputLatency']} s; since unmuting: "
            f"{(sound['packetsReceived'] - first['packetsReceived']) / 50:.2f} s received, "
            f"{(sound['totalSamplesReceived'] - first['totalSamplesReceived']) / 48_000:.2f} s "
            f"played, {(cut - first.get('removedSamplesForAcceleration', 0)) / 48_000:.2f} s "
            f"cut by acceleration, in {(sound['timestamp'] - first['timestamp']) / 1000:.2f} s"
        )
        print(context)
        # Each beep is heard within the lap of its frame (a broken timeline or a misheard
        # beep is seconds off), and the median is printed for docs/benchmarks.md.
        assert all(abs(o) < FRAMES * FRAME_MS / 4 for o in offsets), context
        print(f"A/V median {median:.0f} ms (goal ≤ {MAX_OFFSET_MS:.0f})")
    finally:
        await page.context.close()
