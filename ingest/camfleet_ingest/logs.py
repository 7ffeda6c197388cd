"""JSON logs, one object per line, with secrets scrubbed on the way out.

Scrubbing is the last line of defence: code never formats a credential on purpose, but the
LiveKit SDK echoes a refused token in its own error logs and FFmpeg puts URLs (with userinfo)
into its messages, so every record passes through ``Redactor`` before it is written.
"""

from __future__ import annotations

import logging
import re

from camfleet.jsonlog import setup_logging

_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
_USERINFO = re.compile(r"(\w+://)[^/@\s:]*(:[^/@\s]*)?@")


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


def configure(level: str, redact: Redactor, static: dict[str, str]) -> None:
    setup_logging(level, redact=redact, static=static)
    # The SDK's INFO chatter (ICE, signalling) drowns the ingest's own lines.
    root = logging.getLogger()
    logging.getLogger("livekit").setLevel(max(logging.WARNING, root.level))
