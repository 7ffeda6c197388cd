"""Cut the stream of stamped access units into segments that each start on a keyframe.

Pure and O(1) per frame: it runs on the event loop, beside the live path, for every frame. A
segment closes at the first keyframe after ``target_us`` of capture time, so it is a few GOPs
long and decodable on its own; it also closes when the picture changes size (a new SPS), when
the stamps jump (the source was lost and came back) and, as a bound, after ``max_us``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from camfleet.recording import GapReason

#: Assumed duration of a segment's last frame when no next frame tells it (25 fps).
DEFAULT_FRAME_US = 40_000
#: Two frames further apart than this are not consecutive: the source was lost in between.
MAX_FRAME_GAP_US = 2_000_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One access unit as the recorder keeps it (Annex B, SPS/PPS on keyframes)."""

    data: bytes
    keyframe: bool
    frame_id: int
    stamp_us: int  # capture stamp, µs since the epoch (the live frame's user_timestamp)
    width: int
    height: int


@dataclass(slots=True)
class ClosedSegment:
    """Samples of one segment, in order, and the capture time at which it ends."""

    samples: list[Sample]
    end_us: int
    size: int
    # Filled by the recorder's writer as the segment goes out (muxed once, uploaded once).
    data: bytes | None = None
    uploaded: bool = False
    key: str = ""
    #: Why the segments just before this one were dropped (the gap it ends), if they were.
    after_gap: GapReason | None = None

    @property
    def start_us(self) -> int:
        return self.samples[0].stamp_us

    @property
    def keyframes_us(self) -> tuple[int, ...]:
        start = self.start_us
        return tuple(s.stamp_us - start for s in self.samples if s.keyframe)


def frame_durations(samples: list[Sample], end_us: int) -> list[int]:
    """Each sample lasts until the next one's stamp; the last one until ``end_us``."""
    stamps = [s.stamp_us for s in samples] + [end_us]
    return [max(1, b - a) for a, b in itertools.pairwise(stamps)]


class Segmenter:
    def __init__(self, target_us: int, max_us: int) -> None:
        if not 0 < target_us <= max_us:
            raise ValueError("need 0 < target_us <= max_us")
        self.target_us = target_us
        self.max_us = max_us
        self._samples: list[Sample] = []
        self._size = 0
        self._frame_us = DEFAULT_FRAME_US

    @property
    def open(self) -> bool:
        return bool(self._samples)

    def push(self, sample: Sample) -> ClosedSegment | None:
        """Add a sample; return the segment it closed, if any."""
        samples = self._samples
        if not samples:
            if sample.keyframe:  # a segment must start where a decoder can
                self._start(sample)
            return None
        last = samples[-1]
        step = sample.stamp_us - last.stamp_us
        if step <= 0 or step > MAX_FRAME_GAP_US:
            closed = self.flush()
            if sample.keyframe:
                self._start(sample)
            return closed
        self._frame_us = step
        reshaped = (sample.width, sample.height) != (last.width, last.height)
        long_enough = sample.stamp_us - samples[0].stamp_us >= self.target_us
        if sample.keyframe and (long_enough or reshaped):
            closed = self._close(end_us=sample.stamp_us)
            self._start(sample)
            return closed
        if reshaped:  # a new size without a keyframe is undecodable: wait for one
            return self.flush()
        if sample.stamp_us - samples[0].stamp_us >= self.max_us:
            # This delta frame cannot start a segment: the next keyframe will.
            return self._close(end_us=sample.stamp_us)
        samples.append(sample)
        self._size += len(sample.data)
        return None

    def flush(self) -> ClosedSegment | None:
        """Close the open segment now (the source is gone, or the recorder stops)."""
        if not self._samples:
            return None
        return self._close(end_us=self._samples[-1].stamp_us + self._frame_us)

    def _start(self, sample: Sample) -> None:
        self._samples = [sample]
        self._size = len(sample.data)

    def _close(self, end_us: int) -> ClosedSegment:
        closed = ClosedSegment(self._samples, end_us, self._size)
        self._samples = []
        self._size = 0
        return closed
