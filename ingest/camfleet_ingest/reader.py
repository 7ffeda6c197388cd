"""The reader thread: owns the RTSP session and hands stamped access units to the event loop.

FFmpeg's reads block, so they live on one daemon thread per source session rather than on the
event loop (which must keep answering /healthz and LiveKit). The thread reports through a
callback that the supervisor makes thread-safe (``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from camfleet_ingest.annexb import AccessUnit
from camfleet_ingest.failures import IngestFailure, classify_source_error
from camfleet_ingest.settings import IngestSettings
from camfleet_ingest.source import AudioSink, Resolved, RtspSource, SourceInfo, choose_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceOpened:
    info: SourceInfo
    mode: Resolved


@dataclass(frozen=True)
class StampedAccessUnit:
    """An access unit with the stamp of the camera frame it was made from."""

    au: AccessUnit
    frame_id: int
    arrival_us: int
    media_us: int
    width: int
    height: int


ReaderEvent = SourceOpened | StampedAccessUnit | IngestFailure


class Increasing:
    """Clamp a clock to strictly increasing values, at least ``step`` apart (WebRTC and
    subscribers rely on it)."""

    def __init__(self, step: int = 1) -> None:
        self.step = step
        self.last = -step

    def __call__(self, value: int) -> int:
        self.last = max(value, self.last + self.step)
        return self.last


class SourceReader(threading.Thread):
    """Open the source, pick the mode, then demux (and transcode if needed) until stopped."""

    def __init__(
        self,
        settings: IngestSettings,
        emit: Callable[[ReaderEvent], None],
        frame_ids: itertools.count[int],
        keyframe_request: threading.Event,
        audio_sink: AudioSink | None = None,
    ) -> None:
        super().__init__(name="rtsp-reader", daemon=True)
        self.settings = settings
        self.audio_sink = audio_sink
        self.emit = emit
        self.frame_ids = frame_ids
        self.keyframe_request = keyframe_request
        self._stopping = threading.Event()
        self._arrival = Increasing()
        # The RTP clock: WebRTC drops a frame that does not move it forward (90 kHz, so 1 ms
        # apart is always a new tick), and the SDK keys frame metadata by it.
        self._media = Increasing(step=1_000)

    def _frame(
        self, au: AccessUnit, frame_id: int, arrival_us: int, media_us: int, info: SourceInfo
    ) -> StampedAccessUnit:
        return StampedAccessUnit(
            au,
            frame_id,
            self._arrival(arrival_us),
            self._media(media_us),
            info.width,
            info.height,
        )

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        source = RtspSource(self.settings, self.audio_sink)
        try:
            self._run(source)
        except IngestFailure as failure:
            if not self._stopping.is_set():
                self.emit(failure)
        except Exception as exc:  # a reader bug must surface as a failure
            log.exception("reader crashed")
            if not self._stopping.is_set():
                self.emit(classify_source_error(exc, self.settings.camera))
        finally:
            source.close()

    def _run(self, source: RtspSource) -> None:
        info = source.open()
        mode = choose_mode(self.settings.mode, info, self.settings.camera)
        if self._stopping.is_set():
            return
        self.emit(SourceOpened(info, mode))
        if mode == "passthrough":
            self._passthrough(source, info)
        else:
            self._transcode(source, info)

    def _passthrough(self, source: RtspSource, info: SourceInfo) -> None:
        started = False
        for packet in source.packets():
            if self._stopping.is_set():
                return
            # Every camera frame takes an id, even one we drop, so that id differences
            # always equal frame differences downstream.
            frame_id = next(self.frame_ids)
            for au in source.access_units(packet):
                # A decoder cannot start on a delta frame: wait for the session's first IDR.
                started = started or au.keyframe
                if started:
                    self.emit(self._frame(au, frame_id, packet.arrival_us, packet.media_us, info))

    def _transcode(self, source: RtspSource, info: SourceInfo) -> None:
        from camfleet_ingest.transcode import Transcoder  # passthrough skips it

        assert source.stream is not None
        decoder = source.stream.codec_context
        transcoder = Transcoder(
            decoder, info.fps, self.settings.max_bitrate_kbps, self.keyframe_request
        )
        for packet in source.packets():
            if self._stopping.is_set():
                return
            # Ids are drawn in presentation order, as the picture (and its frame code) runs.
            for au, stamp in transcoder.push(packet):
                frame_id = next(self.frame_ids)
                self.emit(self._frame(au, frame_id, stamp.arrival_us, stamp.media_us, info))
