"""What the real-node tests share beyond camfleet_dev.testbed.release: waiting for things."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from camfleet_dev.testbed.release import (
    CAMERAS_NS,
    INFRA_NS,
    LIVEKIT_KEY,
    RELEASE_NS,
    Infra,
    Release,
    get_json,
)

__all__ = [
    "CAMERAS_NS",
    "INFRA_NS",
    "LIVEKIT_KEY",
    "RELEASE_NS",
    "VIEWER_TOKEN",
    "Infra",
    "Release",
    "get_json",
    "wait_for",
]

VIEWER_TOKEN = "node-viewer-" + secrets.token_hex(8)


def wait_for(check: Callable[[], Any], within: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {within:.0f}s; last: {last!r:.800}")
