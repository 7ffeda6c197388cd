"""The media path against the peers a user would pick instead (issue #15), side by side.

    scripts/bench-setup    # once (make bench-setup): go2rtc and MediaMTX into .tools/bin
    .venv/bin/python benchmarks/peers.py --cameras 1,5,20 --viewers 1,10 --seconds 15

One run, one RTSP test camera (`h264-4mbps`: H.264 High 1080p25, 4 Mbit/s), three systems
started in turn for every scenario, each pulling that camera over RTSP/TCP and serving WebRTC:

- camfleet: one `camfleet-ingest` per camera publishing to livekit-server (its CPU and RSS are
  the ingests' plus livekit-server's, shared out per camera);
- go2rtc (`.tools/bin/go2rtc`, `stream.html?mode=webrtc`);
- MediaMTX (`.tools/bin/mediamtx`, its WHEP read page); left out, and said so, if not built.

Scenarios: N cameras with no viewer ("ready to serve": camfleet and MediaMTX pull every camera
all the time; go2rtc pulls only for a consumer, so each of its cameras gets an FFmpeg RTSP
reader `-c copy` from go2rtc, not counted) and one camera watched by V headless-Chromium
viewers. Server CPU is utime+stime from /proc over the window, % of one core per camera.

Glass-to-glass: a reference RTSP session (PyAV, demux only; keyframes decoded to read the
burnt-in frame code, the other frames' codes follow from their pts) notes when each frame
leaves the camera; every viewer page reads the code from each presented picture
(requestVideoFrameCallback, a canvas read of the code row) and stamps it with Date.now(): one
clock, one machine. First frame: page opened → first presented picture.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import numpy as np
import yaml
from ingest_media import (
    Worker,
    cpu_seconds,
    rss_mb,
    start_ingest,
    stop,
    thread_cpu_seconds,
)
from playwright.async_api import Browser, Page, async_playwright

from camfleet_dev import pattern
from camfleet_dev.testbed.browser import launch_chromium
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.process import ManagedProcess, free_port, http_ok
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.tools import ffmpeg, repo_root, tools_dir

CLIP = "h264-4mbps"
PERIOD = 200  # the clip's frame code loops every 200 frames (8 s)
LIVEKIT_CLIENT = repo_root() / "overlay-gateway/web/node_modules/livekit-client/dist"

# Reads the test pattern's frame code from every presented picture (the viewer's probe does the
# same, overlay-gateway/web/src/testhooks.ts) on whatever <video> the page creates.
MEASURE_JS = """
(() => {
  const S = (window.__peers = { frames: [] });
  const canvas = document.createElement('canvas');
  canvas.width = 256;
  canvas.height = 8;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const read = (v) => {
    const vw = v.videoWidth, vh = v.videoHeight;
    if (!vw || !vh) return null;
    const row = Math.max(8, Math.round(vh / 27));
    ctx.drawImage(v, 0, row / 4, Math.floor(vw / 16) * 16, row / 2, 0, 0, 256, 8);
    const px = ctx.getImageData(0, 0, 256, 8).data;
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
  const seen = new WeakSet();
  const watch = (v) => {
    const cb = () => {
      const t = Date.now();
      const code = read(v);
      if (code !== null && S.frames.length < 50000) S.frames.push([t, code, v.videoWidth]);
      v.requestVideoFrameCallback(cb);
    };
    v.requestVideoFrameCallback(cb);
  };
  setInterval(() => {
    for (const v of document.querySelectorAll('video'))
      if (!seen.has(v)) { seen.add(v); watch(v); }
  }, 10);
})();
"""

CAMFLEET_PAGE = """<!doctype html>
<html><body style="margin:0;background:#000">
<video id="v" autoplay muted playsinline style="width:640px;height:360px"></video>
<script src="livekit-client.umd.js"></script>
<script>
  const q = new URLSearchParams(location.search);
  // As the product viewer (overlay-gateway/web/src/camera.ts): the frame-metadata worker strips
  // the ingest's stamp trailer before the decoder sees the frame. Not its adaptiveStream: that
  // pauses a track whose element the browser deems hidden, which headless pages can be.
  const worker = new Worker('livekit-client.fm.worker.js');
  const room = new LivekitClient.Room({
    adaptiveStream: false, dynacast: false, frameMetadata: { worker },
  });
  room.on(LivekitClient.RoomEvent.TrackSubscribed, (track) => {
    if (track.kind === 'video') track.attach(document.getElementById('v'));
  });
  room.connect(q.get('url'), q.get('token'));
</script></body></html>
"""


class Reference(threading.Thread):
    """A second RTSP session that notes when each frame code leaves the camera.

    Only keyframes are decoded (to read their code); a delta frame's code is its keyframe's
    plus the frames between them, from the pts.
    """

    def __init__(self, url: str) -> None:
        super().__init__(name="reference", daemon=True)
        self.url = url
        self.arrivals: dict[int, list[float]] = {}
        self.running = True
        self.lock = threading.Lock()

    def run(self) -> None:
        options = {"rtsp_transport": "tcp", "fflags": "nobuffer"}
        with av.open(self.url, options=options) as container:
            stream = container.streams.video[0]
            tb = float(stream.time_base or 1 / 90000)
            ticks = round(1 / (25 * tb))
            decoder = av.CodecContext.create("h264", "r")
            decoder.extradata = stream.codec_context.extradata
            key: tuple[int, int] | None = None  # (pts, code) of the latest decoded keyframe
            for packet in container.demux(stream):
                arrived = time.time()
                if not self.running:
                    return
                if packet.pts is None or packet.size == 0:
                    continue
                if packet.is_keyframe:
                    for frame in decoder.decode(packet):
                        y = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
                        key = (int(frame.pts or packet.pts), pattern.read_code(y))
                if key is None:
                    continue
                code = (key[1] + round((packet.pts - key[0]) / ticks)) % PERIOD
                with self.lock:
                    self.arrivals.setdefault(code, []).append(arrived)

    def sent(self, code: int, shown: float) -> float | None:
        """When the frame shown at ``shown`` (s) left the camera: that code's latest arrival
        before it, within half a loop (the code repeats every 8 s)."""
        with self.lock:
            times = self.arrivals.get(code, [])
            before = [t for t in times[-4:] if 0 <= shown - t < 4]
        return max(before) if before else None


@dataclass
class Running:
    """A started system: its measured processes by part, and how a viewer opens it."""

    parts: dict[str, list[int]]
    viewer_url: str
    procs: list[ManagedProcess] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    consumers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    rtsp_port: int = 0  # go2rtc's RTSP server, for its consumers

    def stop(self) -> None:
        for c in self.consumers:
            c.terminate()
        for c in self.consumers:
            c.wait(5)
        stop(self.workers)
        for p in self.procs:
            p.stop()


class Camfleet:
    name = "camfleet"

    def __init__(self, livekit: LiveKitServer, source: str, work: Path, origin: str) -> None:
        self.livekit, self.source, self.work, self.origin = livekit, source, work, origin
        self.runs = 0

    def start(self, cameras: int) -> Running:
        self.runs += 1
        tag = f"r{self.runs}"
        workers = [
            start_ingest(self.livekit, self.source, self.work, f"{tag}-{i}") for i in range(cameras)
        ]
        deadline = time.monotonic() + 30 + 3 * cameras
        for w in workers:  # publishing: frames counted by the ingest's own metrics
            while True:
                try:
                    if w.frames() > 0:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or w.proc.poll() is not None:
                    stop(workers)
                    raise RuntimeError(f"camfleet ingest {w.proc.pid} did not publish")
                time.sleep(0.3)
        assert self.livekit.proc is not None
        token = self.livekit.token(f"bench-{tag}-0", f"viewer-{time.monotonic_ns()}")
        query = urllib.parse.urlencode({"url": self.livekit.url, "token": token})
        return Running(
            {"ingest": [w.proc.pid for w in workers], "livekit-server": [self.livekit.proc.pid]},
            f"{self.origin}/camfleet.html?{query}",
            workers=workers,
        )

    def viewer_url(self, running: Running, viewer: int) -> str:
        # Each viewer needs its own identity in the room.
        base, _, query = running.viewer_url.partition("?")
        params = dict(urllib.parse.parse_qsl(query))
        room = f"bench-r{self.runs}-0"
        params["token"] = self.livekit.token(room, f"viewer-{viewer}-{time.monotonic_ns()}")
        return f"{base}?{urllib.parse.urlencode(params)}"


class Go2rtc:
    name = "go2rtc"

    def __init__(self, binary: str, source: str, work: Path) -> None:
        self.binary, self.source, self.work = binary, source, work

    def start(self, cameras: int) -> Running:
        api, rtsp, webrtc = free_port(), free_port(), free_port()
        config = {
            "log": {"level": "warn"},
            "api": {"listen": f"127.0.0.1:{api}"},
            "rtsp": {"listen": f"127.0.0.1:{rtsp}"},
            "srtp": {"listen": ""},
            "webrtc": {
                "listen": f"127.0.0.1:{webrtc}",
                "candidates": [f"127.0.0.1:{webrtc}"],
                "ice_servers": [],
            },
            "streams": {f"cam{i}": self.source for i in range(cameras)},
        }
        path = self.work / f"go2rtc-{api}.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = ManagedProcess(
            f"go2rtc-{api}", [self.binary, "-config", str(path)], log_dir=self.work / "logs"
        )
        proc.start()
        proc.wait_until(lambda: http_ok(f"http://127.0.0.1:{api}/api"), 20, "API ready")
        return Running(
            {"go2rtc": [proc.pid]},
            f"http://127.0.0.1:{api}/stream.html?src=cam0&mode=webrtc",
            procs=[proc],
            rtsp_port=rtsp,
        )

    def consume(self, running: Running, cameras: int) -> None:
        """go2rtc pulls a camera only while someone reads it: one RTSP reader per camera."""
        port = running.rtsp_port
        for i in range(cameras):
            args = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp"]
            args += ["-i", f"rtsp://127.0.0.1:{port}/cam{i}", "-c", "copy", "-f", "null", "-"]
            running.consumers.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def viewer_url(self, running: Running, viewer: int) -> str:
        return running.viewer_url


class MediaMtx:
    name = "MediaMTX"

    def __init__(self, binary: str, source: str, work: Path) -> None:
        self.binary, self.source, self.work = binary, source, work

    def start(self, cameras: int) -> Running:
        api, webrtc, udp = free_port(), free_port(), free_port()
        off = dict.fromkeys(("metrics", "pprof", "playback", "rtsp", "rtmp", "hls", "srt"), False)
        config: dict[str, Any] = off | {
            "logLevel": "warn",
            "moq": False,
            "api": True,
            "apiAddress": f"127.0.0.1:{api}",
            "webrtc": True,
            "webrtcAddress": f"127.0.0.1:{webrtc}",
            "webrtcLocalUDPAddress": f"127.0.0.1:{udp}",
            "webrtcIPsFromInterfaces": False,
            "webrtcAdditionalHosts": ["127.0.0.1"],
            "webrtcICEServers2": [],
            "paths": {
                f"cam{i}": {"source": self.source, "rtspTransport": "tcp", "sourceOnDemand": False}
                for i in range(cameras)
            },
        }
        path = self.work / f"mediamtx-{api}.yml"
        path.write_text(yaml.safe_dump(config))
        proc = ManagedProcess(
            f"mediamtx-{api}", [self.binary, str(path)], log_dir=self.work / "logs"
        )
        proc.start()

        def ready() -> bool:
            try:
                url = f"http://127.0.0.1:{api}/v3/paths/list"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    items = json.loads(resp.read())["items"]
            except (OSError, ValueError, KeyError):
                return False
            return len(items) == cameras and all(item.get("ready") for item in items)

        proc.wait_until(ready, 30 + 2 * cameras, "every path ready")
        return Running({"mediamtx": [proc.pid]}, f"http://127.0.0.1:{webrtc}/cam0", procs=[proc])

    def consume(self, running: Running, cameras: int) -> None:
        """MediaMTX pulls every camera all the time (sourceOnDemand: no)."""

    def viewer_url(self, running: Running, viewer: int) -> str:
        return running.viewer_url


System = Camfleet | Go2rtc | MediaMtx


def window(running: Running, seconds: float) -> tuple[dict[str, float], dict[str, float], float]:
    """CPU seconds and RSS (MB) per part over ``seconds``; also the wall time."""
    pids = [pid for part in running.parts.values() for pid in part]
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    cpu = {
        name: sum(cpu_seconds(pid) - cpu0[pid] for pid in part)
        for name, part in running.parts.items()
    }
    rss = {name: sum(rss_mb(pid) for pid in part) for name, part in running.parts.items()}
    return cpu, rss, wall


class PageServer:
    """Serves the camfleet viewer page and livekit-client (the library the product viewer uses)
    on loopback: Chromium lets only a loopback page reach livekit-server on loopback (a page
    fulfilled by Playwright's router counts as public and is refused)."""

    def __init__(self) -> None:
        files = {
            name: (LIVEKIT_CLIENT / name).read_bytes()
            for name in ("livekit-client.umd.js", "livekit-client.fm.worker.js")
        }
        page = CAMFLEET_PAGE.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                js = files.get(name)
                body, kind = (js, "text/javascript") if js else (page, "text/html")
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def latencies(
    frames: list[list[float]], ref: Reference, since_ms: float, until_ms: float
) -> tuple[list[float], int]:
    """Glass-to-glass (ms) of every newly presented frame in the window; frames seen."""
    out: list[float] = []
    last = None
    seen = 0
    for t_ms, code, width in frames:
        if not since_ms <= t_ms < until_ms or width < 1000 or code >= PERIOD or code == last:
            continue
        last = code
        seen += 1
        sent = ref.sent(int(code), t_ms / 1000)
        if sent is not None:
            out.append(t_ms - sent * 1000)
    return out, seen


async def run_viewers(
    system: System,
    running: Running,
    browser: Browser,
    viewers: int,
    ref: Reference,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    urls = [system.viewer_url(running, v) for v in range(viewers)]
    pages: list[Page] = []
    for _ in urls:  # one context each: no shared connection or cache between viewers
        context = await browser.new_context(viewport={"width": 800, "height": 500})
        page = await context.new_page()
        await page.add_init_script(MEASURE_JS)
        pages.append(page)
    opened: dict[int, float] = {}

    async def go(i: int, url: str) -> None:
        opened[i] = time.time()
        await pages[i].goto(url)

    await asyncio.gather(*(go(i, u) for i, u in enumerate(urls)))
    firsts: list[float | None] = []
    deadline = time.monotonic() + 30
    first_js = "window.__peers && window.__peers.frames.find(f => f[2] > 1000)"
    for i, page in enumerate(pages):
        first = None
        while first is None and time.monotonic() < deadline:
            got = await page.evaluate(first_js)
            if got:
                first = got[0] / 1000 - opened[i]
            else:
                await asyncio.sleep(0.05)
        firsts.append(first)
    await asyncio.sleep(warmup)
    since_ms = time.time() * 1000
    cpu, rss, wall = await asyncio.to_thread(window, running, seconds)
    until_ms = time.time() * 1000
    g2g: list[float] = []
    shown = 0
    for page in pages:
        frames = await page.evaluate("window.__peers.frames")
        lat, seen = latencies(frames, ref, since_ms, until_ms)
        g2g += lat
        shown += seen
    for page in pages:
        await page.context.close()
    got_first = [f for f in firsts if f is not None]
    return {
        "cpu": cpu,
        "rss": rss,
        "wall": wall,
        "g2g_ms_p50": pct(g2g, 50),
        "g2g_ms_p99": pct(g2g, 99),
        "g2g_frames": len(g2g),
        "fps_per_viewer": round(shown / viewers / wall, 1),
        "first_frame_s_median": round(statistics.median(got_first), 2) if got_first else None,
        "first_frame_s_max": round(max(got_first), 2) if got_first else None,
        "viewers_without_video": len(firsts) - len(got_first),
    }


def summarise(
    system: str,
    scenario: str,
    cameras: int,
    viewers: int,
    m: dict[str, Any],
    load: tuple[float, float],
) -> dict[str, Any]:
    cpu, rss, wall = m.pop("cpu"), m.pop("rss"), m.pop("wall")
    row: dict[str, Any] = {
        "system": system,
        "scenario": scenario,
        "cameras": cameras,
        "viewers": viewers,
        "cpu_pct_per_camera": round(sum(cpu.values()) / wall * 100 / cameras, 2),
        "rss_mb_per_camera": round(sum(rss.values()) / cameras, 1),
        "parts_cpu_pct_per_camera": {k: round(v / wall * 100 / cameras, 2) for k, v in cpu.items()},
        "load_avg_1m": [round(x, 2) for x in load],
    }
    return row | m


async def run(
    cameras: list[int], viewers: list[int], seconds: float, warmup: float, only: set[str] | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as tmp:
        work = Path(tmp)
        with (
            RtspCamera(work / "rtsp", tools_dir() / "media") as camera,
            LiveKitServer(work / "livekit") as livekit,
        ):
            source = camera.url(CLIP)
            pages = PageServer()
            systems: list[System] = [Camfleet(livekit, source, work, pages.origin)]
            for cls, binary in ((Go2rtc, "go2rtc"), (MediaMtx, "mediamtx")):
                path = tools_dir() / "bin" / binary
                if path.exists():
                    systems.append(cls(str(path), source, work))
                else:
                    print(f"# {binary}: not built (scripts/bench-setup): left out", flush=True)
            if only:
                systems = [s for s in systems if s.name.lower() in only]
            ref = Reference(source)
            ref.start()
            async with async_playwright() as pw:
                browser = await launch_chromium(pw)
                scenarios = [("ready", n, 0) for n in cameras] + [
                    ("watched", 1, v) for v in viewers
                ]
                for scenario, n, v in scenarios:
                    for system in systems:
                        load0 = os.getloadavg()[0]
                        running = await asyncio.to_thread(system.start, n)
                        try:
                            if v == 0:
                                if not isinstance(system, Camfleet):
                                    system.consume(running, n)
                                await asyncio.sleep(warmup)
                                cpu, rss, wall = await asyncio.to_thread(window, running, seconds)
                                m: dict[str, Any] = {"cpu": cpu, "rss": rss, "wall": wall}
                                if isinstance(system, Camfleet):
                                    m["ingest_threads_pct"] = threads_pct(running, wall)
                            else:
                                m = await run_viewers(
                                    system, running, browser, v, ref, warmup, seconds
                                )
                        finally:
                            await asyncio.to_thread(running.stop)
                        row = summarise(system.name, scenario, n, v, m, (load0, os.getloadavg()[0]))
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                await browser.close()
            ref.running = False
            pages.close()
    return rows


def threads_pct(running: Running, wall: float) -> dict[str, float]:
    """Not measured over the same window: a short second look at the first ingest's threads."""
    pid = running.parts["ingest"][0]
    t0 = thread_cpu_seconds(pid)
    time.sleep(min(5.0, wall))
    t1 = thread_cpu_seconds(pid)
    t1.subtract(t0)
    ticks = os.sysconf("SC_CLK_TCK")
    return {k: round(v / ticks / min(5.0, wall) * 100, 2) for k, v in t1.most_common() if v > 0}


def tables(rows: list[dict[str, Any]]) -> str:
    out = ["| system | cameras | CPU %/camera | of which | RSS MB/camera | load (1 min) |"]
    out.append("|---|---|---|---|---|---|")
    for r in rows:
        if r["scenario"] != "ready":
            continue
        parts = ", ".join(f"{k} {v}" for k, v in r["parts_cpu_pct_per_camera"].items())
        out.append(
            f"| {r['system']} | {r['cameras']} | {r['cpu_pct_per_camera']} | {parts} "
            f"| {r['rss_mb_per_camera']} | {r['load_avg_1m'][0]} to {r['load_avg_1m'][1]} |"
        )
    out += [
        "",
        "| system | viewers | CPU % (server, 1 camera) | of which | RSS MB "
        "| glass-to-glass p50 / p99 ms | fps/viewer | first frame s (median / max) "
        "| load (1 min) |",
    ]
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["scenario"] != "watched":
            continue
        parts = ", ".join(f"{k} {v}" for k, v in r["parts_cpu_pct_per_camera"].items())
        out.append(
            f"| {r['system']} | {r['viewers']} | {r['cpu_pct_per_camera']} | {parts} "
            f"| {r['rss_mb_per_camera']} | {r['g2g_ms_p50']} / {r['g2g_ms_p99']} "
            f"| {r['fps_per_viewer']} | {r['first_frame_s_median']} / {r['first_frame_s_max']} "
            f"| {r['load_avg_1m'][0]} to {r['load_avg_1m'][1]} |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", default="1,5,20", help="'ready' scenarios ('' for none)")
    parser.add_argument("--viewers", default="1,10", help="viewers of one camera ('' for none)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--only", default="", help="comma-separated systems (default: all)")
    args = parser.parse_args()
    cams = [int(n) for n in args.cameras.split(",") if n]
    views = [int(n) for n in args.viewers.split(",") if n]
    only = {s.strip().lower() for s in args.only.split(",") if s.strip()} or None
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = asyncio.run(run(cams, views, args.seconds, args.warmup, only))
    print(f"\n{started}, {os.cpu_count()} cores\n")
    print(tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
