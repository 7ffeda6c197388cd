"""The supervisor: keep the camera flowing into LiveKit, whatever fails, until told to stop.

Two loops run side by side and heal independently: the source loop (RTSP session on a reader
thread) and the LiveKit loop (room connection and publication). A camera blip does not drop the
publication, and a livekit-server restart does not drop the RTSP session, so each side comes
back as fast as its own backoff allows. Only a permanent failure ends the process: its reason
goes to the termination log for the operator, and the exit code is non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import sys
import threading
import time

from pydantic import ValidationError

from camfleet import ingest_contract as ic
from camfleet_ingest.audio import AudioPipe
from camfleet_ingest.backoff import Backoff
from camfleet_ingest.failures import (
    IngestFailure,
    PublishRejected,
    Unreachable,
    write_termination_log,
)
from camfleet_ingest.health import IngestState, serve
from camfleet_ingest.logs import Redactor, configure
from camfleet_ingest.publisher import TrackPublisher, TrackShape
from camfleet_ingest.reader import ReaderEvent, SourceOpened, SourceReader, StampedAccessUnit
from camfleet_ingest.recording import Recorder, RecordingSettings, build_recorder
from camfleet_ingest.settings import IngestSettings, safe_errors
from camfleet_ingest.snapshot import Snapshots
from camfleet_ingest.warmup import Warmup

log = logging.getLogger("camfleet_ingest")

# Frames waiting for the event loop; more means the loop is starved, and old video is useless.
MAX_QUEUED_FRAMES = 50
# Extra grace over FFmpeg's own timeouts before a silent reader counts as stalled.
STALL_GRACE_S = 3.0
FEEDBACK_PERIOD_S = 0.1


class Supervisor:
    def __init__(self, settings: IngestSettings, state: IngestState) -> None:
        self.settings = settings
        self.state = state
        self.stop = asyncio.Event()
        self.fatal: IngestFailure | None = None
        self.publisher = TrackPublisher(settings.livekit_url, settings.camera)
        self.opened: SourceOpened | None = None
        self.attributes_changed = asyncio.Event()
        # One counter for the life of the process: frame ids never repeat across reconnects.
        self.frame_ids = itertools.count(1)
        self.keyframe_request = threading.Event()
        self.reader: SourceReader | None = None
        self._skip_to_keyframe = True
        # The camera's latest IDR, and the start-up of a fresh track that sends copies of it.
        self._last_idr: StampedAccessUnit | None = None
        self.snapshots = Snapshots(settings.snapshot_width, settings.snapshot_min_interval_s)
        self.audio: AudioPipe | None = None  # made in run(): it needs the loop
        self._warmup: Warmup | None = None
        self._warmed_source: object = None  # the track source the latest warm-up was for
        self._last_feedback = 0.0
        self._rejected = 0  # consecutive PublishRejected
        # The source's transient failure while it reconnects; published as participant
        # attributes so the operator can tell "camera down" from "ingest starting".
        self.source_failure: IngestFailure | None = None
        # Records the same frames into the object store (docs/recording.md); None: not recording.
        self.recorder: Recorder | None = None

    def _new_backoff(self, cap: float) -> Backoff:
        return Backoff(base=self.settings.backoff_base_s, cap=cap)

    async def run(self) -> int:
        if self.settings.audio_enabled:
            self.audio = AudioPipe(
                self.settings.camera,
                asyncio.get_running_loop(),
                on_frame=self.state.audio_frames.inc,
                on_drop=self.state.audio_dropped.inc,
            )
            self.audio.on_codec = lambda _codec: self.attributes_changed.set()
        tasks = [
            asyncio.create_task(self._source_loop(), name="source"),
            asyncio.create_task(self._livekit_loop(), name="livekit"),
        ]
        if self.recorder is not None:
            tasks.append(asyncio.create_task(self.recorder.run(self.stop), name="recorder"))
        stopped = asyncio.create_task(self.stop.wait())
        crashed = False
        try:
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopped}:
                if not task.cancelled() and task.exception() is not None:
                    # A bug, not a camera fault: exit non-zero so the pod restarts cleanly
                    # rather than sitting unhealthy with half a supervisor.
                    log.error("%s loop crashed", task.get_name(), exc_info=task.exception())
                    crashed = True
        finally:
            self.stop.set()  # the recorder drains within its own bound before it ends
            for task in [stopped, *tasks]:
                if task.get_name() != "recorder":
                    task.cancel()
            await asyncio.gather(stopped, *tasks, return_exceptions=True)
            await self._shutdown()
        return 1 if self.fatal is not None or crashed else 0

    async def _shutdown(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.stop()
        if self.audio is not None:
            await self.audio.close()
        await self.publisher.close()
        if reader is not None:
            # Let the reader send its RTSP TEARDOWN (it wakes every frame, ≤ 40 ms at 25 fps);
            # it is a daemon thread, so a hung read cannot hold the exit beyond this.
            await asyncio.to_thread(reader.join, 2.0)

    def _fail(self, failure: IngestFailure) -> None:
        self.state.failed(failure.reason)
        if failure.permanent:
            log.error(
                "permanent failure, exiting",
                extra={"reason": failure.reason, "detail": failure.message},
            )
            self.fatal = failure
            write_termination_log(self.settings.termination_log, failure)
            self.stop.set()
        else:
            log.warning(
                "transient failure", extra={"reason": failure.reason, "detail": failure.message}
            )

    async def _retry_after(self, backoff: Backoff, side: str, what: str) -> None:
        delay = backoff.next_delay()
        self.state.reconnecting(side)
        log.info("reconnecting to %s", what, extra={"delay_s": round(delay, 2)})
        await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), delay)

    # --- source side -----------------------------------------------------------------------

    async def _source_loop(self) -> None:
        backoff = self._new_backoff(self.settings.source_backoff_cap_s)
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            queue: asyncio.Queue[ReaderEvent] = asyncio.Queue()

            def emit(event: ReaderEvent, queue: asyncio.Queue[ReaderEvent] = queue) -> None:
                # The daemon reader may outlive the loop by a frame at exit: drop, don't raise.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._enqueue, queue, event)

            audio_sink = self.audio.push if self.audio is not None else None
            reader = SourceReader(
                self.settings, emit, self.frame_ids, self.keyframe_request, audio_sink
            )
            self.reader = reader
            reader.start()
            try:
                failure = await self._pump(queue, backoff)
            finally:
                reader.stop()
            self._fail(failure)
            if self.recorder is not None:
                self.recorder.source_lost()
            if not failure.permanent:
                self.source_failure = failure
                self.attributes_changed.set()
            # A stalled reader may still sit in a read: let FFmpeg's timeout end it before a
            # new session starts, so the camera never sees two sessions from this ingest.
            await asyncio.to_thread(reader.join, self.settings.read_timeout_s + STALL_GRACE_S)
            if self.stop.is_set():
                return
            await self._retry_after(backoff, "source", "the camera")

    def _enqueue(self, queue: asyncio.Queue[ReaderEvent], event: ReaderEvent) -> None:
        if isinstance(event, StampedAccessUnit) and queue.qsize() >= MAX_QUEUED_FRAMES:
            self._skip_to_keyframe = True  # a gap: decoders need a fresh IDR after it
            return
        queue.put_nowait(event)

    async def _pump(self, queue: asyncio.Queue[ReaderEvent], backoff: Backoff) -> IngestFailure:
        s = self.settings
        loop = asyncio.get_running_loop()
        timeout = s.open_timeout_s + s.read_timeout_s + STALL_GRACE_S

        def stalled() -> None:
            queue.put_nowait(Unreachable(f"camera {s.camera}: no frames for {timeout:.0f}s"))

        # A re-armed timer rather than wait_for() per frame: this loop runs 25+ times a second
        # per camera, and a task per frame is a measurable share of the passthrough CPU.
        watchdog = loop.call_later(timeout, stalled)
        try:
            while True:
                event = await queue.get()
                if isinstance(event, IngestFailure):
                    return event
                watchdog.cancel()
                if isinstance(event, SourceOpened):
                    self._source_opened(event)
                    timeout = s.read_timeout_s + STALL_GRACE_S
                    watchdog = loop.call_later(timeout, stalled)
                    continue
                if self.recorder is not None:  # before the live path may skip the frame
                    au = event.au
                    self.recorder.feed(
                        au.data,
                        au.keyframe,
                        event.frame_id,
                        event.arrival_us,
                        event.width,
                        event.height,
                    )
                if self._publish(event):
                    backoff.reset()
                watchdog = loop.call_later(timeout, stalled)
        finally:
            watchdog.cancel()

    def _source_opened(self, opened: SourceOpened) -> None:
        info = opened.info
        log.info(
            "camera connected",
            extra={
                "mode": opened.mode,
                "codec": info.codec_label,
                "profile": info.profile or "",
                "resolution": info.resolution,
                "fps": info.fps,
                "b_frames": info.has_b_frames,
            },
        )
        changed = self.opened is None or self.opened != opened
        self.opened = opened
        self._skip_to_keyframe = True
        self._last_idr = None  # a new session may bring new parameter sets
        if opened.mode == "transcode":
            self.keyframe_request.set()  # start the new session with an IDR
        self.state.source_info(opened.mode, info.codec_label, info.resolution)
        if changed:  # the first open publishes the track, a new shape republishes it
            self.attributes_changed.set()

    def _publish(self, frame: StampedAccessUnit) -> bool:
        if frame.au.keyframe:
            self._last_idr = frame
            self.snapshots.keyframe(frame)
        publisher = self.publisher
        if not publisher.ready or publisher.shape != TrackShape(frame.width, frame.height):
            self._skip_to_keyframe = True
            return False
        if publisher.source is not self._warmed_source:  # a track published since the last frame
            self._warmed_source = publisher.source
            idr = self._last_idr
            if idr is not None and TrackShape(idr.width, idr.height) != publisher.shape:
                idr = None  # from before a resolution change: not for this track
            self._warmup = Warmup(idr)
        if self._warmup is not None:
            return self._warm_up(self._warmup, frame)
        self._poll_feedback()
        if self._skip_to_keyframe:
            if not frame.au.keyframe:
                return False
            self._skip_to_keyframe = False
        return self._send([frame])

    def _warm_up(self, warmup: Warmup, frame: StampedAccessUnit) -> bool:
        feedback = self.publisher.feedback()
        frames = warmup.on_frame(
            frame,
            keyframe_requested=feedback.keyframe_requested,
            running=feedback.rate_control is not None,
        )
        if feedback.keyframe_requested:
            self._keyframe_requested()
        if warmup.live:
            self._warmup = None
            self._skip_to_keyframe = False
            self._last_feedback = time.monotonic()
            log.info("track live", extra={"idr_copies": warmup.copies})
        return self._send(frames)

    def _send(self, frames: list[StampedAccessUnit]) -> bool:
        sent = False
        for frame in frames:
            if self.publisher.send(frame):
                sent = True
                self.state.frame_published(len(frame.au.data))
        if sent and self.source_failure is not None:
            self.source_failure = None  # frames flow again
            self.attributes_changed.set()
        return sent

    def _poll_feedback(self) -> None:
        """Forward LiveKit's keyframe requests, at most every FEEDBACK_PERIOD_S.

        Each poll is an FFI round trip; 10 a second is ample for a request that the encoder
        answers on its next frame (and that passthrough cannot answer at all).
        """
        now = time.monotonic()
        if now - self._last_feedback < FEEDBACK_PERIOD_S:
            return
        self._last_feedback = now
        if self.publisher.feedback().keyframe_requested:
            self._keyframe_requested()

    def _keyframe_requested(self) -> None:
        self.state.keyframe_requests.inc()
        # Only the transcoder can act on it; passthrough waits for the camera's next IDR.
        self.keyframe_request.set()

    # --- LiveKit side ----------------------------------------------------------------------

    def _attributes(self) -> dict[str, str]:
        # state/reason only while the camera is down and the source side reconnects (also
        # before it ever answered); LiveKit deletes an attribute set to "", so a live ingest
        # shows just mode/codec/resolution/fps.
        attributes = {
            ic.ATTR_STATE: "" if self.source_failure is None else ic.STATE_RECONNECTING,
            ic.ATTR_REASON: "" if self.source_failure is None else self.source_failure.reason,
            ic.ATTR_SNAPSHOT: self.settings.snapshot_url or "",
            ic.ATTR_AUDIO: (self.audio.codec or "") if self.audio is not None else "",
        }
        if self.recorder is not None:
            attributes[ic.ATTR_RECORDING] = self.recorder.state
            attributes[ic.ATTR_RECORDING_REASON] = self.recorder.reason
        if self.opened is not None:
            info = self.opened.info
            attributes |= {
                ic.ATTR_MODE: self.opened.mode,
                ic.ATTR_CODEC: info.codec_label,
                ic.ATTR_RESOLUTION: info.resolution,
                ic.ATTR_FPS: f"{info.fps:g}",
            }
        return attributes

    async def _livekit_loop(self) -> None:
        backoff = self._new_backoff(self.settings.backoff_cap_s)
        while not self.stop.is_set():
            try:
                await self._stay_published(backoff)
                return
            except IngestFailure as failure:
                if isinstance(failure, PublishRejected):
                    self._rejected += 1
                    if self._rejected >= self.settings.publish_rejected_attempts:
                        failure = _Final(f"{failure.message} ({self._rejected} attempts)")
                else:
                    self._rejected = 0
                await self.publisher.close()
                self._fail(failure)
            if self.stop.is_set():
                return
            await self._retry_after(backoff, "livekit", "livekit-server")

    async def _stay_published(self, backoff: Backoff) -> None:
        """Join the room, publish once the camera answers, follow attribute and shape changes
        until the server is lost.

        The ingest joins before the camera answers, so that a camera that is down from the
        start shows up (state/reason attributes) instead of leaving the Camera "Connecting".
        """
        try:
            token = self.settings.read_token()
        except OSError as exc:
            raise PublishRejected(
                f"camera {self.settings.camera}: token file unreadable ({type(exc).__name__})"
            ) from None
        self.attributes_changed.clear()
        await self.publisher.connect(token)
        backoff.reset()
        self._rejected = 0
        while True:
            # Attributes first: whoever LiveKit tells of the track (the operator, by webhook)
            # finds them already set.
            await self.publisher.set_attributes(self._attributes())
            if self.opened is not None:
                info = self.opened.info
                shape = TrackShape(info.width, info.height)
                if self.publisher.shape is None:
                    await self._publish_track(shape)
                elif shape != self.publisher.shape:
                    log.info("source resolution changed, republishing")
                    await self.publisher.republish(shape)
                    self._skip_to_keyframe = True
                if self.audio is not None:  # once the source has audio; again after a reconnect
                    await self.audio.follow(self.publisher.room)
            lost = asyncio.create_task(self.publisher.lost.wait())
            changed = asyncio.create_task(self.attributes_changed.wait())
            try:
                await asyncio.wait({lost, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                changed.cancel()
            if self.publisher.lost.is_set():
                raise Unreachable(
                    f"camera {self.settings.camera}: lost livekit-server at {self.publisher.url}"
                )
            self.attributes_changed.clear()

    async def _publish_track(self, shape: TrackShape) -> None:
        self._skip_to_keyframe = True
        self.keyframe_request.set()
        await self.publisher.publish(shape)
        log.info("publishing", extra={"room": self.settings.room, **self._attributes()})


class _Final(PublishRejected):
    """PublishRejected that survived every attempt with a freshly read token."""

    permanent = True


async def _main(settings: IngestSettings, recording: RecordingSettings) -> int:
    state = IngestState(settings.camera, settings.healthy_window_s)
    supervisor = Supervisor(settings, state)
    supervisor.recorder = build_recorder(
        recording, settings.camera, state.registry, supervisor.attributes_changed.set
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop.set)
    log.info(
        "starting",
        extra={"room": settings.room, "mode": settings.mode, "transport": settings.transport},
    )
    started = time.monotonic()
    async with serve(state, settings.http_host, settings.http_port, supervisor.snapshots):
        code = await supervisor.run()
    log.info("stopped", extra={"exit_code": code, "uptime_s": round(time.monotonic() - started)})
    return code


def run() -> int:
    """Entry point of ``camfleet-ingest``: settings from the environment, then supervise."""
    redact = Redactor()
    try:
        settings = IngestSettings()  # type: ignore[call-arg]  # filled from the environment
        recording = RecordingSettings()
    except ValidationError as exc:
        configure("INFO", redact, {})
        prefix = ic.ENV_PREFIX + ("RECORDING_" if exc.title == RecordingSettings.__name__ else "")
        message = f"invalid settings: {safe_errors(exc, prefix)}"
        log.error(message)
        print(message, file=sys.stderr)
        return 2
    try:
        _, password = settings.credentials()
    except OSError as exc:
        configure("INFO", redact, {})
        log.error("cannot read the camera credentials file: %s", type(exc).__name__)
        return 2
    redact.add(password)
    configure(settings.log_level, redact, {"camera": settings.camera})
    return asyncio.run(_main(settings, recording))
