"""The viewer page in real headless Chromium, on the whole media path (see viewer_stack.py).

RTSP test camera (H.264 High 1080p25, passthrough) → `camfleet-ingest` → livekit-server →
Chromium's <video>; `examples/ai_worker.py` reads the same room, finds the moving square and
publishes its box stamped with the frame → Redis → gateway → the page's canvas.

"Frame-accurate" is checked picture by picture: the page reads the frame code burnt into each
displayed frame (the test pattern's top row) and the box it drew on that frame must be the
square of *that* frame (`pattern.square_box(code)`), within a few pixels, frame after frame —
and in a screenshot, the drawn lines must lie on the square's edges.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
import numpy.typing as npt
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page
from viewer_stack import ViewerStack

from camfleet.events import stream_key
from camfleet_dev import pattern
from camfleet_dev.testbed.tools import repo_root

T = TypeVar("T")
WIDTH, HEIGHT = 1920, 1080
TOLERANCE_PX = 4  # video pixels; the square moves ~17 px per frame horizontally
CLIP_FRAMES = 200  # the test clip's frame code loops every 200 frames
DOCS_SCREENSHOTS = os.environ.get("CAMFLEET_DOCS_SCREENSHOTS") == "1"


async def poll(
    read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float, what: str
) -> T:
    deadline = time.monotonic() + within
    value = await read()
    while not ok(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {within:.0f}s; last: {value!r:.600}")
        await asyncio.sleep(0.2)
        value = await read()
    return value


async def stats(page: Page, camera: str) -> dict[str, Any]:
    result: dict[str, Any] | None = await page.evaluate(
        "c => window.camfleetViewer.stats(c)", camera
    )
    return result or {}


async def trace(page: Page, camera: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate(
        "c => window.camfleetViewer.trace(c)", camera
    )
    return result


async def open_signed_in(
    browser: Browser, stack: ViewerStack, account: str, query: str = ""
) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    # The test hooks (window.camfleetViewer) are loaded only when the URL asks for them.
    await page.goto(f"{stack.url}/{query}{'&' if query else '?'}testhooks")
    # Kubernetes token auth: the gateway answers 401 and the page asks for a token.
    await page.wait_for_selector("#signin:not([hidden])", timeout=10_000)
    await page.fill("#token", stack.token(account))
    await page.press("#token", "Enter")
    await poll(lambda: page.evaluate("window.camfleetViewer.signedIn()"), bool, 15, "signed in")
    return page


def box_error(entry: dict[str, Any]) -> float:
    """Largest edge distance (video px) between the drawn box and the displayed frame's square."""
    drawn = entry["boxes"][0]["video"]
    x, y, w, h = pattern.square_box(entry["code"], WIDTH, HEIGHT)
    return float(
        max(
            abs(drawn["x"] - x),
            abs(drawn["y"] - y),
            abs(drawn["x"] + drawn["width"] - (x + w)),
            abs(drawn["y"] + drawn["height"] - (y + h)),
        )
    )


def exact_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["kind"] == "exact" and e["boxes"] and e["code"] is not None]


def code_offset(entries: list[dict[str, Any]]) -> int:
    """frame_id - frame code (mod the clip's length): constant for one ingest session."""
    offsets = Counter(
        (e["frameId"] - e["code"]) % CLIP_FRAMES
        for e in entries
        if e["code"] is not None and e["frameId"] is not None
    )
    return int(offsets.most_common(1)[0][0])


