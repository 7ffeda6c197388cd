"""Frames for AI workers from the camera's LiveKit room: the camera keeps one RTSP session.

    from camfleet.ai.frames import subscribe_frames, subscriber_token

    token = subscriber_token(api_key, api_secret, room="shop-door", identity="ai-yolo")
    async for frame in subscribe_frames("ws://livekit:7880", token):
        boxes = detect(frame.rgb)                      # (h, w, 3) uint8, RGB
        await pub.publish({..., "ts": frame.ts_ms, "frame": frame.frame_id, ...})

Each frame carries the stamp the ingest put on it (LiveKit frame metadata: `user_timestamp` in µs
since the epoch, `frame_id` a per-camera counter), which is exactly what the viewer reads back in
the browser. `VideoFrameEvent.timestamp_us` is a local render time and is deliberately not used.

The SDK decodes and converts to RGB in its native thread; the queue keeps only the newest
``capacity`` frames, so a detector slower than the camera skips frames instead of falling behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
from livekit import rtc

from camfleet import tokens
from camfleet.camera import INGEST_IDENTITY_PREFIX

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class StampedFrame:
    """One decoded video frame of the camera and the stamp it was published with."""

    rgb: npt.NDArray[np.uint8]  # (height, width, 3), RGB, C-contiguous
    #: Capture/arrival time at the ingest, µs since the epoch; None if the track has no metadata.
    user_timestamp_us: int | None
    #: The ingest's per-camera frame counter; None if the track has no metadata.
    frame_id: int | None

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def ts_ms(self) -> int | None:
        """The event contract's `ts` for this frame (ms since the epoch)."""
        return None if self.user_timestamp_us is None else self.user_timestamp_us // 1000


class RoomClosed(Exception):
    """The room connection ended (server gone past the SDK's own reconnects, or kicked)."""


def subscriber_token(
    api_key: str,
    api_secret: str,
    *,
    room: str,
    identity: str,
    ttl: timedelta = timedelta(hours=6),
) -> str:
    """A LiveKit token that may join ``room`` and subscribe, never publish."""
    return tokens.mint(
        api_key, api_secret, identity=identity, grants=tokens.subscriber_grants(room), ttl=ttl
    )


def to_stamped(event: rtc.VideoFrameEvent) -> StampedFrame:
    """Convert one SDK event (an RGB24 frame) into a `StampedFrame`."""
    frame = event.frame
    kind = frame.type
    if kind in (rtc.VideoBufferType.RGBA, rtc.VideoBufferType.BGRA):
        # Packed 4-byte pixels: the native converter does not go to RGB24, numpy does.
        px = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 4)
        rgb = np.ascontiguousarray(
            px[..., :3] if kind == rtc.VideoBufferType.RGBA else px[..., 2::-1]
        )
    else:
        if kind != rtc.VideoBufferType.RGB24:
            frame = frame.convert(rtc.VideoBufferType.RGB24)  # I420, NV12…: natively
        # normalize_stride (set by VideoStream) makes rows exactly width*3 bytes.
        rgb = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 3)
    meta = event.metadata
    user_ts: int | None = None
    frame_id: int | None = None
    if meta is not None:
        if meta.HasField("user_timestamp"):
            user_ts = int(meta.user_timestamp)
        if meta.HasField("frame_id"):
            frame_id = int(meta.frame_id)
    return StampedFrame(rgb, user_ts, frame_id)


def _is_camera_track(track: rtc.Track, participant: rtc.RemoteParticipant, prefix: str) -> bool:
    return isinstance(track, rtc.RemoteVideoTrack) and participant.identity.startswith(prefix)


async def subscribe_frames(
    url: str,
    token: str,
    *,
    participant_prefix: str = INGEST_IDENTITY_PREFIX,
    capacity: int = 1,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> AsyncIterator[StampedFrame]:
    """Join the room as a subscriber and yield the camera's frames as they are decoded.

    Waits for the ingest's video track, and again whenever it is republished (ingest restart,
    resolution change). Ends by raising `RoomClosed` when the connection is lost for good;
    closing the generator leaves the room.
    """
    room = rtc.Room()
    tracks: asyncio.Queue[rtc.RemoteVideoTrack] = asyncio.Queue()
    closed = asyncio.Event()
    current: list[str] = []  # sid of the track being read, if any
    gone = asyncio.Event()
    ended: set[str] = set()  # unsubscribed before being read

    def on_subscribed(
        track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if _is_camera_track(track, participant, participant_prefix):
            assert isinstance(track, rtc.RemoteVideoTrack)
            tracks.put_nowait(track)

    def on_unsubscribed(
        track: rtc.Track, _pub: rtc.RemoteTrackPublication, _participant: rtc.RemoteParticipant
    ) -> None:
        ended.add(track.sid)
        if current and track.sid == current[0]:
            gone.set()

    room.on("track_subscribed", on_subscribed)
    room.on("track_unsubscribed", on_unsubscribed)
    room.on("disconnected", lambda *_: closed.set())
    await room.connect(
        url, token, rtc.RoomOptions(auto_subscribe=True, connect_timeout=connect_timeout)
    )
    try:
        while True:
            track = await _next_track(tracks, closed)
            if track.sid in ended:
                continue
            current[:] = [track.sid]
            gone.clear()
            stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGB24, capacity=capacity)
            log.info("reading video track", extra={"track_sid": track.sid})
            try:
                async for event in _until(stream, gone, closed):
                    yield to_stamped(event)
            finally:
                current.clear()
                await stream.aclose()
            if closed.is_set():
                raise RoomClosed("disconnected from the LiveKit room")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(room.disconnect(), 3.0)


async def _next_track(
    tracks: asyncio.Queue[rtc.RemoteVideoTrack], closed: asyncio.Event
) -> rtc.RemoteVideoTrack:
    getter = asyncio.ensure_future(tracks.get())
    waiter = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    raise RoomClosed("disconnected from the LiveKit room")


async def _until(
    stream: rtc.VideoStream, *stops: asyncio.Event
) -> AsyncIterator[rtc.VideoFrameEvent]:
    """The stream's events until it ends or one of ``stops`` is set."""
    it = aiter(stream)
    stop_waiters = [asyncio.ensure_future(s.wait()) for s in stops]
    try:
        while True:
            nxt = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({nxt, *stop_waiters}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                return
            yield nxt.result()
            if any(s.is_set() for s in stops):
                return
    except StopAsyncIteration:
        return
    finally:
        for w in stop_waiters:
            w.cancel()
