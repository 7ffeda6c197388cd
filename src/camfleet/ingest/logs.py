"""JSON logs, one object per line, with secrets scrubbed on the way out.

Scrubbing is the last line of defence: code never formats a credential on purpose, but the
LiveKit SDK echoes a refused token in its own error logs and FFmpeg puts URLs (with userinfo)
into its messages, so every record passes through ``Redactor`` before it is written.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
_USERINFO = re.compile(r"(\w+://)[^/@\s:]*(:[^/@\s]*)?@")
# LogRecord attributes that are not user "extra" fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class Redactor:
    """Replaces known secrets, JWTs and URL userinfo with ``***``."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 3:  # a 1-2 character "secret" would shred every line
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _JWT.sub("***", text)
        return _USERINFO.sub(r"\1***@", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor, static: dict[str, str]) -> None:
        super().__init__()
        self.redact = redact
        self.static = static

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(data, default=str).decode()
        return self.redact(line)


def configure(level: str, redact: Redactor, static: dict[str, str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact, static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDK's INFO chatter (ICE, signalling) drowns the ingest's own lines.
    logging.getLogger("livekit").setLevel(max(logging.WARNING, root.level))
