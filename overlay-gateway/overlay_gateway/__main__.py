"""`python -m overlay_gateway`: settings from the environment, JSON logs, uvloop if present."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web
from pydantic import ValidationError

from overlay_gateway.app import init_app
from overlay_gateway.logs import configure
from overlay_gateway.settings import Settings

log = logging.getLogger("overlay_gateway")


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level)
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    app = init_app(settings)
    log.info("starting overlay gateway", extra={"host": settings.host, "port": settings.port})
    # run_app handles SIGTERM/SIGINT: on_shutdown closes clients with 1001, cleanup_ctx disposes.
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
