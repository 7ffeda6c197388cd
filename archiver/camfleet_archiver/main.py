"""The archiver process: migrate, then archive until SIGTERM; `/healthz` and `/metrics`.

Maintenance (partitions ahead, retention, per-camera sizes) runs on a timer; only one replica at
a time applies retention (an advisory try-lock), every replica may create partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

import psycopg
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from camfleet.jsonlog import setup_logging
from camfleet_archiver.archive import Archiver
from camfleet_archiver.cameras import CameraRetention
from camfleet_archiver.metrics import Metrics
from camfleet_archiver.retention import Policy, enforce, ensure_ahead, measure
from camfleet_archiver.schema import migrate
from camfleet_archiver.settings import Settings

log = logging.getLogger("camfleet_archiver")


class Service:
    """The archiver and its maintenance, as one start/stop unit (main and tests)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.redis = aioredis.Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_timeout=settings.block_ms / 1000 + 10,
            socket_connect_timeout=2,
        )
        self.archiver = Archiver(settings, self.redis, self.metrics, settings.dsn)
        self.kube: CameraRetention | None = None
        self._maintenance: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.settings.migrate:
            await asyncio.to_thread(self._migrate_retrying)
        if self.settings.kube_enabled:
            self.kube = kube = await CameraRetention.connect(self.settings.kubeconfig)
            consumer = self.settings.consumer

            async def behind(camera: str, backlog: int, length: int) -> None:
                await kube.warn_behind(camera, backlog, length, consumer)

            self.archiver.on_behind = behind
        await self.archiver.start()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    def _migrate_retrying(self) -> None:
        delay = self.settings.backoff_initial_seconds
        while True:
            try:
                migrate(self.settings.dsn())
                return
            except psycopg.OperationalError as exc:
                log.warning("PostgreSQL unavailable for migrations", extra={"error": str(exc)})
                time.sleep(delay)
                delay = min(delay * 2, self.settings.backoff_max_seconds)

    async def policy(self) -> Policy:
        default = self.settings.default_retention
        if self.kube is None:
            return Policy(default)
        return await self.kube.policy(default)

    async def maintain_once(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.settings.dsn(), autocommit=True
        ) as conn:
            await ensure_ahead(conn, self.settings.partitions_ahead_days)
            result = await enforce(conn, await self.policy(), self.metrics)
            if result.ran:
                await measure(conn, self.metrics)

    async def _maintain(self) -> None:
        every = min(self.settings.retention_every_seconds, self.settings.size_every_seconds)
        while True:
            try:
                await self.maintain_once()
            except Exception as exc:  # a maintenance failure must not stop archiving
                self.metrics.postgres_errors.inc()
                log.warning("maintenance failed", extra={"error": str(exc)})
            await asyncio.sleep(every)

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.archiver.close()
        if self.kube is not None:
            await self.kube.close()
        await self.redis.aclose()


def http_app(service: Service) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "streams": len(service.archiver.streams),
                "lastProgressSecondsAgo": round(
                    time.monotonic() - service.archiver.last_progress, 1
                ),
            }
        )

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(service.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; a shutdown that does not finish in time exits the process."""
    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(http_app(service), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("starting archiver", extra={"consumer": settings.consumer, "group": settings.group})
    await service.start()
    await stop.wait()
    log.info("stopping archiver")
    try:
        # A COPY in flight is cancelled (rolled back, its entries stay pending for a claim);
        # waiting on a stuck server must not outlast the pod's grace period.
        await asyncio.wait_for(service.close(), timeout=10)
    except TimeoutError:
        log.warning("archiver did not stop cleanly within 10 s; exiting anyway")
        logging.shutdown()
        # Nothing uncommitted was acknowledged: what was in flight is claimed by a replica.
        os._exit(1)
    await runner.cleanup()


def run() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, stream=sys.stdout)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0