def check_frame_accuracy(entries: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(share of frames read consistently, share of boxes on their frame's square, best run).

    The probe reads the frame code with drawImage in the frame callback; now and then Chromium
    has already swapped in the next frame by then, and the code read is one or two ahead of
    the stamped frame. Those probe races are counted apart (their share is bounded) so that
    what remains checks the overlay itself.
    """
    offset = code_offset(entries)
    exact = exact_entries(entries)
    consistent = [e for e in exact if (e["frameId"] - e["code"]) % CLIP_FRAMES == offset]
    good = [box_error(e) <= TOLERANCE_PX for e in consistent]
    run = best = 0
    for ok in good:
        run = run + 1 if ok else 0
        best = max(best, run)
    return len(consistent) / len(exact), sum(good) / len(good), best


def decode_png(data: bytes) -> npt.NDArray[np.uint8]:
    with av.open(io.BytesIO(data), mode="r", format="png_pipe") as container:
        frame = next(container.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


async def screenshots_with_and_without_overlay(
    page: Page, camera: str, clip: dict[str, float], keep: Path
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """The stage with and without the overlay canvas (PNG files kept in `keep` for a look)."""
    canvas = f"document.querySelector(`article[data-camera='{camera}'] canvas`).style"
    shots = keep / "stage-with-boxes.png", keep / "stage-without-boxes.png"
    with_overlay = decode_png(await page.screenshot(clip=clip, path=shots[0]))  # type: ignore[arg-type]
    await page.evaluate(f"{canvas}.visibility = 'hidden'")
    without = decode_png(await page.screenshot(clip=clip, path=shots[1]))  # type: ignore[arg-type]
    await page.evaluate(f"{canvas}.visibility = ''")
    return with_overlay, without


async def test_viewer_plays_the_camera_and_draws_boxes_on_their_frame(
    browser: Browser, viewer_stack: ViewerStack, tmp_path: Path
) -> None:
    stack, camera = viewer_stack, viewer_stack.camera
    page = await open_signed_in(browser, stack, "viewer", "?probe")
    try:
        listed = await poll(
            lambda: page.evaluate("window.camfleetViewer.cameras()"), bool, 15, "camera list"
        )
        assert listed == [camera]
        tile = page.locator(f'article[data-camera="{camera}"]')
        assert await tile.locator(".phase").inner_text() == "Live"

        # Plays: Chromium decodes the camera's H.264 High stream as published (passthrough).
        first = await poll(
            lambda: stats(page, camera),
            lambda s: s.get("videoWidth", 0) > 0 and s["framesDisplayed"] > 0,
            45,
            "video playing",
        )
        assert (first["videoWidth"], first["videoHeight"]) == (WIDTH, HEIGHT)
        assert first["connection"] == "connected"
        await asyncio.sleep(1.0)
        later = await stats(page, camera)
        assert later["framesDisplayed"] >= first["framesDisplayed"] + 5, (first, later)
        # Each displayed frame is matched to its stamp from LiveKit frame metadata.
        assert later["syncMode"] == "frame"
        assert later["lastFrameId"] > first["lastFrameId"]
        assert await tile.locator(".sync").inner_text() == "Frame-accurate sync (frame metadata)"

        # Boxes on the exact frame, in the grid (16:9 tile).
        await page.evaluate("c => window.camfleetViewer.probe(c, true)", camera)
        entries = await poll(
            lambda: trace(page, camera),
            lambda t: len(exact_entries(t)) >= 40,
            45,
            "40 frames with their own boxes",
        )
        consistent, share, run = check_frame_accuracy(entries)
        assert consistent >= 0.8, f"probe read {consistent:.0%} of frame codes consistently"
        assert share >= 0.98, f"only {share:.0%} of boxes on their frame's square"
        assert run >= 10, f"longest run of frame-accurate boxes: {run}"
        moved = {pattern.square_box(e["code"], WIDTH, HEIGHT)[:2] for e in exact_entries(entries)}
        assert len(moved) >= 10, "the square should move between the frames checked"
        await page.screenshot(path=str(tmp_path / "viewer-grid.png"))

        # Enlarged with the keyboard: a letterboxed stage of another aspect ratio.
        await tile.focus()
        await page.keyboard.press("Enter")
        assert await tile.get_attribute("aria-pressed") == "true"
        await asyncio.sleep(0.5)
        stage = await tile.locator(".stage").bounding_box()
        assert stage is not None
        scale = min(stage["width"] / WIDTH, stage["height"] / HEIGHT)
        off_x = stage["x"] + (stage["width"] - WIDTH * scale) / 2
        off_y = stage["y"] + (stage["height"] - HEIGHT * scale) / 2
        assert off_x - stage["x"] > 10, "the enlarged stage should be pillarboxed"
        await page.evaluate("c => window.camfleetViewer.probe(c, true)", camera)
        entries = await poll(
            lambda: trace(page, camera),
            lambda t: len(exact_entries(t)) >= 20,
            30,
            "20 frames with boxes, enlarged",
        )
        offset = code_offset(entries)
        consistent, share, _ = check_frame_accuracy(entries)
        assert consistent >= 0.8
        assert share >= 0.98
        for entry in exact_entries(entries):
            if (entry["frameId"] - entry["code"]) % CLIP_FRAMES != offset:
                continue  # a probe race (see check_frame_accuracy)
            x, y, w, _h = pattern.square_box(entry["code"], WIDTH, HEIGHT)
            css = entry["boxes"][0]["css"]
            assert abs(css["x"] - (off_x + x * scale)) <= 3, (css, stage)
            assert abs(css["y"] - (off_y + y * scale)) <= 3, (css, stage)
            assert abs(css["width"] - w * scale) <= 3

        # Screenshot check: frozen on one frame, the square in the picture without the overlay
        # and the box's lines in the picture with it must coincide. A paused <video> may show a
        # newer frame than its last frame callback said (the compositor does not wait for the
        # page), so the frame is named by the code read in the picture itself.
        clip = {k: stage[k] for k in ("x", "y", "width", "height")}
        cx, cy = round(off_x - stage["x"]), round(off_y - stage["y"])
        cw, ch = round(WIDTH * scale), round(HEIGHT * scale)
        for _attempt in range(10):
            frozen_id = await page.evaluate("c => window.camfleetViewer.freeze(c, true)", camera)
            await asyncio.sleep(0.2)
            _, bare = await screenshots_with_and_without_overlay(page, camera, clip, tmp_path)
            code = pattern.read_code(bare[cy : cy + ch, cx : cx + cw])
            delta = (code + offset - frozen_id) % CLIP_FRAMES
            shown_id = frozen_id + (delta if delta < CLIP_FRAMES // 2 else delta - CLIP_FRAMES)
            kind = await page.evaluate(
                "([c, f]) => window.camfleetViewer.drawFor(c, f)", [camera, shown_id]
            )
            if kind == "exact":
                break
            # The AI worker skipped that frame: try another one.
            await page.evaluate("c => window.camfleetViewer.freeze(c, false)", camera)
            await asyncio.sleep(0.3)
        else:
            raise AssertionError("could not freeze on a frame the AI worker analysed")
        shot, bare = await screenshots_with_and_without_overlay(page, camera, clip, tmp_path)
        square = pattern.find_square(bare)
        assert square is not None, "the square should be visible in the screenshot"
        sx, sy, sw, sh = square
        lines = np.abs(shot.astype(np.int16) - bare.astype(np.int16)).sum(axis=2) > 90
        band = lines[sy + sh // 3 : sy + 2 * sh // 3]  # the box's sides, away from its label
        cols = np.flatnonzero(band.any(axis=0))
        assert cols.size, "no box drawn over the square"
        assert abs(int(cols.min()) - sx) <= 3, (cols.min(), square)
        assert abs(int(cols.max()) - (sx + sw - 1)) <= 3, (cols.max(), square)
        column = lines[:, sx + sw // 3 : sx + 2 * sw // 3]
        rows = np.flatnonzero(column.any(axis=1))
        assert abs(int(rows.max()) - (sy + sh - 1)) <= 3, (rows.max(), square)
        await page.evaluate("c => window.camfleetViewer.freeze(c, false)", camera)
        if DOCS_SCREENSHOTS:  # the README's pictures, refreshed on request
            for name, enlarged in (("viewer.png", None), ("viewer-enlarged.png", camera)):
                await page.evaluate("c => window.camfleetViewer.enlarge(c)", enlarged)
                await asyncio.sleep(2.0)
                await poll(
                    lambda: stats(page, camera),
                    lambda s: (s.get("lastDrawn") or {}).get("kind") == "exact",
                    10,
                    "an exact frame",
                )
                await page.screenshot(path=str(repo_root() / "docs" / "img" / name))
    finally:
        await page.context.close()


async def test_the_product_page_loads_no_test_hooks(
    browser: Browser, viewer_stack: ViewerStack
) -> None:
    stack = viewer_stack
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        await page.goto(f"{stack.url}/")
        await page.wait_for_selector("#signin:not([hidden])", timeout=10_000)
        await page.fill("#token", stack.token("viewer"))
        await page.press("#token", "Enter")
        await page.wait_for_selector("article.tile", timeout=15_000)
        await poll(
            lambda: page.locator("#socket").get_attribute("data-state"),
            lambda state: state == "open",
            15,
            "overlay socket open",
        )
        assert await page.evaluate("typeof window.camfleetViewer") == "undefined"
        assert not [url for url in requested if "testhooks" in url]
        assert any(url.endswith("/static/favicon.svg") for url in requested)
    finally:
        await context.close()


async def test_viewer_without_access_sees_nothing(
    browser: Browser, viewer_stack: ViewerStack
) -> None:
    stack, camera = viewer_stack, viewer_stack.camera
    page = await open_signed_in(browser, stack, "outsider")
    try:
        assert await page.evaluate("window.camfleetViewer.cameras()") == []
        await poll(
            lambda: page.locator("#status").inner_text(),
            lambda t: "No cameras" in t,
            5,
            "empty list message",
        )
        assert await page.locator("article.tile").count() == 0
        status = await page.evaluate(
            """async ([camera, token]) => (await fetch('/api/token', {
                 method: 'POST', body: JSON.stringify({camera}),
                 headers: {'Content-Type': 'application/json', Authorization: `Bearer ${token}`},
               })).status""",
            [camera, stack.token("outsider")],
        )
        assert status == 403
        # The same subscription from the outsider and (control) the viewer, side by side.
        seen = await page.evaluate(
            """async ([camera, tokens]) => {
                 const listen = (token) => new Promise((resolve) => {
                   const b64 = btoa(token).replace(/\\+/g, '-').replace(/\\//g, '_')
                     .replace(/=+$/, '');
                   const ws = new WebSocket(`ws://${location.host}/ws`,
                     ['camfleet.v1', `base64url.bearer.authorization.k8s.io.${b64}`]);
                   const got = [];
                   const subscribe = {type: 'subscribe', cameras: [camera]};
                   ws.onopen = () => ws.send(JSON.stringify(subscribe));
                   ws.onmessage = (m) => got.push(JSON.parse(m.data));
                   setTimeout(() => { ws.close(); resolve(got); }, 3000);
                 });
                 return Promise.all(tokens.map(listen));
               }""",
            [camera, [stack.token("outsider"), stack.token("viewer")]],
        )
        outsider, viewer = seen
        assert not [m for m in outsider if m["type"] == "event"]
        errors = [m for m in outsider if m["type"] == "error"]
        assert [(m["code"], m["camera"]) for m in errors] == [("forbidden", camera)]
        assert len([m for m in viewer if m["type"] == "event"]) >= 10, "control: viewer gets events"
    finally:
        await page.context.close()


async def test_time_based_fallback_says_so_and_still_draws(
    browser: Browser, viewer_stack: ViewerStack
) -> None:
    """Where frames carry no usable stamp (Firefox: no rtpTimestamp) boxes follow the clock.

    Forced here with `?sync=time` in Chromium: the page must say so on the tile and still draw
    the worker's boxes near the square (approximate: a few frames of motion).
    """
    stack, camera = viewer_stack, viewer_stack.camera
    page = await open_signed_in(browser, stack, "viewer", "?sync=time")
    try:
        drawn = await poll(
            lambda: stats(page, camera),
            lambda s: s.get("syncMode") == "time-forced" and bool(s.get("lastDrawn")),
            45,
            "boxes drawn by time",
        )
        tile = page.locator(f'article[data-camera="{camera}"]')
        await poll(
            lambda: tile.locator(".sync").inner_text(),
            lambda text: "Time-based sync" in text,
            5,
            "the tile saying so",
        )
        assert drawn["drift"]["frames"] == 0  # no per-frame stamps, so no frame drift claimed
        box = drawn["lastDrawn"]["boxes"][0]["video"]
        assert (box["width"], box["height"]) == (
            pytest.approx(160, abs=4),
            pytest.approx(160, abs=4),
        )
    finally:
        await page.context.close()


async def test_overlays_resume_without_a_gap_after_a_network_cut(
    browser: Browser, viewer_stack: ViewerStack
) -> None:
    stack, camera = viewer_stack, viewer_stack.camera
    assert stack.proxy is not None
    page = await open_signed_in(browser, stack, "viewer")
    try:
        await poll(
            lambda: stats(page, camera),
            lambda s: s.get("eventsReceived", 0) >= 25 and bool(s.get("lastDrawn")),
            45,
            "overlays flowing",
        )
        before = await stats(page, camera)
        cut_ms = time.time() * 1000
        stack.proxy.cut()
        await asyncio.sleep(5.0)
        during = await stats(page, camera)
        socket = await page.evaluate("window.camfleetViewer.socket()")
        assert socket["state"] != "open"
        # Video is WebRTC straight from LiveKit: the cut only takes the overlays' socket.
        assert during["framesDisplayed"] > before["framesDisplayed"] + 25
        restore_ms = time.time() * 1000
        stack.proxy.restore()
        await poll(
            lambda: stats(page, camera),
            lambda s: s["eventsReceived"] > during["eventsReceived"] + 50,
            30,
            "events again after the cut",
        )
        socket = await page.evaluate("window.camfleetViewer.socket()")
        assert socket["connects"] >= 2
        assert not socket["gaps"].get(camera), "the gateway reported a replay gap"
        ids: list[str] = await page.evaluate("c => window.camfleetViewer.eventIds(c)", camera)
        client = aioredis.Redis.from_url(stack.redis.url)
        try:
            stored = await client.xrange(stream_key(camera), min=ids[0], max=ids[-1])
        finally:
            await client.aclose()
        expected = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw, _ in stored or []]
        assert ids == expected, f"{len(set(expected) - set(ids))} events missing"
        # Stream ids start with the publish time (ms): these were published while cut off.
        missed = [i for i in ids if cut_ms + 500 < int(i.split("-")[0]) < restore_ms - 500]
        assert len(missed) >= 20, f"only {len(missed)} events published during the cut?"
        # And boxes are drawn again on their frames.
        await poll(
            lambda: stats(page, camera),
            lambda s: (s.get("lastDrawn") or {}).get("kind") == "exact",
            10,
            "boxes drawn on their frame again",
        )
    finally:
        await page.context.close()


async def test_video_resumes_by_itself_after_livekit_server_restarts(
    browser: Browser, viewer_stack: ViewerStack
) -> None:
    """Last in this module: it restarts the session's livekit-server (same ports and keys)."""
    stack, camera = viewer_stack, viewer_stack.camera
    page = await open_signed_in(browser, stack, "viewer")
    try:
        await poll(
            lambda: stats(page, camera),
            lambda s: s.get("framesDisplayed", 0) > 10,
            45,
            "video playing",
        )
        await asyncio.to_thread(stack.livekit.stop)
        await asyncio.sleep(1.0)
        stopped = await stats(page, camera)
        await asyncio.to_thread(stack.livekit.start)
        # The ingest republishes (its own backoff), the page rejoins with a fresh token.
        resumed = await poll(
            lambda: stats(page, camera),
            lambda s: (
                s["connection"] == "connected"
                and s["framesDisplayed"] > stopped["framesDisplayed"] + 25
            ),
            90,
            "video playing again",
        )
        assert resumed["videoWidth"] == WIDTH
        assert resumed["syncMode"] == "frame"
        await poll(
            lambda: stats(page, camera),
            lambda s: (s.get("lastDrawn") or {}).get("kind") == "exact",
            30,
            "boxes on their frame again (the AI worker rejoined too)",
        )
    finally:
        await page.context.close()
