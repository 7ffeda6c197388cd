"""Debian's Chromium, driven by Playwright without downloading a browser of its own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from playwright.async_api import Browser, Playwright

from camfleet_dev.testbed.tools import SETUP_HINT, MissingTool

# No background traffic: this machine's network is closed, and tests talk to loopback only.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--autoplay-policy=no-user-gesture-required",
    "--force-webrtc-ip-handling-policy=default",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise MissingTool(f"chromium is not installed: {SETUP_HINT}")


async def launch_chromium(pw: Playwright, env: Mapping[str, str] | None = None) -> Browser:
    """Headless Chromium with a fresh temporary profile (Playwright makes and removes it).

    `env` is added to this process's environment for the browser, e.g. `PulseServer.env` to give
    it an audio output device.
    """
    return await pw.chromium.launch(
        executable_path=chromium_path(),
        headless=True,
        args=CHROMIUM_ARGS,
        env={**os.environ, **env} if env else None,
    )
