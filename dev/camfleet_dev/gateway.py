"""Run a gateway in-process on a free loopback port (tests, benchmarks, local tinkering).

Development kit, not the gateway package: nothing shipped in the gateway image needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from overlay_gateway import keys
from overlay_gateway.app import init_app, start_site
from overlay_gateway.hub import Hub
from overlay_gateway.metrics import Metrics
from overlay_gateway.settings import Settings


@dataclass
class RunningGateway:
    app: web.Application
    runner: web.AppRunner
    url: str  # http://127.0.0.1:PORT

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    @property
    def hub(self) -> Hub:
        return self.app[keys.HUB]

    @property
    def metrics(self) -> Metrics:
        return self.app[keys.METRICS]

    async def stop(self) -> None:
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def run_gateway(settings: Settings, host: str = "127.0.0.1") -> AsyncIterator[RunningGateway]:
    app = init_app(settings)
    runner = await start_site(app, settings, host, 0, handle_signals=False)
    port = runner.addresses[0][1]  # the port the OS picked for port 0
    gateway = RunningGateway(app, runner, f"http://{host}:{port}")
    try:
        yield gateway
    finally:
        await runner.cleanup()
