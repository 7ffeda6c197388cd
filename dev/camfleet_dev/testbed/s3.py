"""A real S3-compatible object store on loopback: versitygw's posix backend over a directory.

versitygw (Apache-2.0) is built from the Go module proxy by ``scripts/setup``; its posix backend
keeps every bucket as a directory and every object as a file below it, so a restart on the same
directory keeps the objects (the recording tests take the store away and bring it back).
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

from camfleet_dev.testbed.process import ManagedProcess, free_port, tcp_open
from camfleet_dev.testbed.tools import tool

REGION = "us-east-1"


class S3Server:
    """``start()``/``stop()`` on the same port and data; ``create_bucket(name)`` makes a bucket."""

    def __init__(
        self, state_dir: Path, *, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.state_dir = state_dir
        self.host = host
        self.port = port or free_port(host)
        self.access_key_id = "camfleet"
        self.secret_access_key = secrets.token_hex(16)  # loopback test bed only
        self.region = REGION
        self.root = state_dir / "objects"
        self.proc: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def create_bucket(self, name: str) -> str:
        """A bucket is a directory of the posix backend; creating it needs no request."""
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return name

    def start(self) -> None:
        """Start (or restart on the same port with the same objects)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess(
            "versitygw",
            [
                tool("versitygw"),
                *("--region", self.region, "--port", f"{self.host}:{self.port}", "--quiet"),
                # Browsers fetch signed segment URLs from another origin (the viewer's
                # playback): versitygw's default CORS origin, used where a bucket has no CORS
                # rule of its own (a real deployment sets one per bucket, docs/recording.md).
                *("--cors-allow-origin", "*"),
                # Metadata (content type, etag) in a sidecar directory: xattrs need not exist
                # on the file system the test bed runs on.
                *("posix", "--sidecar", str(self.state_dir / "meta"), str(self.root)),
            ],
            log_dir=self.state_dir / "logs",
            # The root credentials by environment, not by argument (arguments show in `ps`).
            env=dict(
                os.environ,
                ROOT_ACCESS_KEY_ID=self.access_key_id,
                ROOT_SECRET_ACCESS_KEY=self.secret_access_key,
            ),
        )
        (self.state_dir / "meta").mkdir(parents=True, exist_ok=True)
        self.proc.start()
        self.proc.wait_until(lambda: tcp_open(self.host, self.port), 30, "listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def freeze(self) -> None:
        """Hang (SIGSTOP): connections are accepted by the kernel and never answered, the way
        an overloaded or partitioned store looks to a client."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Gone at once (SIGKILL), as a crashed or unplugged store would be."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
