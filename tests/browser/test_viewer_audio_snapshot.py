"""Audio and snapshots on the viewer's tiles, in real headless Chromium.

The test camera's `h264-aac` variant → `camfleet-ingest` (audio auto, snapshot address
announced) → livekit-server → the page; the gateway fetches the ingest's snapshot for the tile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser, Page
from test_viewer_page import open_signed_in, poll, stats
from viewer_stack import ViewerStack

from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def av_stack(
    kube: KubeCluster,
    camera_crd: Path,
    redis_server: RedisServer,
    livekit_server: LiveKitServer,
    rtsp_camera: RtspCamera,
    testbed_dir: Path,
) -> AsyncIterator[ViewerStack]:
    stack = ViewerStack(
        kube,
        redis_server,
        livekit_server,
        rtsp_camera,
        testbed_dir / "viewer-av",
        clip="h264-aac",
        ingest_env={
            "CAMFLEET_INGEST_AUDIO": "auto",
            "CAMFLEET_INGEST_ADVERTISE_HOST": "127.0.0.1",
        },
        with_worker=False,
    )
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()


async def audio_stats(page: Page, camera: str) -> dict[str, Any]:
    result: dict[str, Any] | None = await page.evaluate(
        "c => window.camfleetViewer.audioStats(c)", camera
    )
    return result or {}


async def test_tile_sound_is_muted_until_unmuted(browser: Browser, av_stack: ViewerStack) -> None:
    """The camera's audio reaches the page's tile, muted, with a control to unmute it.

    Playout and the A/V offset in Chromium: test_viewer_av_sync.py (a browser with an audio
    output device).
    """
    page = await open_signed_in(browser, av_stack, "viewer")
    camera = av_stack.camera
    try:
        s = await poll(
            lambda: stats(page, camera),
            lambda s: s.get("framesDisplayed", 0) > 10 and s["sound"]["track"],
            30,
            "video and audio on the tile",
        )
        assert s["sound"] == {"track": True, "button": True, "label": "Unmute", "muted": True}
        first = await audio_stats(page, camera)
        assert first.get("kind") == "audio"
        await poll(
            lambda: audio_stats(page, camera),
            lambda r: r.get("packetsReceived", 0) > first.get("packetsReceived", 0) + 50,
            10,
            "Opus packets arriving (50 per second)",
        )
        tile = page.locator(f'article.tile[data-camera="{camera}"]')
        await tile.locator("button.sound").click()
        s = await stats(page, camera)
        assert s["sound"]["muted"] is False
        assert s["sound"]["label"] == "Mute"
        assert await tile.get_attribute("aria-pressed") == "false", "the click must not enlarge"
        await tile.locator("button.sound").click()
        assert (await stats(page, camera))["sound"]["muted"] is True
    finally:
        await page.context.close()


async def test_tile_shows_the_snapshot_before_the_video_and_the_last_one_after(
    browser: Browser, av_stack: ViewerStack
) -> None:
    page = await open_signed_in(browser, av_stack, "viewer")
    camera = av_stack.camera
    try:
        s = await poll(
            lambda: stats(page, camera),
            lambda s: s.get("firstFrameAt") is not None and s["still"]["loads"] >= 1,
            30,
            "a still and the video",
        )
        still = s["still"]
        assert still["firstShownAt"] is not None, "the still was never on screen"
        assert still["firstShownAt"] < s["firstFrameAt"], f"still after the video: {s}"
        assert still["live"] is True
        assert time.time() * 1000 - still["takenAt"] < 10_000
        await poll(lambda: stats(page, camera), lambda s: not s["still"]["shown"], 5, "video over")
    finally:
        await page.context.close()

    # The camera's ingest stops (an on-demand camera nobody watches): a new page shows the last
    # known still with its age, from the gateway's Redis copy.
    assert av_stack.ingest is not None
    await asyncio.to_thread(av_stack.ingest.stop, 5.0)
    await asyncio.sleep(5.5)  # past the gateway's refresh period: the still is no longer "live"
    page = await open_signed_in(browser, av_stack, "viewer")
    try:
        s = await poll(
            lambda: stats(page, camera),
            lambda s: s["still"]["shown"] and s["still"]["age"],
            15,
            "the last known still",
        )
        assert s["still"]["live"] is False
        assert s["still"]["age"].startswith("Still · ")
        assert s["still"]["age"].endswith("ago")
        assert s["framesDisplayed"] == 0
    finally:
        await page.context.close()
