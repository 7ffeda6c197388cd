"""A fresh track's warm-up: IDR copies until the sender runs and while it asks, then live."""

from __future__ import annotations

from camfleet_ingest.annexb import AccessUnit
from camfleet_ingest.reader import StampedAccessUnit
from camfleet_ingest.warmup import Warmup

GOP = 5


def camera(start: int = 1) -> list[StampedAccessUnit]:
    """Frames ``start``.. of a camera with an IDR every GOP frames, 40 ms apart."""
    return [
        StampedAccessUnit(
            AccessUnit(f"au{i}".encode(), keyframe=(i - 1) % GOP == 0),
            frame_id=i,
            arrival_us=1_000_000 + i * 40_000,
            media_us=9_000_000 + i * 40_000,
            width=1920,
            height=1080,
        )
        for i in range(start, start + 3 * GOP)
    ]


def test_copies_the_held_idr_until_the_sender_runs_then_waits_for_the_camera() -> None:
    frames = camera(start=3)  # published mid-GOP: the IDR (frame 1) came before
    held = camera(start=1)[0]
    warmup = Warmup(held)
    sent = [warmup.on_frame(frames[0], keyframe_requested=False, running=False)]
    sent.append(warmup.on_frame(frames[1], keyframe_requested=True, running=True))
    sent.append(warmup.on_frame(frames[2], keyframe_requested=False, running=False))
    # Copies of frame 1 (its data and stamp) at the camera's current media time.
    for out, now in zip(sent[:2], frames[:2], strict=True):
        (copy,) = out
        assert (copy.au, copy.frame_id, copy.arrival_us) == (held.au, 1, held.arrival_us)
        assert copy.media_us == now.media_us
    # The sender runs and nobody asks: nothing but the camera's next IDR goes out.
    assert sent[2] == []
    assert not warmup.live
    assert warmup.copies == 2


def test_a_keyframe_request_while_running_gets_another_copy() -> None:
    frames = camera(start=2)
    warmup = Warmup(camera(start=1)[0])
    warmup.on_frame(frames[0], keyframe_requested=False, running=True)
    assert warmup.on_frame(frames[1], keyframe_requested=False, running=False) == []
    (copy,) = warmup.on_frame(frames[2], keyframe_requested=True, running=False)
    assert copy.frame_id == 1
    assert copy.media_us == frames[2].media_us


def test_the_camera_idr_makes_the_track_live_once_the_sender_runs() -> None:
    frames = camera(start=2)
    warmup = Warmup(camera(start=1)[0])
    warmup.on_frame(frames[0], keyframe_requested=False, running=True)
    idr = frames[GOP - 1]  # frame 6
    assert idr.au.keyframe
    assert warmup.on_frame(idr, keyframe_requested=False, running=False) == [idr]
    assert warmup.live
    after = frames[GOP]
    assert warmup.on_frame(after, keyframe_requested=True, running=False) == [after]


def test_a_camera_idr_before_the_sender_runs_is_only_one_more_copy() -> None:
    frames = camera(start=1)
    warmup = Warmup(None)
    assert warmup.on_frame(frames[0], keyframe_requested=False, running=False) == [frames[0]]
    assert not warmup.live  # the sender may have dropped it
    (copy,) = warmup.on_frame(frames[1], keyframe_requested=False, running=False)
    assert copy.frame_id == 1


def test_nothing_is_sent_before_any_idr() -> None:
    frames = camera(start=2)[: GOP - 1]  # deltas only
    warmup = Warmup(None)
    for frame in frames:
        assert warmup.on_frame(frame, keyframe_requested=True, running=True) == []
    assert warmup.copies == 0
