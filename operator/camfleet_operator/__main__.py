"""`python -m camfleet_operator`: run the operator with settings from `CAMFLEET_*` env."""

import asyncio
import logging
import sys

import kopf
from pydantic import ValidationError

from camfleet_operator.context import Context
from camfleet_operator.main import register
from camfleet_operator.settings import Settings


def main() -> int:
    try:
        settings = Settings()  # type: ignore[call-arg]  # required fields come from env
    except ValidationError as exc:
        print(f"camfleet-operator: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    kopf.configure(
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        verbose=settings.log_level == "DEBUG",
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_refkey="object",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    register(registry, Context.create(settings))
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows)
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(
        kopf.operator(
            registry=registry,
            standalone=settings.peering_name is None,
            peering_name=settings.peering_name,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=settings.liveness_endpoint,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
