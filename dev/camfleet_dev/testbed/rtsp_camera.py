"""An RTSP test camera: GStreamer's RTSP server streaming pre-encoded clips, looped, live.

Runs under Debian's ``/usr/bin/python3`` (which owns the GStreamer GI bindings), so it imports
nothing outside the standard library and ``gi``. Started by ``camfleet_dev.testbed.rtsp``.

- every clip named on the command line is served at ``/<name>`` on ``--port`` without
  credentials and, on ``--secure-port``, behind Basic credentials from the environment
  (``CAMERA_USERNAME``/``CAMERA_PASSWORD``) as a real IP camera does (401 challenge first);
- access units go out with exact timestamps (n x 40 ms, continuing across loops), so RTP
  timestamps advance like a camera's; one shared pipeline per path, however many clients;
- ``--mount h264-aac=h264+aac`` serves a clip with an audio clip (``media.AUDIO_CLIPS``) in
  one media, both streams stamped from the same running time, so the beep on video frame
  ``media.BEEP_FRAME`` is on that frame at the camera;
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


class AudioClip:
    """An audio clip (``media.encode_audio``): packets with their pts in samples, one lap."""

    # GStreamer caps and RTP payloader per codec (the payload types are the static ones for
    # G.711, dynamic for the others).
    KINDS = {
        "aac": ("audio/mpeg,mpegversion=4,stream-format=raw", "rtpmp4gpay pt=97"),
        "pcma": ("audio/x-alaw", "rtppcmapay pt=8"),
        "pcmu": ("audio/x-mulaw", "rtppcmupay pt=0"),
        "opus": ("audio/x-opus,channel-mapping-family=0", "rtpopuspay pt=98"),
    }

    def __init__(self, name: str, data_path: str) -> None:
        base = data_path.rsplit(".", 1)[0]
        with open(base + ".index.json") as f:
            meta = json.load(f)
        with open(data_path, "rb") as f:
            self.data = f.read()
        self.name = name
        self.codec: str = meta["codec"]
        self.rate: int = meta["rate"]
        self.channels: int = meta["channels"]
        self.lap_samples: int = meta["lap_samples"]
        self.extradata: str = meta["extradata"]
        self.units: list[dict[str, Any]] = meta["units"]

    def launch(self) -> str:
        caps, pay = self.KINDS[self.codec]
        caps += f",rate={self.rate},channels={self.channels}"
        if self.extradata and self.codec == "aac":
            caps += f",codec_data=(buffer){self.extradata}"
        return f"appsrc name=asrc is-live=true format=time caps={caps} ! {pay} name=pay1"


class Start:
    """The running time both streams of one media are stamped from (A/V in step)."""

    def __init__(self, frame_ns: int) -> None:
        self.frame_ns = frame_ns
        self.offset: int | None = None

    def get(self, src: Any) -> int:
        if self.offset is None:
            # Stamp from the pipeline's running time now: a clip timestamped from 0 in a pipeline
            # that prerolled a while ago would be late and burst out faster than real time.
            clock = src.get_clock()
            now = clock.get_time() - src.get_base_time() if clock is not None else 0
            self.offset = max(0, now) + 2 * self.frame_ns
        return self.offset


class AudioFeeder:
    """Pushes an audio clip's packets into its appsrc, in step with the video's laps."""

    def __init__(self, clip: AudioClip, start: Start) -> None:
        self.clip = clip
        self.start = start
        self.i = 0
        self.loop = 0

    def need_data(self, src: Any, _length: int) -> None:
        clip = self.clip
        offset = self.start.get(src)
        unit = clip.units[self.i]
        buf = Gst.Buffer.new_wrapped(clip.data[unit["offset"] : unit["offset"] + unit["size"]])
        sample = self.loop * clip.lap_samples + unit["pts"]
        buf.pts = max(0, offset + sample * Gst.SECOND // clip.rate)
        buf.duration = unit["samples"] * Gst.SECOND // clip.rate
        self.i += 1
        if self.i == len(clip.units):
            self.i = 0
            self.loop += 1
        src.emit("push-buffer", buf)


class Feeder:
    """Pushes a clip's access units into one appsrc, looping with continuous timestamps."""

    def __init__(self, clip: Clip, appsrc: Any, start: Start | None = None) -> None:
        self.clip = clip
        self.appsrc = appsrc
        self.i = 0
        self.loop = 0
        self.frame_ns = Gst.SECOND // clip.fps
        self.start = start or Start(self.frame_ns)

    def need_data(self, src: Any, _length: int) -> None:
        clip = self.clip
        offset = self.start.get(src)
        unit = clip.units[self.i]
        chunk = clip.data[unit["offset"] : unit["offset"] + unit["size"]]
        buf = Gst.Buffer.new_wrapped(chunk)
        base = self.loop * clip.frames
        buf.pts = offset + (base + unit["pts"] + clip.shift) * self.frame_ns
        buf.dts = offset + (base + unit["dts"] + clip.shift) * self.frame_ns
        buf.duration = self.frame_ns
        if not unit["key"]:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        self.i += 1
        if self.i == len(clip.units):
            self.i = 0
            self.loop += 1
        src.emit("push-buffer", buf)


