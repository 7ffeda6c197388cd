"""Redis Streams side of the gateway: one reader per watched camera per replica.

A reader is started when the first local subscriber of a camera appears and stopped a little
after the last one leaves. It XREADs with BLOCK from a concrete last-delivered id (never "$"
after the first read, so nothing between two reads is lost), validates every entry against the
event contract, builds the client message once and hands the batch to the sink (the hub).
On a Redis error it tells the sink the camera is degraded, retries with capped exponential
backoff and jitter, and resumes from the last delivered id: nothing inside retention is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from camfleet.events import EVENT_MAX_BYTES, STREAM_FIELD, Event, stream_key
from overlay_gateway.metrics import Metrics
from overlay_gateway.protocol import event_message

log = logging.getLogger(__name__)

__all__ = ["Broker", "EventSink", "ReplayResult", "classify_entry"]

_FIELD = STREAM_FIELD.encode()


class EventSink(Protocol):
    def publish(self, camera: str, batch: list[tuple[str, bytes]], arrived: float) -> int: ...
    def status(self, camera: str, state: str) -> None: ...


@dataclass(frozen=True)
class ReplayResult:
    events: list[tuple[str, bytes]]
    # True when entries after `since` may have been trimmed away before the client came back.
    gap: bool


def classify_entry(camera: str, fields: dict[bytes, bytes]) -> tuple[Event | None, str]:
    """Validate one stream entry; returns (event, "") or (None, reason it is invalid)."""
    raw = fields.get(_FIELD)
    if raw is None:
        return None, "missing_field"
    if len(raw) > EVENT_MAX_BYTES:
        # Refused before parsing: a 10 MB entry must not cost a 10 MB parse.
        return None, "too_large"
    try:
        event = Event.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            return None, "not_json"
        if errors and errors[0]["loc"] == ("v",):
            return None, "version"
        return None, "schema"
    if event.camera != camera:
        return None, "camera_mismatch"
    return event, ""


def _position(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class _Reader:
    def __init__(self, broker: Broker, camera: str) -> None:
        self.broker = broker
        self.camera = camera
        self.key = stream_key(camera)
        self.last_id: str | None = None
        self.degraded = False
        self.ready = asyncio.Event()
        self.refs = 0
        self.task: asyncio.Task[None] | None = None
        self.stop_handle: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        b = self.broker
        backoff = b.backoff_initial
        while True:
            try:
                if self.last_id is None:
                    self.last_id = await self._tail()
                self.ready.set()
                response: Any = await b.redis.xread(
                    {self.key: self.last_id}, count=b.xread_count, block=b.xread_block_ms
                )
                if self.degraded:
                    self.degraded = False
                    log.info("stream reader recovered", extra={"camera": self.camera})
                    b.sink.status(self.camera, "live")
                backoff = b.backoff_initial
                for _key, entries in response or []:
                    self._deliver(entries)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                b.metrics.redis_errors.inc()
                if not self.degraded:
                    self.degraded = True
                    log.warning(
                        "stream reader degraded",
                        extra={"camera": self.camera, "error": type(exc).__name__},
                    )
                    b.sink.status(self.camera, "degraded")
                # Subscribers are told "degraded"; they must not wait for Redis to return.
                self.ready.set()
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, b.backoff_max)
            except Exception:
                # A reader must never die on one surprising entry or reply.
                log.exception("stream reader error", extra={"camera": self.camera})
                await asyncio.sleep(b.backoff_max)

    async def _tail(self) -> str:
        # Resolve "$" to a concrete id once, so later reads never skip an entry.
        last: Any = await self.broker.redis.xrevrange(self.key, count=1)
        return _position(last[0][0]) if last else "0-0"

    def _deliver(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        b = self.broker
        arrived = time.monotonic()
        now_ms = time.time() * 1000
        batch: list[tuple[str, bytes]] = []
        for raw_id, fields in entries:
            position = _position(raw_id)
            self.last_id = position
            event, reason = classify_entry(self.camera, fields)
            if event is None:
                b.metrics.events_invalid.labels(reason).inc()
                log.debug("dropped invalid event", extra={"camera": self.camera, "reason": reason})
                continue
            b.metrics.event_age.observe(max(0.0, now_ms - event.ts) / 1000)
            batch.append((position, event_message(self.camera, position, event.to_json())))
        if batch:
            b.metrics.events_in.inc(len(batch))
            b.sink.publish(self.camera, batch, arrived)


class Broker:
    """Owns the Redis client and the per-camera readers of one gateway replica."""

    def __init__(
        self,
        redis: aioredis.Redis,
        sink: EventSink,
        metrics: Metrics,
        *,
        xread_block_ms: int = 5000,
        xread_count: int = 100,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        linger: float = 5.0,
    ) -> None:
        self.redis = redis
        self.sink = sink
        self.metrics = metrics
        self.xread_block_ms = xread_block_ms
        self.xread_count = xread_count
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.linger = linger
        self._readers: dict[str, _Reader] = {}

    def degraded(self, camera: str) -> bool:
        reader = self._readers.get(camera)
        return reader is not None and reader.degraded

    async def watch(self, camera: str) -> None:
        """Take a reference on the camera's reader, starting it; returns once it has a position."""
        reader = self._readers.get(camera)
        if reader is None:
            reader = self._readers[camera] = _Reader(self, camera)
            reader.task = asyncio.get_running_loop().create_task(
                reader.run(), name=f"reader:{camera}"
            )
            self.metrics.readers.set(len(self._readers))
        reader.refs += 1
        if reader.stop_handle is not None:
            reader.stop_handle.cancel()
            reader.stop_handle = None
        await reader.ready.wait()

    def release(self, camera: str) -> None:
        reader = self._readers.get(camera)
        if reader is None:
            return
        reader.refs -= 1
        if reader.refs <= 0 and reader.stop_handle is None:
            if self.linger > 0:
                reader.stop_handle = asyncio.get_running_loop().call_later(
                    self.linger, self._stop, camera
                )
            else:
                self._stop(camera)

    def _stop(self, camera: str) -> None:
        reader = self._readers.get(camera)
        if reader is None or reader.refs > 0:
            return
        del self._readers[camera]
        if reader.task is not None:
            reader.task.cancel()
        self.metrics.readers.set(len(self._readers))

    async def replay(self, camera: str, since: str, limit: int) -> ReplayResult:
        """Valid events after `since`, oldest first (at most `limit`, the newest if more)."""
        key = stream_key(camera)
        start = since if since.startswith("(") else f"({since}"
        if since in ("0", "0-0"):
            start = "-"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrevrange(key, max="+", min=start, count=limit + 1)
            pipe.xinfo_stream(key)
            rev, info = await self._pipeline(pipe)
        rev = rev or []
        gap = len(rev) > limit
        entries = list(reversed(rev[:limit]))
        # MAXLEN trimming leaves no trace of what it removed; if `since` itself is no longer
        # retained, entries after it may have gone too: say so (conservatively).
        first = (info or {}).get("recorded-first-entry-id")
        if first is not None and since not in ("0", "0-0") and _key(_position(first)) > _key(since):
            gap = True
        events: list[tuple[str, bytes]] = []
        for raw_id, fields in entries:
            position = _position(raw_id)
            event, _reason = classify_entry(camera, fields)
            if event is not None:
                events.append((position, event_message(camera, position, event.to_json())))
        self.metrics.replays.inc()
        self.metrics.replayed_events.inc(len(events))
        return ReplayResult(events, gap)

    @staticmethod
    async def _pipeline(pipe: Any) -> list[Any]:
        result: list[Any] = await pipe.execute(raise_on_error=False)
        # XINFO on a missing stream errors; that only means "nothing deleted yet".
        return [None if isinstance(r, Exception) else r for r in result]

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), timeout=1.0))
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        tasks = [r.task for r in self._readers.values() if r.task is not None]
        for reader in self._readers.values():
            if reader.stop_handle is not None:
                reader.stop_handle.cancel()
        self._readers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.metrics.readers.set(0)


def _key(position: str) -> tuple[int, int]:
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)
