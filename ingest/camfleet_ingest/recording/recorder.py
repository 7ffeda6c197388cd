"""The recorder: the live frames, cut into segments, written to the store and the index off the
live path, and never at its expense.

``feed`` runs on the event loop for every frame and only appends (the segmenter is O(1)). A
closed segment joins a queue bounded in bytes; one writer task muxes it on a worker thread,
uploads it, then indexes it. While the store (or the index) fails, the writer retries the same
segment with backoff and the queue fills; once it is full, new segments are dropped and counted
as a gap. The live path never waits for any of it. When writes succeed again the queue drains
by itself and the gap is indexed with its reason, so playback shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from camfleet import ingest_contract as ic
from camfleet.recording import Gap, GapReason, Segment, segment_key
from camfleet_ingest.backoff import Backoff
from camfleet_ingest.recording.index import SegmentIndex
from camfleet_ingest.recording.mux import remux
from camfleet_ingest.recording.retention import enforce_age
from camfleet_ingest.recording.segmenter import ClosedSegment, Sample, Segmenter
from camfleet_ingest.recording.settings import RecordingSettings
from camfleet_ingest.recording.store import ObjectStore, put

log = logging.getLogger(__name__)

#: Consecutive segments further apart than this leave a gap in the index.
GAP_TOLERANCE_US: Final = 500_000
#: At shutdown, how long the writer may still drain the queue (the pod's grace period is 15 s).
DRAIN_TIMEOUT_S: Final = 5.0


class BadSegment(Exception):
    """FFmpeg could not mux a segment: it is dropped (retrying would fail the same way)."""


class RecorderMetrics:
    def __init__(self, registry: CollectorRegistry, camera: str) -> None:
        r, cam = registry, ["camera"]
        self.camera = camera
        self.segments = Counter(
            "camfleet_ingest_recording_segments", "Segments stored and indexed", cam, registry=r
        ).labels(camera)
        self.bytes = Counter(
            "camfleet_ingest_recording_bytes", "Bytes of segments stored", cam, registry=r
        ).labels(camera)
        self.dropped_seconds = Counter(
            "camfleet_ingest_recording_dropped_seconds",
            "Capture seconds not recorded because the buffer was full",
            cam,
            registry=r,
        ).labels(camera)
        self.gaps = Counter(
            "camfleet_ingest_recording_gaps", "Gaps indexed", ["camera", "reason"], registry=r
        )
        self.store_errors = Counter(
            "camfleet_ingest_recording_store_errors",
            "Failed uploads or index writes (each is retried)",
            cam,
            registry=r,
        ).labels(camera)
        self.buffered_bytes = Gauge(
            "camfleet_ingest_recording_buffered_bytes",
            "Bytes of segments waiting for the store",
            cam,
            registry=r,
        ).labels(camera)
        self.stored_bytes = Gauge(
            "camfleet_ingest_recording_stored_bytes",
            "Bytes of this camera's segments in the store (from the index)",
            cam,
            registry=r,
        ).labels(camera)
        self.retention_deleted = Counter(
            "camfleet_ingest_recording_retention_deleted_segments",
            "Segments deleted by retention (age)",
            cam,
            registry=r,
        ).labels(camera)
        self.recording = Gauge(
            "camfleet_ingest_recording",
            "1 while segments reach the store, 0 during a gap",
            cam,
            registry=r,
        ).labels(camera)


class Recorder:
    def __init__(
        self,
        settings: RecordingSettings,
        camera: str,
        store: ObjectStore,
        prefix: str,
        index: SegmentIndex,
        registry: CollectorRegistry,
        on_change: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.camera = camera
        self.store = store
        self.prefix = prefix
        self.index = index
        self.metrics = RecorderMetrics(registry, camera)
        self.on_change = on_change
        self.segmenter = Segmenter(settings.segment_us, max_us=4 * settings.segment_us)
        self._queue: deque[ClosedSegment] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._backoff = Backoff(base=settings.retry_base_s, cap=settings.retry_cap_s)
        self._failing = False
        self._dropped: GapReason | None = None  # why segments were dropped since the last queued
        self._shedding = False  # dropping new segments until the queue has drained
        self._indexed_end: int | None = None
        self._looked_up = False  # the previous run's end was read from the index
        self._first = True
        self.state = ic.RECORDING_ON
        self.reason = ""
        self.metrics.recording.set(1)

    # --- on the live path: cheap, never blocks, never raises -------------------------------

    def feed(
        self, data: bytes, keyframe: bool, frame_id: int, stamp_us: int, width: int, height: int
    ) -> None:
        closed = self.segmenter.push(Sample(data, keyframe, frame_id, stamp_us, width, height))
        if closed is not None:
            self._enqueue(closed)

    def source_lost(self) -> None:
        """The camera went away: close the open segment now rather than at the next frame."""
        closed = self.segmenter.flush()
        if closed is not None:
            self._enqueue(closed)

    def _enqueue(self, segment: ClosedSegment) -> None:
        # One segment always fits: the bound is on what waits behind the one being written.
        # Once full, drop until the writer has drained half of it: one gap, not a gap with
        # small segments that happened to fit scattered through it.
        full = self._queued_bytes + segment.size > self.settings.buffer_bytes
        if self._queue and (full or self._shedding):
            self._shedding = True
            reason: GapReason = "StoreUnavailable" if self._failing else "BufferFull"
            self._dropped = self._dropped or reason
            self.metrics.dropped_seconds.inc((segment.end_us - segment.start_us) / 1e6)
            self._set_state(ic.RECORDING_GAP, reason)
            return
        segment.after_gap, self._dropped = self._dropped, None
        self._queue.append(segment)
        self._queued_bytes += segment.size
        self.metrics.buffered_bytes.set(self._queued_bytes)
        self._wake.set()

    def _set_state(self, state: str, reason: str = "") -> None:
        if (state, reason) != (self.state, self.reason):
            self.state, self.reason = state, reason
            self.metrics.recording.set(1 if state == ic.RECORDING_ON else 0)
            level = logging.INFO if state == ic.RECORDING_ON else logging.WARNING
            log.log(level, "recording %s", state, extra={"reason": reason})
            self.on_change()

    # --- the writer task ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Write queued segments until ``stop``; then drain what is left, within a bound."""
        stopping = asyncio.create_task(stop.wait())
        retention = asyncio.create_task(self._retention_loop(stop), name="recording-retention")
        try:
            while not stop.is_set():
                if not self._queue:
                    self._wake.clear()
                    woken = asyncio.create_task(self._wake.wait())
                    await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    woken.cancel()
                    continue
                if not await self._write_head():
                    await self._pause(stop)
        finally:
            stopping.cancel()
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
        self.source_lost()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), DRAIN_TIMEOUT_S)
        if self._queue:
            log.warning(
                "recording stopped with segments unwritten", extra={"segments": len(self._queue)}
            )
        await self.index.close()

    async def _retention_loop(self, stop: asyncio.Event) -> None:
        """Age retention and the stored-bytes figure, every ``retention_every_s``; a failed
        pass is logged and tried again at the next one (the store may be away)."""
        while not stop.is_set():
            try:
                deleted = await enforce_age(
                    self.index, self.store, self.camera, self.settings.retention, prefix=self.prefix
                )
                self.metrics.retention_deleted.inc(deleted)
                self.metrics.stored_bytes.set(await self.index.stored_bytes(self.camera))
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:
                log.warning("recording retention failed", extra={"error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.retention_every_s)

    async def _drain(self) -> None:
        while self._queue and await self._write_head():
            pass

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self._backoff.next_delay())

    async def _write_head(self) -> bool:
        """Write the oldest queued segment; False when the store or the index failed."""
        segment = self._queue[0]
        try:
            await asyncio.wait_for(self._write(segment), self.settings.store_timeout_s * 2)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except BadSegment as exc:
            log.error("segment dropped: cannot mux it", extra={"error": str(exc.__cause__)})
            self._queue.popleft()
            self._queued_bytes -= segment.size
            if self._queue:
                self._queue[0].after_gap = self._queue[0].after_gap or "SourceLost"
            else:
                self._dropped = self._dropped or "SourceLost"
            return True
        except Exception as exc:  # whatever the store or the network raised: retried later
            self.metrics.store_errors.inc()
            if not self._failing:
                log.warning("recording store failed", extra={"error": type(exc).__name__})
            self._failing = True
            if self._dropped == "BufferFull":
                # Dropped while this write hung: the store was away, not merely slow.
                self._dropped = "StoreUnavailable"
            self._set_state(ic.RECORDING_GAP, ic.GAP_STORE_UNAVAILABLE)
            return False
        self._queue.popleft()
        self._queued_bytes -= segment.size
        self.metrics.buffered_bytes.set(self._queued_bytes)
        if self._queued_bytes <= self.settings.buffer_bytes // 2:
            self._shedding = False  # only a write makes room, so only a write ends the gap
        self._failing = False
        self._backoff.reset()
        self._set_state(ic.RECORDING_ON)
        return True

    async def _write(self, segment: ClosedSegment) -> None:
        if segment.data is None:
            try:
                segment.data = await asyncio.to_thread(remux, segment)
            except Exception as exc:
                raise BadSegment(type(exc).__name__) from exc
            segment.key = segment_key(self.prefix, self.camera, segment.start_us)
        if not segment.uploaded:
            await put(self.store, segment.key, segment.data)
            segment.uploaded = True
        if not self._looked_up:
            self._indexed_end = await self.index.last_end_us(self.camera)
            self._looked_up = True
        previous = self._indexed_end
        if previous is not None and segment.start_us - previous > GAP_TOLERANCE_US:
            reason: GapReason = segment.after_gap or (
                "IngestRestart" if self._first else "SourceLost"
            )
            await self.index.add_gap(
                Gap(camera=self.camera, start_us=previous, end_us=segment.start_us, reason=reason)
            )
            self.metrics.gaps.labels(self.camera, reason).inc()
        first = segment.samples[0]
        await self.index.add_segment(
            Segment(
                camera=self.camera,
                start_us=segment.start_us,
                end_us=segment.end_us,
                first_frame=first.frame_id,
                frames=len(segment.samples),
                keyframes_us=segment.keyframes_us,
                size=len(segment.data),
                key=segment.key,
            )
        )
        self._indexed_end = segment.end_us
        self._first = False
        self.metrics.segments.inc()
        self.metrics.bytes.inc(len(segment.data))
        segment.samples = segment.samples[:1]  # the file is out: free the access units
        segment.data = b""
