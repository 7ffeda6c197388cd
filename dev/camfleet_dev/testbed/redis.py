"""A real redis-server on loopback, with AOF persistence so a restart keeps the streams."""

from __future__ import annotations

import socket
from pathlib import Path

from camfleet_dev.testbed.process import ManagedProcess, free_port
from camfleet_dev.testbed.tools import tool


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, state_dir: Path, *, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart on the same port with the same data)."""
        data = self.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess(
            "redis-server",
            [
                tool("redis-server"),
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec"),
                *("--save", "", "--daemonize", "no", "--loglevel", "warning"),
            ],
            log_dir=self.state_dir / "logs",
        )
        self.proc.start()
        # Accepting is not enough: while it replays its AOF, Redis answers LOADING to everything.
        self.proc.wait_until(lambda: _pong(self.port), 30, "PONG")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
