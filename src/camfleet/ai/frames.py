"""Frames for AI workers from the camera's LiveKit room: the camera keeps one RTSP session.

    from camfleet.ai.frames import subscribe_frames, subscriber_token

    token = subscriber_token(api_key, api_secret, room="shop-door", identity="ai-yolo")
    async for frame in subscribe_frames("ws://livekit:7880", token):
        boxes = detect(frame.rgb)                      # (h, w, 3) uint8, RGB
        await pub.publish({..., "ts": frame.ts_ms, "frame": frame.frame_id, ...})

Each frame carries the stamp the ingest put on it (LiveKit frame metadata: `user_timestamp` in µs
since the epoch, `frame_id` a per-camera counter), which is exactly what the viewer reads back in
the browser. `VideoFrameEvent.timestamp_us` is a local render time and is deliberately not used.

The SDK decodes and converts to RGB in its native thread; its native queue and ours keep only
the newest frames, so a detector slower than the camera skips frames instead of falling behind.
The subscription recovers by itself from a stalled stream and a lost room connection, and raises
`FramesLost` (`RoomClosed` when the room cannot be joined) when it cannot: see `subscribe_frames`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from livekit import rtc

from camfleet import tokens
from camfleet.camera import INGEST_IDENTITY_PREFIX
from camfleet.ingest_contract import ATTR_STATE, STATE_RECONNECTING

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 10.0
#: No frame for this long while the camera's track is published: the stream is stalled. The
#: camera's keyframe interval (1-2 s) bounds the wait for the first frame of a new stream.
STALL_TIMEOUT_S: Final = 5.0
#: Recoveries in a row without a frame before giving up. With the backoff below, an
#: unreachable server is retried for about 45 s (a livekit-server restart takes less).
MAX_RECOVERIES: Final = 8
BACKOFF_BASE_S: Final = 0.5
BACKOFF_CAP_S: Final = 10.0
# Whatever can change which track is the camera's, or whether frames are expected.
_ROOM_EVENTS: Final = (
    "track_subscribed",
    "track_unsubscribed",
    "track_published",
    "track_unpublished",
    "track_subscription_failed",
    "participant_connected",
    "participant_disconnected",
    "participant_attributes_changed",
    "reconnected",
)


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


class FramesLost(Exception):
    """`subscribe_frames` gave up: ``max_recoveries`` recoveries in a row brought no frame.

    A worker should exit non-zero on it, so that its Deployment restarts it.
    """


class RoomClosed(FramesLost):
    """The room could not be joined again (server unreachable, token refused) after
    ``max_recoveries`` attempts in a row."""


@dataclass
class FrameHealth:
    """What `subscribe_frames` went through; pass one in to watch it (cheap counters)."""

    #: Frames yielded.
    frames: int = 0
    #: Camera frames never yielded (gaps in ``frame_id``): dropped, oldest first, while the
    #: consumer was slower than the camera (the SDK's "queue overflow"), or lost on the way.
    skipped: int = 0
    #: Times no frame came for ``stall_timeout`` although the camera's track was published.
    stalls: int = 0
    #: Times the room was joined again (connection lost, removed, or a stall a new stream
    #: did not cure); failed attempts included.
    rejoins: int = 0
    #: Video streams opened on the camera's track (one per track, plus one per stall).
    streams: int = 0
    #: Recoveries since the last frame; `FramesLost` once it exceeds ``max_recoveries``.
    failures: int = 0
    #: ``time.monotonic()`` of the last frame yielded.
    last_frame_at: float | None = None
    #: Why the last recovery started.
    last_fault: str = ""


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


class _Backoff:
    """Capped exponential backoff with jitter, so that many workers do not rejoin in step."""

    def __init__(self, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempt = 0


class _Stalled(Exception):
    """No frame for ``stall_timeout`` while the camera's track was published."""


class _CameraRoom:
    """One connection to the camera's room and what it shows of the camera, level-triggered:
    every relevant room event sets `changed`, and the state is read back from the room."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.room = rtc.Room()
        self.changed = asyncio.Event()
        self.lost = False  # disconnected, not by us
        for name in _ROOM_EVENTS:
            self.room.on(name, self._poke)
        self.room.on("disconnected", self._on_disconnected)

    def _poke(self, *_: object) -> None:
        self.changed.set()

    def _on_disconnected(self, *_: object) -> None:
        self.lost = True
        self.changed.set()

    async def join(self, url: str, token: str, connect_timeout: float) -> None:
        options = rtc.RoomOptions(auto_subscribe=True, connect_timeout=connect_timeout)
        # Bounded here too: the SDK's own timeout covers the signal connection only.
        await asyncio.wait_for(self.room.connect(url, token, options), connect_timeout + 5.0)

    async def leave(self) -> None:
        for name in _ROOM_EVENTS:
            self.room.off(name, self._poke)
        self.room.off("disconnected", self._on_disconnected)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 3.0)

    def _publication(self) -> tuple[rtc.RemoteParticipant, rtc.RemoteTrackPublication] | None:
        """The camera's video publication: a subscribed one first (an old ingest may linger)."""
        found: tuple[rtc.RemoteParticipant, rtc.RemoteTrackPublication] | None = None
        for participant in self.room.remote_participants.values():
            if not participant.identity.startswith(self.prefix):
                continue
            for pub in participant.track_publications.values():
                if pub.kind != rtc.TrackKind.KIND_VIDEO:
                    continue
                if isinstance(pub.track, rtc.RemoteVideoTrack):
                    return participant, pub
                found = found or (participant, pub)
        return found

    def track(self) -> rtc.RemoteVideoTrack | None:
        got = self._publication()
        track = got[1].track if got is not None else None
        return track if isinstance(track, rtc.RemoteVideoTrack) else None

    def expecting_frames(self) -> bool:
        """The camera's track is published and its ingest does not report the camera down
        (attribute ``state=reconnecting`` while it reconnects to the camera)."""
        got = self._publication()
        return got is not None and got[0].attributes.get(ATTR_STATE) != STATE_RECONNECTING

    def resubscribe(self) -> None:
        got = self._publication()
        if got is not None and not got[1].subscribed:
            got[1].set_subscribed(True)

    async def wait_changed(self, within: float) -> bool:
        """True when the room changed within ``within`` seconds."""
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), within)
        except TimeoutError:
            return False
        return True


