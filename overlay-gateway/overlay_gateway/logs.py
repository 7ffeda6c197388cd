"""JSON logs on stdout (the shared formatter of every camfleet process)."""

from __future__ import annotations

import sys

from camfleet.jsonlog import JsonFormatter, setup_logging

__all__ = ["JsonFormatter", "configure"]


def configure(level: str = "INFO") -> None:
    setup_logging(level, stream=sys.stdout)
