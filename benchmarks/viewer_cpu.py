"""Browser CPU per camera: the camfleet viewer (WebRTC) vs the seed's JSMpeg page, side by side.

    .venv/bin/python benchmarks/viewer_cpu.py --seconds 20

Both in the same headless Chromium build, playing the test bed's RTSP camera (H.264 High
1080p25, the `h264` clip), one camera, one tab:

- `jsmpeg`: the seed's path. FFmpeg transcodes the camera to MPEG-1 in MPEG-TS
  (`-f mpegts -codec:v mpeg1video -b:v 2000k -bf 0`, as `ingest_media.py` measures it on the
  server side), a small relay sends its bytes over a WebSocket, and the page decodes them with
  JSMpeg (`@cycjimmy/jsmpeg-player` 6.1.2 from npm, installed into ~/.cache/camfleet on first
  use; its WASM decoder) onto a canvas, once with JSMpeg's WebGL renderer and once with its
  Canvas2D one (headless Chromium's WebGL is SwiftShader, i.e. software).
- `camfleet`: the real viewer page on the real stack (`viewer_drift.measure`: kube-apiserver,
  Redis, livekit-server, `camfleet-ingest`, the example AI worker, the gateway): WebRTC video
  decoded by Chromium, with the AI boxes drawn over it.

Chromium's CPU is utime+stime of every Chromium process below this one (browser, renderer, GPU,
utility) over the window, in cores; the FFmpeg transcoder and the relay are not counted (they
are the server side). Frames per second are counted in the page (JSMpeg's `onVideoDecode`; the
viewer's own frame statistics). Prints one JSON line per path and a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from playwright.async_api import async_playwright

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ingest_media import jsmpeg_transcoder  # noqa: E402
from viewer_drift import chromium_cpu_seconds  # noqa: E402
from viewer_drift import measure as measure_viewer  # noqa: E402

from camfleet_dev.testbed.browser import launch_chromium  # noqa: E402
from camfleet_dev.testbed.process import free_port  # noqa: E402
from camfleet_dev.testbed.rtsp import RtspCamera  # noqa: E402
from camfleet_dev.testbed.tools import tools_dir  # noqa: E402

JSMPEG_PACKAGE = "@cycjimmy/jsmpeg-player@6.1.2"
JSMPEG_DIR = Path.home() / ".cache" / "camfleet" / "jsmpeg-player-6.1.2"
JSMPEG_JS = JSMPEG_DIR / "node_modules/@cycjimmy/jsmpeg-player/dist/jsmpeg-player.umd.min.js"

PAGE = """<!doctype html>
<html><body style="margin:0;background:#000">
<canvas id="video" style="width:100%"></canvas>
<script src="/jsmpeg.js"></script>
<script>
  window.decoded = 0;
  window.player = new JSMpeg.Player("ws://" + location.host + "/ws", {
    canvas: document.getElementById("video"),
    audio: false,
    disableGl: location.search.includes("canvas2d"),
    onVideoDecode: () => { window.decoded++; },
  });
</script>
</body></html>
"""


def jsmpeg_js() -> Path:
    """The JSMpeg bundle, installed from npm once per user."""
    if not JSMPEG_JS.exists():
        JSMPEG_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-save", "--no-audit", "--no-fund", JSMPEG_PACKAGE],
            cwd=JSMPEG_DIR,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return JSMPEG_JS


class Relay:
    """FFmpeg's MPEG-TS on stdout, broadcast to every WebSocket client as binary messages."""

    def __init__(self, source_url: str) -> None:
        self.source_url = source_url
        self.clients: set[web.WebSocketResponse] = set()
        self.proc: asyncio.subprocess.Process | None = None
        self.port = free_port()

    async def start(self) -> web.AppRunner:
        app = web.Application()
        script = jsmpeg_js().read_bytes()

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        async def bundle(_: web.Request) -> web.Response:
            return web.Response(body=script, content_type="text/javascript")

        app.router.add_get("/", page)
        app.router.add_get("/jsmpeg.js", bundle)
        app.router.add_get("/ws", self._ws)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        args = [*jsmpeg_transcoder(self.source_url), "-"]
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        asyncio.get_running_loop().create_task(self._pump())
        return runner

    async def _pump(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            for ws in list(self.clients):
                if not ws.closed:
                    await ws.send_bytes(chunk)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.clients.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.discard(ws)
        return ws

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def measure_jsmpeg(seconds: float, settle: float, canvas2d: bool) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="camfleet-jsmpeg-bench-") as tmp,
        RtspCamera(Path(tmp) / "rtsp", tools_dir() / "media") as rtsp,
    ):
        relay = Relay(rtsp.url("h264"))
        runner = await relay.start()
        try:
            async with async_playwright() as pw:
                browser = await launch_chromium(pw)
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(
                    f"http://127.0.0.1:{relay.port}/" + ("?canvas2d" if canvas2d else "")
                )
                deadline = time.monotonic() + 30
                while not await page.evaluate("window.decoded"):
                    if time.monotonic() > deadline:
                        raise RuntimeError("JSMpeg decoded nothing in 30 s")
                    await asyncio.sleep(0.5)
                await asyncio.sleep(settle)
                renderer = await page.evaluate(
                    "player.renderer instanceof JSMpeg.Renderer.WebGL ? 'WebGL' : 'Canvas2D'"
                )
                wasm = await page.evaluate("!!player.wasmModule")
                frames0 = await page.evaluate("window.decoded")
                cpu0, t0 = chromium_cpu_seconds(), time.monotonic()
                await asyncio.sleep(seconds)
                cpu1, t1 = chromium_cpu_seconds(), time.monotonic()
                frames1 = await page.evaluate("window.decoded")
                await browser.close()
        finally:
            await relay.stop()
            await runner.cleanup()
    return {
        "path": "jsmpeg (Canvas2D)" if canvas2d else "jsmpeg (WebGL)",
        "fps": round((frames1 - frames0) / (t1 - t0), 1),
        "chromium_cpu_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
        "decoder": "wasm" if wasm else "js",
        "renderer": renderer,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    rows = []
    for canvas2d in (False, True):
        rows.append(await measure_jsmpeg(args.seconds, args.settle, canvas2d))
        print(json.dumps(rows[-1]), flush=True)
    viewer = await measure_viewer(args.seconds, args.settle, probe=False)
    rows.append(
        {
            "path": "camfleet",
            "fps": viewer["fps_displayed"],
            "chromium_cpu_cores": viewer["chromium_cpu_cores"],
            "decoder": "Chromium (WebRTC H.264)",
            "renderer": "<video> + overlay canvas",
        }
    )
    print(json.dumps(rows[-1]), flush=True)
    print("\n| path | fps | Chromium CPU (cores) | per 25 fps | decoder | renderer |")
    print("|---|---:|---:|---:|---|---|")
    for row in rows:
        per25 = row["chromium_cpu_cores"] / max(row["fps"], 0.1) * 25
        print(
            f"| {row['path']} | {row['fps']} | {row['chromium_cpu_cores']} | {per25:.2f} |"
            f" {row['decoder']} | {row['renderer']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
