"""Remux one segment's access units into a self-contained fragmented MP4 (no decode, no encode).

FFmpeg's MP4 muxer through PyAV. The track's timescale is 1 MHz and its decode times are the
capture stamps themselves (``frag_discont`` keeps the first one instead of rebasing it to 0,
``use_editlist=0`` keeps an edit list from shifting it), so every sample's media time is its
capture time; ``write_prft=pts`` adds a Producer Reference Time box before each fragment with
the same stamp as NTP time. Blocking: the recorder calls it on a worker thread.
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Final

import av
import av.video.stream

from camfleet.recording import TIMESCALE
from camfleet_ingest.recording.segmenter import ClosedSegment, frame_durations

MUX_OPTIONS: Final = {
    # empty_moov + default_base_moof: the fMP4 shape MSE and HLS players take; a fragment per
    # keyframe keeps every fragment decodable from its start.
    "movflags": "frag_keyframe+empty_moov+default_base_moof+frag_discont",
    "use_editlist": "0",
    "avoid_negative_ts": "disabled",
    "write_prft": "pts",
}
TIME_BASE: Final = Fraction(1, TIMESCALE)


def remux(segment: ClosedSegment, codec: str = "h264") -> bytes:
    """The segment as fMP4 bytes; raises ``av.FFmpegError`` on input FFmpeg cannot mux."""
    first = segment.samples[0]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options=MUX_OPTIONS) as out:
        # A stream for muxing only: its codec context is never opened, nothing is encoded.
        stream = out.add_stream(codec)
        if not isinstance(stream, av.video.stream.VideoStream):
            raise ValueError(f"{codec} is not a video codec")
        stream.width, stream.height = first.width, first.height
        stream.time_base = TIME_BASE
        for sample, duration in zip(
            segment.samples, frame_durations(segment.samples, segment.end_us), strict=True
        ):
            packet = av.Packet(sample.data)
            packet.pts = packet.dts = sample.stamp_us
            packet.duration = duration
            packet.time_base = TIME_BASE
            packet.is_keyframe = sample.keyframe
            packet.stream = stream
            out.mux(packet)
    return buf.getvalue()
