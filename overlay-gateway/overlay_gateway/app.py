"""The gateway application factory: `init_app(settings)` → aiohttp app with its resources.

Resources live in `cleanup_ctx` (created at start-up, disposed at clean-up, in reverse order);
nothing is global, so tests can run several gateways (replicas) in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from overlay_gateway import keys
from overlay_gateway.admission import Admission, AdmissionSite
from overlay_gateway.auth import (
    Authenticator,
    Authorizer,
    KubernetesTokenAuthenticator,
    ProxyAuthenticator,
    StaticTokenAuthenticator,
)
from overlay_gateway.broker import Broker, connect
from overlay_gateway.channel import Channels
from overlay_gateway.freshness import Freshness
from overlay_gateway.history import History
from overlay_gateway.history_api import setup_history_routes
from overlay_gateway.hub import Hub
from overlay_gateway.kube import KubeClient, KubeConfig
from overlay_gateway.metrics import Metrics
from overlay_gateway.recordings import Recordings, S3Signer
from overlay_gateway.routes import WS_PATH, setup_routes
from overlay_gateway.settings import AuthMode, Settings
from overlay_gateway.snapshot_api import setup_snapshot_routes

log = logging.getLogger(__name__)


def init_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=64 * 1024, middlewares=[admit_requests])
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics = Metrics()
    app[keys.HUB] = hub = Hub(metrics)
    app[keys.FRESHNESS] = Freshness(hub, metrics.registry, settings.overlay_stale_seconds)
    app[keys.ADMISSION] = admission = Admission(
        settings.handshake_timeout_seconds, settings.max_connections, metrics
    )
    admission.websockets = lambda: len(app[keys.HUB].connections)
    app[keys.CHANNELS] = Channels(settings.heartbeat_seconds, metrics)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_kube_ctx)
    app.cleanup_ctx.append(_history_ctx)
    app.on_shutdown.append(_close_clients)
    app.on_cleanup.append(_close_admission)
    setup_routes(app)
    setup_history_routes(app)
    setup_snapshot_routes(app)
    return app


@web.middleware
async def admit_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request's headers are in: its connection is past the handshake (/ws: once upgraded)."""
    admission = request.app[keys.ADMISSION]
    if request.path != WS_PATH:
        admission.admit(request.protocol)
    try:
        return await handler(request)
    finally:
        admission.admit(request.protocol)


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    client = connect(
        settings.redis_url.get_secret_value(),
        # Named, so that CLIENT LIST tells the gateway's connections from the others.
        client_name="camfleet-gateway",
        # Readers hold a connection in XREAD BLOCK: the socket timeout must outlast the block.
        socket_timeout=settings.xread_block_ms / 1000 + 5,
        socket_connect_timeout=2,
        # Readers own the retry policy (backoff, degraded status); no hidden retries below.
        retry=Retry(NoBackoff(), 0),
    )
    broker = Broker(
        client,
        app[keys.FRESHNESS],  # records each camera's last event, then the hub fans it out
        app[keys.METRICS],
        xread_block_ms=settings.xread_block_ms,
        xread_count=settings.xread_count,
        xread_gather=settings.xread_gather_ms / 1000,
        backoff_initial=settings.redis_backoff_initial_seconds,
        backoff_max=settings.redis_backoff_max_seconds,
        linger=settings.reader_linger_seconds,
        streams_per_reader=settings.streams_per_reader,
        idle_seconds=settings.redis_idle_seconds,
    )
    app[keys.REDIS] = client
    app[keys.BROKER] = broker
    yield
    await broker.close()
    await client.aclose()


async def _history_ctx(app: web.Application) -> AsyncIterator[None]:
    """The history pool, opened without waiting: PostgreSQL being down must not stop live."""
    settings = app[keys.SETTINGS]
    dsn = (
        settings.postgres_dsn_file.read_text().strip()
        if settings.postgres_dsn_file is not None
        else settings.postgres_dsn.get_secret_value()
        if settings.postgres_dsn is not None
        else None
    )
    history = (
        History(
            dsn,
            pool_size=settings.history_pool_size,
            statement_timeout_ms=settings.history_statement_timeout_ms,
        )
        if dsn
        else None
    )
    app[keys.HISTORY] = history
    app[keys.RECORDINGS] = recordings(settings, history)
    if history is not None:
        await history.open()
    yield
    if history is not None:
        await history.close()


def recordings(settings: Settings, history: History | None) -> Recordings | None:
    """Playback needs the index (the history database) and an S3 store to sign URLs for."""
    if history is None or settings.recording_store_url is None:
        return None
    secret = (
        settings.recording_s3_secret_access_key_file.read_text().strip()
        if settings.recording_s3_secret_access_key_file is not None
        else settings.recording_s3_secret_access_key.get_secret_value()
        if settings.recording_s3_secret_access_key is not None
        else None
    )
    if settings.recording_s3_access_key_id is None or secret is None:
        raise ValueError("recording_store_url needs the S3 access key id and secret to sign with")
    signer = S3Signer(
        settings.recording_store_url,
        endpoint=settings.recording_s3_public_endpoint,
        region=settings.recording_s3_region,
        access_key_id=settings.recording_s3_access_key_id.get_secret_value(),
        secret_access_key=secret,
        ttl=timedelta(seconds=settings.recording_url_ttl_seconds),
    )
    return Recordings(history, signer)


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
        not_found_seconds=settings.camera_not_found_cache_seconds,
    )
    yield
    if kube is not None:
        await kube.close()


async def _close_admission(app: web.Application) -> None:
    app[keys.ADMISSION].close()
    app[keys.CHANNELS].stop()


async def _close_clients(app: web.Application) -> None:
    """Graceful shutdown: 1001 GOING_AWAY to every client, within the grace period."""
    # No event frame may follow a close frame: take every connection off the fan-out first.
    for conn in list(app[keys.HUB].connections):
        conn.close()
    channels = app[keys.CHANNELS]
    if not channels:
        return
    log.info("closing client connections", extra={"count": len(channels)})
    grace = app[keys.SETTINGS].shutdown_grace_seconds
    if not await channels.close_all(WSCloseCode.GOING_AWAY, "server shutting down", grace):
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

    As `web.run_app`, with the admission site: on_shutdown closes clients with 1001,
    cleanup_ctx disposes.
    """
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    tune_gc()
    main = loop.create_task(_serve(app, settings))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def start_site(
    app: web.Application, settings: Settings, host: str, port: int, *, handle_signals: bool
) -> web.AppRunner:
    runner = web.AppRunner(
        app,
        handle_signals=handle_signals,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
        keepalive_timeout=75.0,  # web.run_app's default (a bare AppRunner keeps idle ones 1 h)
    )
    await runner.setup()
    site = AdmissionSite(runner, app[keys.ADMISSION], host, port, backlog=settings.listen_backlog)
    await site.start()
    return runner


async def _serve(app: web.Application, settings: Settings) -> None:
    runner = await start_site(app, settings, settings.host, settings.port, handle_signals=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