class ClipFactory(GstRtspServer.RTSPMediaFactory):  # type: ignore[misc]
    def __init__(self, clip: Clip, audio: AudioClip | None = None) -> None:
        super().__init__()
        self.clip = clip
        self.audio = audio
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
            f"! {parse} ! {pay} name=pay0 pt=96 config-interval=0 "
            + (audio.launch() if audio is not None else "")
            + " )"
        )
        self.set_shared(True)
        # A camera restarted by a test must not hand out a stale pipeline.
        self.set_eos_shutdown(False)
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: Any, media: Any) -> None:
        element = media.get_element()
        appsrc = element.get_child_by_name("src")
        feeder = Feeder(self.clip, appsrc)
        appsrc.connect("need-data", feeder.need_data)
        media._camfleet_feeder = feeder
        if self.audio is not None:
            audio = AudioFeeder(self.audio, feeder.start)
            element.get_child_by_name("asrc").connect("need-data", audio.need_data)
            media._camfleet_audio = audio


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
    host: str,
    port: int,
    clips: list[Clip],
    credentials: tuple[str, str] | None,
    mounts_with_audio: list[tuple[str, Clip, AudioClip]] = [],  # noqa: B006 - read only
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
    served = [(clip.name, clip, None) for clip in clips] + list(mounts_with_audio)
    for name, clip, audio in served:
        factory = ClipFactory(clip, audio)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role("viewer")
        perms.add_permission_for_role("viewer", "media.factory.access", True)
        perms.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(perms)
        mounts.add_factory(f"/{name}", factory)
    return server


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secure-port", type=int, default=0)
    parser.add_argument("--status-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--clip", action="append", default=[], help="name=path")
    parser.add_argument("--audio", action="append", default=[], help="name=path")
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        help="path=video+audio (clip names), e.g. "
        "h264-aac=h264+aac: that video with that audio, both from one media",
    )
    args = parser.parse_args()
    Gst.init(None)

    clips = []
    for item in args.clip:
        name, path = item.split("=", 1)
        clips.append(Clip(name, path))
    audios = {}
    for item in args.audio:
        name, path = item.split("=", 1)
        audios[name] = AudioClip(name, path)
    by_name = {clip.name: clip for clip in clips}
    with_audio = []
    for item in args.mount:
        path, pair = item.split("=", 1)
        video, audio = pair.split("+", 1)
        with_audio.append((path, by_name[video], audios[audio]))

    servers = [_server(args.host, args.port, clips, None, with_audio)]
    user, password = os.environ.get("CAMERA_USERNAME"), os.environ.get("CAMERA_PASSWORD")
    if args.secure_port and user and password:
        servers.append(_server(args.host, args.secure_port, clips, (user, password), with_audio))
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
