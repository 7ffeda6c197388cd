"""JSON log lines for every camfleet process: one object per line, ``extra=`` fields included.

The ingest adds a redaction pass (its secrets, JWTs, URL userinfo) through ``redact``; the other
processes log nothing secret to begin with.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

# Attributes every LogRecord has; anything else was passed in ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _rfc3339(created: float) -> str:
    """UTC with milliseconds and a ``Z``: 2026-11-26T14:22:06.036Z."""
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class JsonFormatter(logging.Formatter):
    def __init__(
        self,
        redact: Callable[[str], str] | None = None,
        static: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.redact = redact
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str).decode()
        return self.redact(line) if self.redact else line


def setup_logging(
    level: str | int = "INFO",
    *,
    stream: TextIO | None = None,
    redact: Callable[[str], str] | None = None,
    static: Mapping[str, str] | None = None,
) -> None:
    """Route the root logger to ``stream`` (stderr by default) as JSON; idempotent."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact, static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
