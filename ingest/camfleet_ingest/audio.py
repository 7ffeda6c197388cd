"""The camera's audio: demuxed from the same RTSP session, decoded, published as an Opus track.

The reader thread demuxes every stream of the one RTSP session (``RtspSource``); audio
packets come here (``AudioPipe.push``, on that thread), are decoded by FFmpeg (AAC, G.711
A-law/µ-law, Opus, or anything else FFmpeg decodes) and resampled to 48 kHz mono s16, and
the PCM goes to an ``rtc.AudioSource`` on the event loop, whose track the SDK encodes to Opus.
The Python SDK has no pre-encoded audio path, so an Opus camera is decoded and re-encoded too
(docs/ingest.md#audio).

A/V sync: the packets of both tracks leave FFmpeg's demuxer in arrival order and each is
handed on the moment it arrives, stamped by the same clock as the video (``time.time_ns``),
so audio and video enter WebRTC within the same millisecond of their arrival. The audio
track's source is ``SOURCE_MICROPHONE``, which livekit-server bundles with the camera's
``SOURCE_CAMERA`` track into one media stream, so browsers lip-sync the two by their RTCP
sender reports. The SDK's audio queue is kept short (``QUEUE_MS``); PCM that arrives while
it is full (the loop is starved, or a burst after a network stall) is dropped, not queued:
late audio is worse than a gap.

FFmpeg hands a video frame over one frame period after the audio captured with it (its H.264
parser completes an access unit only when the next one starts). Holding the audio back by that
much (from each stream's arrival-minus-pts floor) was tried and made the offset at a subscriber
worse, +150 ms instead of +45 ms: the audio's own path downstream (this queue, Opus framing,
the receiver's jitter buffer) is already the longer one (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import av
import av.audio.resampler
import av.audio.stream
from livekit import rtc

__all__ = ["AudioPipe", "PcmChunk"]

log = logging.getLogger(__name__)

TRACK_NAME = "microphone"
SAMPLE_RATE = 48_000
CHANNELS = 1
# The SDK's own buffer in front of its 10 ms audio ticks: enough for a 1024-sample AAC frame
# and some jitter; every millisecond queued here is a millisecond the sound lags the picture.
QUEUE_MS = 40
# PCM chunks waiting for the loop; past this, new ones are dropped.
MAX_PENDING = 25
PUBLISH_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 3.0


class PcmChunk:
    """Decoded audio, ready for ``rtc.AudioFrame``: s16 interleaved at 48 kHz."""

    __slots__ = ("arrival_us", "data", "samples")

    def __init__(self, data: bytes, samples: int, arrival_us: int) -> None:
        self.data = data
        self.samples = samples
        self.arrival_us = arrival_us


class AudioPipe:
    """Reader side: ``push`` packets. Loop side: ``follow`` the room, ``close`` at the end."""

    def __init__(
        self,
        camera: str,
        loop: asyncio.AbstractEventLoop,
        *,
        on_frame: Callable[[], None] = lambda: None,
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.camera = camera
        self.loop = loop
        # Counters (the ingest's metrics); on_drop is also called on the reader thread.
        self.on_frame = on_frame
        self.on_drop = on_drop
        self.codec: str | None = None  # the source's audio codec, once seen
        self._stream: object = None  # the PyAV stream the resampler was made for
        self._resampler: av.audio.resampler.AudioResampler | None = None
        # Chunks handed to the loop and taken by it: each written by one thread only, so their
        # difference is the backlog without a lock.
        self._handed = 0
        self._taken = 0
        self._failed_logged = False
        self.room: rtc.Room | None = None
        self.source: rtc.AudioSource | None = None
        self.publication: rtc.LocalTrackPublication | None = None
        self.on_codec: Callable[[str], None] | None = None  # told of a new source codec

    # --- reader thread ---------------------------------------------------------------------

    def push(self, packet: av.Packet[av.audio.stream.AudioStream], arrival_us: int) -> None:
        """One demuxed audio packet, on the reader thread: decode, resample, hand over."""
        stream = packet.stream
        if stream is not self._stream:  # a new session (or the first one)
            self._stream = stream
            self._resampler = av.audio.resampler.AudioResampler(
                format="s16", layout="mono", rate=SAMPLE_RATE
            )
            codec = stream.codec_context.name
            if codec != self.codec:
                self.codec = codec
                self.loop.call_soon_threadsafe(self._codec_seen, codec)
        assert self._resampler is not None
        try:
            frames = [f for f in packet.decode() if isinstance(f, av.AudioFrame)]
            pcm = [out for frame in frames for out in self._resampler.resample(frame)]
        except (av.FFmpegError, ValueError) as exc:
            # A corrupt audio packet costs that packet, never the video.
            if not self._failed_logged:
                self._failed_logged = True
                log.warning("audio packet did not decode: %s", type(exc).__name__)
            return
        for frame in pcm:
            samples = frame.samples
            data = bytes(frame.planes[0])[: samples * 2 * CHANNELS]
            if self._handed - self._taken >= MAX_PENDING:
                self.on_drop()
                continue
            self._handed += 1
            with contextlib.suppress(RuntimeError):  # the loop closed under a late packet
                self.loop.call_soon_threadsafe(self._deliver, PcmChunk(data, samples, arrival_us))

    # --- event loop ------------------------------------------------------------------------

    def _codec_seen(self, codec: str) -> None:
        if self.on_codec is not None:
            self.on_codec(codec)

    def _deliver(self, chunk: PcmChunk) -> None:
        self._taken += 1
        source = self.source
        if source is None or source.queued_duration * 1000 >= QUEUE_MS:
            # Not published (yet), or the track is behind: audio has no value later.
            self.on_drop()
            return
        frame = rtc.AudioFrame(chunk.data, SAMPLE_RATE, CHANNELS, chunk.samples)
        # capture_frame only waits when the SDK's queue is full, which was checked above.
        task = self.loop.create_task(source.capture_frame(frame))
        task.add_done_callback(self._captured)

    def _captured(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.on_drop()
        else:
            self.on_frame()

    async def follow(self, room: rtc.Room | None) -> None:
        """Publish the audio track into ``room`` once the source has audio (idempotent)."""
        if room is None or self.codec is None or room is self.room:
            return
        await self.unpublish()
        source = rtc.AudioSource(SAMPLE_RATE, CHANNELS, queue_size_ms=QUEUE_MS * 2)
        track = rtc.LocalAudioTrack.create_audio_track(TRACK_NAME, source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False)
        try:
            publication = await asyncio.wait_for(
                room.local_participant.publish_track(track, options), PUBLISH_TIMEOUT_S
            )
        except Exception as exc:
            await source.aclose()
            # Audio is secondary: the video stays; the next LiveKit reconnect tries again.
            log.warning("audio track not published: %s", type(exc).__name__)
            return
        self.room, self.source, self.publication = room, source, publication
        log.info("audio track published", extra={"codec": self.codec, "track_sid": publication.sid})

    async def unpublish(self) -> None:
        room, self.room = self.room, None
        source, self.source = self.source, None
        publication, self.publication = self.publication, None
        if room is not None and publication is not None and room.isconnected():
            try:
                await asyncio.wait_for(
                    room.local_participant.unpublish_track(publication.sid), CLOSE_TIMEOUT_S
                )
            except Exception as exc:  # leaving anyway
                log.warning("audio unpublish failed: %s", type(exc).__name__)
        if source is not None:
            await source.aclose()

    async def close(self) -> None:
        await self.unpublish()
