"""The RTSP test camera as a managed process (GStreamer RTSP server under Debian's Python)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from camfleet_dev.testbed.media import CLIPS, ensure_audio, ensure_clips
from camfleet_dev.testbed.process import ManagedProcess, free_port, http_ok, tcp_open
from camfleet_dev.testbed.tools import system_python

SCRIPT = Path(__file__).with_name("rtsp_camera.py")


class RtspCamera:
    """Streams ``h264`` (High 1080p25), ``h264-bframes`` and ``h265`` at ``url(name)``, and
    ``h264-aac``, ``h264-pcma``, ``h264-pcmu``, ``h264-opus``: ``h264`` with a microphone.

    ``secure_url(name)`` serves the same clips behind Basic credentials (``username`` /
    ``password``). ``sessions()`` counts the RTSP clients playing each path.
    """

    username = "camfleet"

    def __init__(
        self,
        state_dir: Path,
        media_dir: Path,
        *,
        port: int | None = None,
        secure_port: int | None = None,
        password: str = "c4mera-S3cret-pw",
        host: str = "127.0.0.1",
    ) -> None:
        """``host`` is the address it listens on and names in its URLs (the node's bridge
        address when pods must reach it)."""
        self.state_dir = state_dir
        self.host = host
        self.media_dir = media_dir
        self.port = port or free_port(host)
        self.secure_port = secure_port or free_port(host)
        self.status_port = free_port()
        self.password = password
        self.proc: ManagedProcess | None = None

    def url(self, name: str = "h264") -> str:
        return f"rtsp://{self.host}:{self.port}/{name}"

    def secure_url(self, name: str = "h264") -> str:
        return f"rtsp://{self.host}:{self.secure_port}/{name}"

    def start(self) -> None:
        clips = ensure_clips(self.media_dir)
        args = [
            system_python(),
            str(SCRIPT),
            *("--port", str(self.port), "--secure-port", str(self.secure_port)),
            *("--status-port", str(self.status_port), "--host", self.host),
        ]
        for spec in CLIPS:
            args += ["--clip", f"{spec.name}={clips[spec.name]}"]
        # h264-aac, h264-pcma, h264-pcmu, h264-opus: the h264 clip with a microphone
        for name, path in ensure_audio(self.media_dir).items():
            args += ["--audio", f"{name}={path}", "--mount", f"h264-{name}=h264+{name}"]
        env = dict(os.environ, CAMERA_USERNAME=self.username, CAMERA_PASSWORD=self.password)
        # Debian's Python must not pick up the venv's packages.
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        self.proc = ManagedProcess("rtsp-camera", args, log_dir=self.state_dir / "logs", env=env)
        self.proc.start()
        self.proc.wait_until(
            lambda: (
                tcp_open(self.host, self.port)
                and http_ok(f"http://127.0.0.1:{self.status_port}/sessions")
            ),
            30,
            "listening",
        )

    def sessions(self, name: str | None = None) -> int:
        """How many RTSP clients are playing ``/name`` (or any path) right now."""
        url = f"http://127.0.0.1:{self.status_port}/sessions"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.loads(resp.read())
        if name is None:
            return int(data["total"])
        return int(data["by_path"].get(f"/{name}", 0))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> RtspCamera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
