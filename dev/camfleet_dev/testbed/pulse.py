"""A private PulseAudio daemon with a null sink: an audio output device for headless Chromium.

This machine has no sound card. A user daemon on its own socket, with `module-null-sink` as its
only sink, gives Chromium an output device that consumes samples at the real rate, so WebRTC's
audio pipeline plays received audio out (tests/browser/test_viewer_av_sync.py); `env` is what
to pass to the browser (`PULSE_SERVER`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from camfleet_dev.testbed.process import ManagedProcess
from camfleet_dev.testbed.tools import tool


class PulseServer:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.socket = state_dir / "native"
        self.proc: ManagedProcess | None = None

    @property
    def server(self) -> str:
        return f"unix:{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        return {"PULSE_SERVER": self.server}

    def _info(self) -> bool:
        try:
            done = subprocess.run(
                [tool("pactl"), "info"],
                env={**os.environ, **self.env},
                capture_output=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and b"camfleet" in done.stdout

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        home = self.state_dir / "home"
        home.mkdir(exist_ok=True)
        # Its own HOME and runtime dir: no cookie, config or socket shared with anything else.
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(self.state_dir),
            "PULSE_RUNTIME_PATH": str(self.state_dir),
        }
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self.proc = ManagedProcess(
            "pulseaudio",
            [
                tool("pulseaudio"),
                *("--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "-n"),
                "--disallow-exit",
                "--log-target=stderr",
                "--load=module-null-sink sink_name=camfleet",
                f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            ],
            log_dir=self.state_dir / "logs",
            env=env,
        )
        self.proc.start()
        self.proc.wait_until(self._info, 20, "pactl info (sink camfleet)")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> PulseServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
