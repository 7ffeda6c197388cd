"""Snapshots: the camera's latest keyframe as a JPEG, decoded only when someone asks.

The supervisor hands every keyframe it sees to ``Snapshots.keyframe`` (a reference, no copy,
no decode). ``/snapshot.jpg`` then decodes the newest one on a worker thread, scales it to
``width`` and encodes a JPEG, at most once per ``min_interval`` seconds: requests in between,
or for the same keyframe, get the JPEG made last. So a camera nobody asks about costs nothing,
and one asked about by every gateway replica costs one decode per interval at most. It never
opens a second RTSP session: the picture is the keyframe the live path already read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import av.video.codeccontext

from camfleet_ingest.reader import StampedAccessUnit

__all__ = ["Snapshot", "Snapshots", "encode_jpeg"]

# JPEG quantiser (2 best .. 31 worst): 4 keeps the frame code and text legible at 640 px wide.
JPEG_QSCALE = 4


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes
    taken_at_ms: int  # the keyframe's capture stamp (user_timestamp), ms since the epoch
    frame_id: int
    width: int
    height: int


def _scaled(width: int, height: int, target: int) -> tuple[int, int]:
    """``target`` wide (never wider than the source), aspect kept, both even (4:2:0)."""
    out_w = min(target, width)
    out_h = max(2, round(height * out_w / width))
    return out_w - out_w % 2, out_h - out_h % 2


def encode_jpeg(access_unit: bytes, codec: str, width: int) -> tuple[bytes, int, int]:
    """One Annex B keyframe (with its parameter sets) → (JPEG, width, height).

    A fresh decoder per call: the keyframe is self-contained, and no decoder state is kept
    between snapshots that may be minutes apart. Raises ``ValueError`` if nothing decodes.
    """
    decoder = cast(av.video.codeccontext.VideoCodecContext, av.CodecContext.create(codec, "r"))
    try:
        frames = decoder.decode(av.Packet(access_unit))
        frames += decoder.decode(None)  # flush: the decoder may hold the picture back one packet
    except av.FFmpegError as exc:
        raise ValueError(f"the keyframe did not decode ({type(exc).__name__})") from None
    if not frames:
        raise ValueError("the keyframe did not decode")
    picture = frames[0]
    out_w, out_h = _scaled(picture.width, picture.height, width)
    scaled = picture.reformat(width=out_w, height=out_h, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = out_w, out_h
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"qmin": str(JPEG_QSCALE), "qmax": str(JPEG_QSCALE)}
    packets = encoder.encode(scaled) + encoder.encode(None)
    if not packets:
        raise ValueError("the JPEG encoder returned nothing")
    return bytes(packets[0]), out_w, out_h


class Snapshots:
    """The newest keyframe and the JPEG made from it last."""

    def __init__(
        self,
        width: int,
        min_interval: float,
        *,
        codec: str = "h264",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.width = width
        self.min_interval = min_interval
        self.codec = codec  # what the live track carries: always H.264 (transcode outputs it)
        self.clock = clock
        self.latest: StampedAccessUnit | None = None
        self.made: Snapshot | None = None
        self._made_at = float("-inf")
        self._lock = asyncio.Lock()
        self.decodes = 0  # how many JPEGs were made (a test and the benchmark read it)

    def keyframe(self, frame: StampedAccessUnit) -> None:
        """Called on the event loop for every keyframe of the live path: keep a reference."""
        self.latest = frame

    def _current(self) -> Snapshot | None:
        made, latest = self.made, self.latest
        if made is None or latest is None:
            return made
        if made.frame_id == latest.frame_id or self.clock() - self._made_at < self.min_interval:
            return made
        return None

    async def snapshot(self) -> Snapshot | None:
        """The JPEG of the newest keyframe (or of a recent one); None before the first one."""
        if (current := self._current()) is not None or self.latest is None:
            return current
        async with self._lock:  # concurrent requests wait for one decode
            if (current := self._current()) is not None:
                return current
            frame = self.latest
            assert frame is not None
            jpeg, width, height = await asyncio.to_thread(
                encode_jpeg, frame.au.data, self.codec, self.width
            )
            self.decodes += 1
            self.made = Snapshot(jpeg, frame.arrival_us // 1000, frame.frame_id, width, height)
            self._made_at = self.clock()
            return self.made
