"""`python -m overlay_gateway`: settings from the environment, JSON logs, uvloop if present."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from overlay_gateway.app import init_app, serve
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
    app = init_app(settings)
    log.info("starting overlay gateway", extra={"host": settings.host, "port": settings.port})
    serve(app, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
