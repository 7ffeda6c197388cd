"""The gateway application factory: `init_app(settings)` → aiohttp app with its resources.

Resources live in `cleanup_ctx` (created at start-up, disposed at clean-up, in reverse order);
nothing is global, so tests can run several gateways (replicas) in one process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import WSCloseCode, web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from overlay_gateway import keys
from overlay_gateway.auth import (
    Authenticator,
    Authorizer,
    KubernetesTokenAuthenticator,
    ProxyAuthenticator,
    StaticTokenAuthenticator,
)
from overlay_gateway.broker import Broker
from overlay_gateway.hub import Hub
from overlay_gateway.kube import KubeClient, KubeConfig
from overlay_gateway.metrics import Metrics
from overlay_gateway.routes import setup_routes
from overlay_gateway.settings import AuthMode, Settings

log = logging.getLogger(__name__)


def init_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics = Metrics()
    app[keys.HUB] = Hub(metrics)
    app[keys.SESSIONS] = set()
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_kube_ctx)
    app.on_shutdown.append(_close_clients)
    setup_routes(app)
    return app


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    client = aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        # Readers hold a connection in XREAD BLOCK: the socket timeout must outlast the block.
        socket_timeout=settings.xread_block_ms / 1000 + 5,
        socket_connect_timeout=2,
        # Readers own the retry policy (backoff, degraded status); no hidden retries below.
        retry=Retry(NoBackoff(), 0),
    )
    broker = Broker(
        client,
        app[keys.HUB],
        app[keys.METRICS],
        xread_block_ms=settings.xread_block_ms,
        xread_count=settings.xread_count,
        backoff_initial=settings.redis_backoff_initial_seconds,
        backoff_max=settings.redis_backoff_max_seconds,
        linger=settings.reader_linger_seconds,
        streams_per_reader=settings.streams_per_reader,
    )
    app[keys.REDIS] = client
    app[keys.BROKER] = broker
    yield
    await broker.close()
    await client.aclose()


async def _kube_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    kube = (
        KubeClient.create(KubeConfig.load(settings.kubeconfig)) if settings.kube_enabled else None
    )
    app[keys.KUBE] = kube
    authenticators: list[Authenticator] = []
    for mode in settings.auth_modes:
        if mode is AuthMode.KUBERNETES and kube is not None:
            authenticators.append(KubernetesTokenAuthenticator(kube, settings.authn_cache_seconds))
        elif mode is AuthMode.PROXY:
            authenticators.append(
                ProxyAuthenticator(
                    settings.proxy_cidrs, settings.proxy_user_header, settings.proxy_groups_header
                )
            )
        elif mode is AuthMode.STATIC and settings.static_token is not None:
            log.warning(
                "static token authentication is enabled: for local use only, every holder "
                "of the token may view every camera"
            )
            authenticators.append(
                StaticTokenAuthenticator(settings.static_token.get_secret_value())
            )
    app[keys.AUTHENTICATORS] = authenticators
    app[keys.AUTHORIZER] = Authorizer(
        kube,
        app[keys.METRICS],
        allow_seconds=settings.authz_cache_seconds,
        deny_seconds=settings.authz_deny_cache_seconds,
    )
    yield
    if kube is not None:
        await kube.close()


async def _close_clients(app: web.Application) -> None:
    """Graceful shutdown: 1001 GOING_AWAY to every client, within the grace period."""
    # No event frame may follow a close frame: take every connection off the fan-out first.
    for conn in list(app[keys.HUB].connections):
        conn.close()
    live: set[web.WebSocketResponse] = app[keys.SESSIONS]
    sessions = list(live)
    if not sessions:
        return
    log.info("closing client connections", extra={"count": len(sessions)})
    closing = [
        ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in sessions
    ]
    grace = app[keys.SETTINGS].shutdown_grace_seconds
    try:
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout=grace)
    except TimeoutError:
        log.warning("some clients did not close in time")


# A full (gen2) garbage collection scans every long-lived object, and thousands of WebSocket
# connections are hundreds of thousands of them: 150-165 ms pauses at 2,000 connections, three
# in 20 s of the fan-out benchmark (docs/benchmarks.md). Young collections stay as they are;
# full ones wait for 100x more young ones (minutes, not seconds).
FULL_GC_AFTER_GEN1 = 1000


def tune_gc() -> None:
    """Freeze what start-up made (never garbage, never worth a scan) and space full GCs out."""
    gc.collect()
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, FULL_GC_AFTER_GEN1)


def serve(app: web.Application, settings: Settings) -> None:
    """Run ``app`` until SIGTERM/SIGINT, on uvloop when it is installed.

    run_app handles the signals: on_shutdown closes clients with 1001, cleanup_ctx disposes.
    """
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    tune_gc()
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
        backlog=settings.listen_backlog,
        loop=loop,
    )