async def subscribe_frames(
    url: str,
    token: str | Callable[[], str],
    *,
    participant_prefix: str = INGEST_IDENTITY_PREFIX,
    capacity: int = 1,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    stall_timeout: float = STALL_TIMEOUT_S,
    max_recoveries: int = MAX_RECOVERIES,
    health: FrameHealth | None = None,
) -> AsyncGenerator[StampedFrame, None]:
    """Join the room as a subscriber and yield the camera's newest frames, recovering by itself.

    - A consumer slower than the camera gets the newest frame each time it asks; older ones
      are dropped (``capacity`` frames are kept), counted in `FrameHealth.skipped`.
    - The camera's track is followed when it is republished (ingest restart, new resolution),
      unsubscribed and subscribed again, or after the SDK's own reconnects.
    - No frame for ``stall_timeout`` seconds while the track is published (and the ingest does
      not report its camera down): a new video stream on the track, then, if that did not
      help, the room is joined again. A lost connection (server gone past the SDK's own
      resume, participant removed) is joined again with capped exponential backoff.
    - After ``max_recoveries`` recoveries in a row without a frame: `RoomClosed` if the room
      could not be joined, `FramesLost` otherwise. Waiting for an ingest that is not in the
      room (camera off, on-demand) is not a fault and never gives up.

    ``token`` may be a callable, called at every (re)join so that a long-running worker never
    rejoins with an expired token. Closing the generator leaves the room.
    """
    state = health if health is not None else FrameHealth()
    backoff = _Backoff()
    last_id: int | None = None

    def fault(why: str, give_up: type[FramesLost]) -> None:
        state.failures += 1
        state.last_fault = why
        if state.failures > max_recoveries:
            raise give_up(f"{why}; gave up after {max_recoveries} recoveries without a frame")
        log.warning("frames: %s; recovering (%d/%d)", why, state.failures, max_recoveries)

    first = True
    while True:
        if not first:
            await asyncio.sleep(backoff.next())
            state.rejoins += 1
        first = False
        camera = _CameraRoom(participant_prefix)
        try:
            try:
                await camera.join(url, token() if callable(token) else token, connect_timeout)
            except (rtc.ConnectError, TimeoutError) as exc:
                fault(f"cannot join the room ({type(exc).__name__}: {exc})", RoomClosed)
                continue
            # Stalls in a row on this connection: the first gets a new stream, the next a rejoin.
            stalls = 0
            while not camera.lost and stalls < 2:
                track = camera.track()
                if track is None:
                    if await camera.wait_changed(stall_timeout) or not camera.expecting_frames():
                        continue
                    stalls += 1
                    state.stalls += 1
                    fault("the camera's track is published but not subscribed", FramesLost)
                    camera.resubscribe()
                    continue
                stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGB24, capacity=capacity)
                state.streams += 1
                log.info("reading video track", extra={"track_sid": track.sid})
                events = _frames(stream, camera, track, stall_timeout)
                try:
                    async for event in events:
                        frame = to_stamped(event)
                        if frame.frame_id is not None and last_id is not None:
                            state.skipped += max(0, frame.frame_id - last_id - 1)
                        last_id = frame.frame_id
                        state.frames += 1
                        state.last_frame_at = time.monotonic()
                        state.failures = stalls = 0
                        backoff.reset()
                        yield frame
                except _Stalled:
                    if not camera.expecting_frames():  # ended while the camera is down
                        await camera.wait_changed(stall_timeout)
                        continue
                    stalls += 1
                    state.stalls += 1
                    fault(f"no frame for {stall_timeout:g}s on a published track", FramesLost)
                finally:
                    await events.aclose()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stream.aclose(), 3.0)
            if camera.lost:
                fault("the room connection was lost", RoomClosed)
        finally:
            await camera.leave()


async def _frames(
    stream: rtc.VideoStream,
    camera: _CameraRoom,
    track: rtc.RemoteVideoTrack,
    stall_timeout: float,
) -> AsyncGenerator[rtc.VideoFrameEvent, None]:
    """The stream's events while ``track`` is the camera's; `_Stalled` after ``stall_timeout``
    without one.

    Every wait is bounded: the SDK's `VideoStream` does not end its iterator when the track
    goes away, and one already waiting when the stream ends waits forever.
    """
    it = aiter(stream)
    nxt: asyncio.Future[rtc.VideoFrameEvent] | None = None
    deadline = time.monotonic() + stall_timeout
    try:
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(anext(it))
            changed = asyncio.ensure_future(camera.changed.wait())
            waiting: set[asyncio.Future[Any]] = {nxt, changed}
            try:
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=max(0.0, deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                changed.cancel()
            if nxt in done:
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    raise _Stalled from None  # the stream ended under a published track
                nxt = None
                yield event
                deadline = time.monotonic() + stall_timeout
            elif changed in done:
                camera.changed.clear()
                if camera.lost or camera.track() is not track:
                    return
            elif camera.expecting_frames():
                raise _Stalled
            else:  # the ingest says its camera is down: silence is expected, keep waiting
                deadline = time.monotonic() + stall_timeout
    finally:
        if nxt is not None:
            nxt.cancel()  # not awaited: that would swallow a cancellation of our own task
