"""An RTSP test camera: GStreamer's RTSP server streaming pre-encoded clips, looped, live.

Runs under Debian's ``/usr/bin/python3`` (which owns the GStreamer GI bindings), so it imports
nothing outside the standard library and ``gi``. Started by ``camfleet_dev.testbed.rtsp``.

- every clip named on the command line is served at ``/<name>`` on ``--port`` without
  credentials and, on ``--secure-port``, behind Basic credentials from the environment
  (``CAMERA_USERNAME``/``CAMERA_PASSWORD``) as a real IP camera does (401 challenge first);
- access units go out with exact timestamps (n x 40 ms, continuing across loops), so RTP
  timestamps advance like a camera's; one shared pipeline per path, however many clients;
- ``GET /sessions`` on the status port answers how many RTSP clients are playing each path
  (tests count RTSP sessions at the camera with it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

_lock = threading.Lock()
_playing: dict[int, str] = {}  # id(client) -> path


class Clip:
    def __init__(self, name: str, data_path: str) -> None:
        base = data_path.rsplit(".", 1)[0]
        with open(base + ".index.json") as f:
            meta = json.load(f)
        with open(data_path, "rb") as f:
            self.data = f.read()
        self.name = name
        self.codec: str = meta["codec"]
        self.fps: int = meta["fps"]
        self.units: list[dict[str, Any]] = meta["units"]
        self.frames: int = meta["frames"]
        # pts/dts may start below zero (B-frames): shift so that the first dts is 0.
        self.shift = -min(u["dts"] for u in self.units)


class Feeder:
    """Pushes a clip's access units into one appsrc, looping with continuous timestamps."""

    def __init__(self, clip: Clip, appsrc: Any) -> None:
        self.clip = clip
        self.appsrc = appsrc
        self.i = 0
        self.loop = 0
        self.frame_ns = Gst.SECOND // clip.fps
        self.offset: int | None = None

    def need_data(self, src: Any, _length: int) -> None:
        clip = self.clip
        if self.offset is None:
            # Stamp from the pipeline's running time now: a clip timestamped from 0 in a pipeline
            # that prerolled a while ago would be late and burst out faster than real time.
            clock = src.get_clock()
            now = clock.get_time() - src.get_base_time() if clock is not None else 0
            self.offset = max(0, now) + 2 * self.frame_ns
        unit = clip.units[self.i]
        chunk = clip.data[unit["offset"] : unit["offset"] + unit["size"]]
        buf = Gst.Buffer.new_wrapped(chunk)
        base = self.loop * clip.frames
        buf.pts = self.offset + (base + unit["pts"] + clip.shift) * self.frame_ns
        buf.dts = self.offset + (base + unit["dts"] + clip.shift) * self.frame_ns
        buf.duration = self.frame_ns
        if not unit["key"]:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        self.i += 1
        if self.i == len(clip.units):
            self.i = 0
            self.loop += 1
        src.emit("push-buffer", buf)


class ClipFactory(GstRtspServer.RTSPMediaFactory):  # type: ignore[misc]
    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self.clip = clip
        parse, pay = (
            ("h265parse", "rtph265pay") if clip.codec == "h265" else ("h264parse", "rtph264pay")
        )
        caps = (
            "video/x-h265,stream-format=byte-stream,alignment=au"
            if clip.codec == "h265"
            else "video/x-h264,stream-format=byte-stream,alignment=au"
        )
        self.set_launch(
            f"( appsrc name=src is-live=true format=time caps={caps} "
            f"! {parse} ! {pay} name=pay0 pt=96 config-interval=0 )"
        )
        self.set_shared(True)
        # A camera restarted by a test must not hand out a stale pipeline.
        self.set_eos_shutdown(False)
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: Any, media: Any) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        feeder = Feeder(self.clip, appsrc)
        appsrc.connect("need-data", feeder.need_data)
        media._camfleet_feeder = feeder


def _client_connected(_server: Any, client: Any) -> None:
    key = id(client)

    def on_play(_c: Any, ctx: Any) -> None:
        with _lock:
            _playing[key] = ctx.uri.abspath

    def on_closed(_c: Any) -> None:
        with _lock:
            _playing.pop(key, None)

    client.connect("play-request", on_play)
    client.connect("closed", on_closed)
    client.connect("teardown-request", lambda c, ctx: on_closed(c))


class StatusHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/sessions":
            self.send_error(404)
            return
        with _lock:
            by_path: dict[str, int] = {}
            for path in _playing.values():
                by_path[path] = by_path.get(path, 0) + 1
        body = json.dumps({"total": sum(by_path.values()), "by_path": by_path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _server(
    host: str, port: int, clips: list[Clip], credentials: tuple[str, str] | None
) -> GstRtspServer.RTSPServer:
    """One RTSP server; with credentials it has no anonymous token, so clients get a 401."""
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    if credentials is None:
        auth.set_default_token(token)
    else:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(*credentials), token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    server.set_auth(auth)
    mounts = server.get_mount_points()
    for clip in clips:
        factory = ClipFactory(clip)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role("viewer")
        perms.add_permission_for_role("viewer", "media.factory.access", True)
        perms.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(perms)
        mounts.add_factory(f"/{clip.name}", factory)
    return server


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secure-port", type=int, default=0)
    parser.add_argument("--status-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--clip", action="append", default=[], help="name=path")
    args = parser.parse_args()
    Gst.init(None)

    clips = []
    for item in args.clip:
        name, path = item.split("=", 1)
        clips.append(Clip(name, path))

    servers = [_server(args.host, args.port, clips, credentials=None)]
    user, password = os.environ.get("CAMERA_USERNAME"), os.environ.get("CAMERA_PASSWORD")
    if args.secure_port and user and password:
        servers.append(_server(args.host, args.secure_port, clips, credentials=(user, password)))
    for server in servers:
        server.connect("client-connected", _client_connected)
        if server.attach(None) == 0:
            print(f"rtsp-camera: cannot listen on {server.get_service()}", file=sys.stderr)
            return 1

    status = ThreadingHTTPServer(("127.0.0.1", args.status_port), StatusHandler)
    threading.Thread(target=status.serve_forever, daemon=True).start()

    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"rtsp-camera: serving on {args.host}:{args.port} ({args.secure_port})", flush=True)
    loop.run()
    status.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
