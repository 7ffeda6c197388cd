"""A real livekit-server (built from Go modules by scripts/setup) on loopback."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import yaml

from camfleet import tokens
from camfleet_dev.testbed.process import ManagedProcess, free_port, free_udp_port, http_ok
from camfleet_dev.testbed.tools import tool


class LiveKitServer:
    """Single node, no Redis; HTTP/WS, RTC TCP and one muxed RTC UDP port, all on 127.0.0.1.

    The API secret is random (32+ characters, as livekit-server asks outside --dev) unless given;
    ``webhook_urls`` makes the server post room/participant events there.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        api_key: str = "camfleet",
        api_secret: str | None = None,
        webhook_urls: list[str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.rtc_tcp_port = free_port()
        self.rtc_udp_port = free_udp_port()
        self.api_key = api_key
        self.api_secret = api_secret or secrets.token_hex(24)
        self.webhook_urls = webhook_urls or []
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, room: str, identity: str, *, publish: bool = False) -> str:
        """A token for ``room``: a publisher that may set its own attributes (as the operator
        mints for an ingest), or a subscribe-only viewer."""
        grants = tokens.publisher_grants(room) if publish else tokens.subscriber_grants(room)
        return tokens.mint(
            self.api_key, self.api_secret, identity=identity, grants=grants, ttl=timedelta(hours=6)
        )

    def config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "port": self.port,
            "bind_addresses": ["127.0.0.1"],
            "rtc": {
                "tcp_port": self.rtc_tcp_port,
                "udp_port": self.rtc_udp_port,
                "use_external_ip": False,
                "enable_loopback_candidate": True,
            },
            "keys": {self.api_key: self.api_secret},
            "logging": {"json": True, "level": "info"},
            "room": {"empty_timeout": 300, "departure_timeout": 20},
        }
        if self.webhook_urls:
            config["webhook"] = {"api_key": self.api_key, "urls": self.webhook_urls}
        return config

    def start(self) -> None:
        """Start (or restart on the same ports with the same keys)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.state_dir / "livekit.yaml"
        config_path.write_text(yaml.safe_dump(self.config()))
        config_path.chmod(0o600)
        self.proc = ManagedProcess(
            "livekit-server",
            [tool("livekit-server"), "--config", str(config_path), "--node-ip", "127.0.0.1"],
            log_dir=self.state_dir / "logs",
        )
        self.proc.start()
        self.proc.wait_until(lambda: http_ok(self.http_url), 30, "HTTP ready")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> LiveKitServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
