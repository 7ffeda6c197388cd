"""The LiveKit side: one participant publishing the camera as a pre-encoded H.264 track.

``EncodedVideoSource`` + ``ENCODER_BACKEND_PRE_ENCODED`` hands our access units to WebRTC as
they are (no encoder in this process for passthrough); simulcast is off because there is only
one encoding. Each frame carries ``FrameMetadata`` (arrival time + frame id), declared with
``frame_metadata_features`` so the SFU and subscribers know to expect them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import NoReturn

from livekit import rtc

from camfleet_ingest.failures import IngestFailure, PublishRejected, classify_livekit_error
from camfleet_ingest.reader import StampedAccessUnit

log = logging.getLogger(__name__)

TRACK_NAME = "camera"
CONNECT_TIMEOUT_S = 5.0
PUBLISH_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class TrackShape:
    """What the publication is built for; a change (new camera resolution) republishes."""

    width: int
    height: int


class TrackPublisher:
    """Connect, publish, send frames, report loss of the server, unpublish and disconnect."""

    def __init__(self, url: str, camera: str) -> None:
        self.url = url
        self.camera = camera
        self.room: rtc.Room | None = None
        self.source: rtc.EncodedVideoSource | None = None
        self.publication: rtc.LocalTrackPublication | None = None
        self.shape: TrackShape | None = None
        # Set when the SDK gives up on the server (its own resume/reconnect failed).
        self.lost = asyncio.Event()
        # False while the SDK is resuming on its own: frames then go nowhere, and /healthz
        # must say so even though the source still accepts them.
        self.connected = False

    @property
    def ready(self) -> bool:
        return self.source is not None and self.connected and not self.lost.is_set()

    async def connect(self, token: str) -> None:
        """Join the room (no track yet); raises a classified ``IngestFailure``."""
        self.lost.clear()
        room = rtc.Room()
        room.on("disconnected", self._on_disconnected)
        room.on("reconnecting", self._on_reconnecting)
        room.on("reconnected", self._on_reconnected)
        self.room = room
        try:
            await room.connect(
                self.url,
                token,
                rtc.RoomOptions(auto_subscribe=False, connect_timeout=CONNECT_TIMEOUT_S),
            )
            if not room.local_participant.permissions.can_publish:
                raise PublishRejected(
                    f"camera {self.camera}'s token does not allow publishing (can_publish)"
                )
            self.connected = True
        except Exception as exc:
            await self._failed(exc)

    async def publish(self, shape: TrackShape) -> None:
        """Publish the camera's track; raises a classified ``IngestFailure``."""
        try:
            await self._publish(shape)
        except Exception as exc:
            await self._failed(exc)

    async def _failed(self, exc: Exception) -> NoReturn:
        await self.close()
        if isinstance(exc, IngestFailure):
            raise exc
        # str(exc) may embed the token (the SDK echoes it on 401): classify, never log it.
        raise classify_livekit_error(exc, self.camera, self.url) from None

    async def _publish(self, shape: TrackShape) -> None:
        assert self.room is not None
        source = rtc.EncodedVideoSource(shape.width, shape.height)
        track = rtc.LocalVideoTrack.create_video_track(TRACK_NAME, source)
        options = rtc.TrackPublishOptions(
            source=rtc.TrackSource.SOURCE_CAMERA,
            video_codec=rtc.VideoCodec.H264,
            video_encoder=rtc.VideoEncoderBackend.ENCODER_BACKEND_PRE_ENCODED,
            simulcast=False,
            frame_metadata_features=[
                rtc.FrameMetadataFeature.FMF_USER_TIMESTAMP,
                rtc.FrameMetadataFeature.FMF_FRAME_ID,
            ],
        )
        try:
            publication = await asyncio.wait_for(
                self.room.local_participant.publish_track(track, options), PUBLISH_TIMEOUT_S
            )
        except TimeoutError:
            raise PublishRejected(
                f"livekit-server did not accept camera {self.camera}'s track"
            ) from None
        self.source, self.publication, self.shape = source, publication, shape
        log.info("track published", extra={"track_sid": publication.sid})

    async def republish(self, shape: TrackShape) -> None:
        """The camera changed resolution: a new source and track of the new size."""
        await self._unpublish()
        await self._publish(shape)

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        if self.room is None or not self.room.isconnected():
            return
        try:
            await asyncio.wait_for(
                self.room.local_participant.set_attributes(attributes), CLOSE_TIMEOUT_S
            )
        except Exception as exc:  # the video matters more than the attributes
            # Needs can_update_own_metadata in the token; without it only the status suffers.
            log.warning("could not set participant attributes: %s", type(exc).__name__)

    def send(self, frame: StampedAccessUnit) -> bool:
        """Hand one access unit to WebRTC; False when the SDK refused it."""
        if self.source is None:
            return False
        frame_type = (
            rtc.EncodedFrameType.ENCODED_FRAME_KEY
            if frame.au.keyframe
            else rtc.EncodedFrameType.ENCODED_FRAME_DELTA
        )
        return self.source.capture_frame(
            rtc.EncodedVideoFrame(
                data=frame.au.data,
                width=frame.width,
                height=frame.height,
                codec=rtc.VideoCodec.H264,
                frame_type=frame_type,
                timestamp_us=frame.media_us,
                metadata=rtc.FrameMetadata(
                    user_timestamp=frame.arrival_us, frame_id=frame.frame_id
                ),
            )
        )

    def feedback(self) -> rtc.EncodedVideoSourceFeedback:
        """The sender's feedback since the last call: keyframe requests, rate control."""
        if self.source is None:
            return rtc.EncodedVideoSourceFeedback(keyframe_requested=False, rate_control=None)
        return self.source.take_feedback()

    def _on_reconnecting(self) -> None:
        log.warning("livekit connection lost, the SDK is resuming it")
        self.connected = False

    def _on_reconnected(self) -> None:
        log.info("livekit connection resumed")
        self.connected = True

    def _on_disconnected(self, reason: object = None) -> None:
        log.warning("disconnected from livekit-server", extra={"reason": str(reason)})
        self.lost.set()

    async def _unpublish(self) -> None:
        room, publication, source = self.room, self.publication, self.source
        self.publication, self.source, self.shape = None, None, None
        if room is not None and publication is not None and room.isconnected():
            try:
                await asyncio.wait_for(
                    room.local_participant.unpublish_track(publication.sid), CLOSE_TIMEOUT_S
                )
            except Exception as exc:  # leaving anyway
                log.warning("unpublish failed: %s", type(exc).__name__)
        if source is not None:
            await source.aclose()

    async def close(self) -> None:
        """Unpublish and leave, bounded in time: shutdown must not hang on a dead server."""
        self.connected = False
        await self._unpublish()
        room, self.room = self.room, None
        if room is not None:
            # A late event from the old room must not flip the state of the next one.
            room.off("disconnected", self._on_disconnected)
            room.off("reconnecting", self._on_reconnecting)
            room.off("reconnected", self._on_reconnected)
            try:
                await asyncio.wait_for(room.disconnect(), CLOSE_TIMEOUT_S)
            except Exception as exc:  # leaving anyway
                log.warning("disconnect failed: %s", type(exc).__name__)
