"""Clip export: a time range of a camera's recording as one MP4, remuxed, never re-encoded.

`camfleet clip` asks the gateway's playback API for the segments of the range (the same
authorisation as viewing), downloads them from the store through their signed URLs (the bytes
never pass through the gateway) and remuxes the frames of the range into one MP4 with FFmpeg's
libraries. Without re-encoding a clip can only start on a keyframe, so it starts at the last
keyframe at or before `from` (at most one GOP earlier; exact when `from` is a keyframe's stamp,
as the timeline's keyframe marks are) and ends with the last frame before `to`. Media time
starts at 0; the capture stamp of the first frame is kept in the file's `comment` tag.
"""

from __future__ import annotations

import asyncio
import io
import json
import urllib.parse
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import av.video.stream

TIME_BASE = Fraction(1, 1_000_000)


class ClipError(RuntimeError):
    """The range cannot be exported (nothing recorded in it, or the API refused)."""


@dataclass(frozen=True)
class Frame:
    data: bytes
    stamp_us: int
    keyframe: bool


def annexb(sample: bytes) -> bytes:
    """An MP4 sample (NAL units with 4-byte big-endian lengths) as Annex B (start codes); the
    recorder's keyframes carry their SPS/PPS in band, so Annex B needs no side data."""
    out, i = bytearray(), 0
    while i + 4 <= len(sample):
        n = int.from_bytes(sample[i : i + 4], "big")
        out += b"\x00\x00\x00\x01" + sample[i + 4 : i + 4 + n]
        i += 4 + n
    return bytes(out)


def frames_of(segment: bytes) -> tuple[list[Frame], tuple[int, int]]:
    """The access units of one stored segment (Annex B) with their capture stamps, and the
    picture size."""
    with av.open(io.BytesIO(segment), "r") as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        out = [
            Frame(annexb(bytes(p)), int(p.pts), bool(p.is_keyframe))
            for p in container.demux(stream)
            if p.size and p.pts is not None
        ]
    return out, size


def select(frames: list[Frame], start_us: int, end_us: int) -> list[Frame]:
    """Frames from the last keyframe at or before ``start_us`` up to (not including) ``end_us``."""
    first = None
    for i, frame in enumerate(frames):
        if frame.stamp_us > start_us:
            break
        if frame.keyframe:
            first = i
    if first is None:  # the range starts before the recording: its first keyframe
        first = next((i for i, f in enumerate(frames) if f.keyframe), None)
    if first is None:
        return []
    return [f for f in frames[first:] if f.stamp_us < end_us]


def remux_clip(segments: list[bytes], start_us: int, end_us: int) -> bytes:
    """One MP4 of the range from the stored segments (in order); raises ClipError if empty."""
    frames: list[Frame] = []
    size = (0, 0)
    for segment in segments:
        got, size = frames_of(segment)
        frames += got
    chosen = select(frames, start_us, end_us)
    if not chosen:
        raise ClipError("no recorded frames in that range")
    base = chosen[0].stamp_us
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        out.metadata["comment"] = json.dumps({"camfleet_capture_start_us": base})
        stream = out.add_stream("h264")
        if not isinstance(stream, av.video.stream.VideoStream):
            raise ClipError("h264 is not a video codec here")
        stream.width, stream.height = size
        stream.time_base = TIME_BASE
        for frame, following in zip(chosen, [*chosen[1:], None], strict=True):
            packet = av.Packet(frame.data)
            packet.pts = packet.dts = frame.stamp_us - base
            next_stamp = following.stamp_us if following else frame.stamp_us + 40_000
            packet.duration = max(1, next_stamp - frame.stamp_us)
            packet.time_base = TIME_BASE
            packet.is_keyframe = frame.keyframe
            packet.stream = stream
            out.mux(packet)
    return buf.getvalue()


async def export_clip(
    gateway: str, token: str, camera: str, start_us: int, end_us: int, output: Path
) -> int:
    """Fetch the range's segments (API, then the store) and write the clip; its frame count."""
    query = urllib.parse.urlencode({"from": start_us // 1000, "to": -(-end_us // 1000)})
    url = f"{gateway.rstrip('/')}/api/cameras/{camera}/recordings?{query}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            body: dict[str, Any] = await resp.json()
            if resp.status != 200:
                message = (body.get("error") or {}).get("message", resp.reason)
                raise ClipError(f"playback API answered {resp.status}: {message}")
        blobs = []
        for segment in body["segments"]:
            async with session.get(segment["url"]) as resp:
                if resp.status != 200:
                    raise ClipError(f"the store answered {resp.status} for a segment")
                blobs.append(await resp.read())
    data = await asyncio.to_thread(remux_clip, blobs, start_us, end_us)
    await asyncio.to_thread(output.write_bytes, data)
    return count_frames(data)


def count_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data), "r") as container:
        return sum(1 for p in container.demux(container.streams.video[0]) if p.size)
