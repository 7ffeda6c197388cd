"""Segments start on keyframes, close on the first keyframe past the target, and never span a
lost source; remuxed, a segment keeps every frame's capture stamp as its media time."""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import pytest
from pydantic import ValidationError

from camfleet.recording import Gap, Segment, segment_key
from camfleet_ingest.recording.mux import remux
from camfleet_ingest.recording.segmenter import ClosedSegment, Sample, Segmenter, frame_durations

T0 = 1_764_650_000_000_000  # µs since the epoch


def sample(i: int, *, key: bool = False, stamp: int | None = None, size: int = 10) -> Sample:
    return Sample(b"x" * size, key, i, T0 + i * 40_000 if stamp is None else stamp, 64, 48)


def feed(segmenter: Segmenter, samples: list[Sample]) -> list[ClosedSegment]:
    return [c for s in samples if (c := segmenter.push(s)) is not None]


def test_cuts_on_the_first_keyframe_past_the_target() -> None:
    seg = Segmenter(target_us=1_000_000, max_us=4_000_000)
    # GOP of 10 frames (400 ms), 60 frames: keyframes at 0, 10, ... 50.
    closed = feed(seg, [sample(i, key=i % 10 == 0) for i in range(60)])
    # 1 s target → cut at the keyframe at 1.2 s (frame 30), then again at frame 60 (not yet).
    assert [len(c.samples) for c in closed] == [30]
    first = closed[0]
    assert first.samples[0].keyframe
    assert first.start_us == T0
    assert first.end_us == T0 + 30 * 40_000  # ends where the next segment starts
    assert first.keyframes_us == (0, 400_000, 800_000)
    assert first.size == 300
    rest = seg.flush()
    assert rest is not None
    assert rest.start_us == first.end_us
    assert rest.end_us == T0 + 59 * 40_000 + 40_000


def test_waits_for_a_keyframe_and_splits_on_a_stamp_jump() -> None:
    seg = Segmenter(target_us=1_000_000, max_us=4_000_000)
    assert feed(seg, [sample(i) for i in range(5)]) == []  # no keyframe yet: nothing opens
    assert not seg.open
    closed = feed(seg, [sample(i, key=i == 5) for i in range(5, 12)])
    assert closed == []
    assert seg.open
    # The source was lost for 5 s: the open segment closes at its last frame, and the delta
    # frames after the jump cannot start one.
    jumped = seg.push(sample(12, stamp=T0 + 12 * 40_000 + 5_000_000))
    assert jumped is not None
    assert len(jumped.samples) == 7
    assert jumped.end_us == T0 + 11 * 40_000 + 40_000
    assert not seg.open


def test_a_resolution_change_starts_a_new_segment() -> None:
    seg = Segmenter(target_us=10_000_000, max_us=40_000_000)
    feed(seg, [sample(i, key=i == 0) for i in range(5)])
    bigger = Sample(b"y", True, 5, T0 + 5 * 40_000, 128, 96)
    closed = seg.push(bigger)
    assert closed is not None
    assert len(closed.samples) == 5
    assert seg.open


def test_max_duration_bounds_a_segment_without_keyframes() -> None:
    seg = Segmenter(target_us=1_000_000, max_us=2_000_000)
    closed = feed(seg, [sample(i, key=i == 0) for i in range(100)])
    assert len(closed) == 1
    assert closed[0].end_us - closed[0].start_us == 2_000_000


def test_frame_durations_run_to_the_next_stamp() -> None:
    samples = [sample(0, key=True), sample(1), sample(3)]
    assert frame_durations(samples, T0 + 200_000) == [40_000, 80_000, 80_000]


def test_segmenter_refuses_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match="target_us"):
        Segmenter(target_us=0, max_us=1)


def test_index_rows_are_validated() -> None:
    ok = Segment(
        camera="ns/cam",
        start_us=T0,
        end_us=T0 + 4_000_000,
        first_frame=1,
        frames=100,
        keyframes_us=(0, 2_000_000),
        size=1000,
        key="ns/cam/x.mp4",
    )
    assert ok.frames == 100
    for bad in (
        {"keyframes_us": (40_000,)},  # not starting on a keyframe
        {"end_us": T0},  # empty
        {"keyframes_us": (0, 5_000_000)},  # keyframe past the end
        {"camera": "no-namespace"},
    ):
        with pytest.raises(ValidationError):
            Segment.model_validate(ok.model_dump() | bad)
    with pytest.raises(ValidationError):
        Gap(camera="ns/cam", start_us=T0, end_us=T0 + 1, reason="Because")  # type: ignore[arg-type]


def test_segment_keys_sort_by_time_under_camera_and_hour() -> None:
    assert segment_key("rec/", "ns/cam", T0) == f"rec/ns/cam/2025-12-02/04/{T0}.mp4"
    assert segment_key("", "ns/cam", T0).startswith("ns/cam/")


def encoded_clip(frames: int) -> list[tuple[bytes, bool]]:
    """A tiny H.264 clip (libx264, GOP 10, Annex B with SPS/PPS on keyframes)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        stream = out.add_stream(
            "libx264",
            rate=25,
            options={
                "x264-params": "keyint=10:min-keyint=10:scenecut=0:bframes=0:repeat-headers=1"
            },
        )
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for n in range(frames):
            frame = av.VideoFrame(64, 48, "yuv420p")
            frame.pts = n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(io.BytesIO(buf.getvalue()), format="h264") as inp:
        return [(bytes(p), bool(p.is_keyframe)) for p in inp.demux(inp.streams.video[0]) if p.size]


def prft_stamps(data: bytes) -> list[float]:
    """The NTP times of the top-level `prft` boxes, as seconds since the Unix epoch."""
    out, i = [], 0
    while i < len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if kind == b"prft":
            ntp = struct.unpack(">Q", data[i + 16 : i + 24])[0]
            out.append((ntp >> 32) - 2_208_988_800 + (ntp & 0xFFFFFFFF) / 2**32)
        i += size
    return out


def test_remux_keeps_every_capture_stamp_and_decodes() -> None:
    clip = encoded_clip(20)
    stamps = [T0 + i * 40_000 + (i % 3) * 1_000 for i in range(20)]  # jittery arrival
    samples = [
        Sample(d, k, 100 + i, s, 64, 48)
        for i, ((d, k), s) in enumerate(zip(clip, stamps, strict=True))
    ]
    segment = ClosedSegment(samples, stamps[-1] + 40_000, sum(len(d) for d, _ in clip))
    data = remux(segment)
    assert data[4:8] == b"ftyp"
    with av.open(io.BytesIO(data)) as inp:
        stream = inp.streams.video[0]
        assert stream.time_base == Fraction(1, 1_000_000)
        packets = [p for p in inp.demux(stream) if p.size]
        assert [p.pts for p in packets] == stamps
        assert [bool(p.is_keyframe) for p in packets] == [k for _, k in clip]
        decoded = [f for p in packets for f in p.decode()] + list(stream.codec_context.decode(None))
        assert len(decoded) == 20
    # One prft per fragment (a fragment per keyframe), each the capture time of its first frame.
    assert prft_stamps(data) == pytest.approx([stamps[0] / 1e6, stamps[10] / 1e6], abs=1e-6)
