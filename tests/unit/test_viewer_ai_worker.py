"""The example AI worker's detector and event, and the frame helper's conversion (no servers).

The detector runs on the test pattern after a real H.264 round trip (libx264 through PyAV), as
it sees frames in the room; its box must be the square's within a couple of pixels.
"""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from types import ModuleType
from typing import Any, cast

import av
import numpy as np
import numpy.typing as npt
import pytest
from livekit import rtc

from camfleet.ai.frames import StampedFrame, to_stamped
from camfleet.events import Event
from camfleet_dev import pattern
from camfleet_dev.testbed.tools import repo_root

W, H = 1280, 720


def load_worker() -> ModuleType:
    path = repo_root() / "examples" / "ai_worker.py"
    spec = importlib.util.spec_from_file_location("camfleet_example_ai_worker", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


worker = load_worker()


def h264_round_trip(frames: list[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.uint8]]:
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = W, H, "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"preset": "ultrafast", "crf": "23", "bframes": "0"}
    decoder = av.CodecContext.create("h264", "r")
    out: list[npt.NDArray[np.uint8]] = []
    packets = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    for packet in packets:
        for decoded in decoder.decode(packet):
            out.append(np.asarray(decoded.to_ndarray(format="rgb24"), dtype=np.uint8))
    return out


def test_detector_finds_the_square_after_h264() -> None:
    codes = [0, 13, 57, 101, 150, 199]
    decoded = h264_round_trip([pattern.render(n, W, H) for n in codes])
    assert len(decoded) == len(codes)
    for n, rgb in zip(codes, decoded, strict=True):
        blobs = worker.detect(rgb)
        assert [b.label for b in blobs] == ["orange"]
        b = blobs[0]
        x, y, w, h = pattern.square_box(n, W, H)
        assert abs(b.x - x) <= 2, (n, b, (x, y, w, h))
        assert abs(b.y - y) <= 2, (n, b, (x, y, w, h))
        assert abs(b.w - w) <= 3
        assert abs(b.h - h) <= 3
        assert b.score > 0.9


def test_detector_sees_nothing_on_a_grey_scene() -> None:
    frame = pattern.render(0, W, H)
    x, y, w, h = pattern.square_box(0, W, H)
    frame[y : y + h, x : x + w] = pattern.BACKGROUND
    assert worker.detect(frame) == []


def test_event_carries_the_frame_stamp_and_validates() -> None:
    rgb = pattern.render(42, W, H)
    frame = StampedFrame(rgb, user_timestamp_us=1_700_000_000_123_456, frame_id=4242)
    event = Event.model_validate(worker.to_event("shop/door", frame, worker.detect(rgb)))
    assert (event.ts, event.frame) == (1_700_000_000_123, 4242)
    x, y, w, h = pattern.square_box(42, W, H)
    assert event.objects[0].box == pytest.approx((x / W, y / H, w / W, h / H))


def _event(frame: rtc.VideoFrame, meta: rtc.FrameMetadata | None) -> rtc.VideoFrameEvent:
    # The SDK annotates `rotation` with the enum's wrapper class; the value is what it stores.
    rotation = cast(Any, rtc.VideoRotation.VIDEO_ROTATION_0)
    return rtc.VideoFrameEvent(frame, 0, rotation, metadata=meta)


def test_to_stamped_reads_rgb_frames_and_their_metadata() -> None:
    rgb = pattern.render(7, W, H)
    video = rtc.VideoFrame(W, H, rtc.VideoBufferType.RGB24, rgb.tobytes())
    meta = rtc.FrameMetadata(user_timestamp=1_700_000_000_000_999, frame_id=7)
    stamped = to_stamped(_event(video, meta))
    assert stamped.rgb.shape == (H, W, 3)
    assert (stamped.frame_id, stamped.ts_ms) == (7, 1_700_000_000_000)
    assert np.array_equal(stamped.rgb, rgb)
    bare = to_stamped(_event(video, None))
    assert (bare.frame_id, bare.ts_ms) == (None, None)


@pytest.mark.parametrize("kind", ["RGBA", "BGRA", "I420"])
def test_to_stamped_converts_other_layouts_to_rgb(kind: str) -> None:
    rgb = pattern.render(7, W, H)
    rgba = np.dstack([rgb, np.full((H, W), 255, np.uint8)])
    source = rtc.VideoFrame(W, H, rtc.VideoBufferType.RGBA, rgba.tobytes())
    if kind == "BGRA":
        bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
        source = rtc.VideoFrame(W, H, rtc.VideoBufferType.BGRA, bgra.tobytes())
    elif kind == "I420":
        source = source.convert(rtc.VideoBufferType.I420)
    stamped = to_stamped(_event(source, rtc.FrameMetadata(frame_id=1)))
    assert stamped.rgb.shape == (H, W, 3)
    # I420 subsamples colour: compare away from edges, loosely; the packed ones exactly.
    if kind == "I420":
        assert worker.detect(stamped.rgb)[0].x == pytest.approx(
            pattern.square_box(7, W, H)[0], abs=2
        )
    else:
        assert np.array_equal(stamped.rgb, rgb)
