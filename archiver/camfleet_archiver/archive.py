"""Redis side of the archiver: every camera's stream through one consumer group.

Streams are found by SCAN on the key prefix (periodically, so new cameras are picked up) and
joined to the group `settings.group` from their first entry. Readers (one Redis connection and
one PostgreSQL connection each, up to `streams_per_reader` streams per XREADGROUP) hand each
read to the writer and acknowledge the entries only once the transaction committed. A replica
that dies leaves its entries pending; any replica claims them (XAUTOCLAIM) once they have been
idle `claim_idle_seconds`, and the primary key turns the redelivery into a no-op.
At-least-once from Redis, exactly-once in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import date
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from camfleet.events import STREAM_PREFIX, classify_entry
from camfleet_archiver.metrics import Metrics
from camfleet_archiver.settings import Settings
from camfleet_archiver.writer import Record, Writer, to_record

log = logging.getLogger(__name__)

_PREFIX: Final = STREAM_PREFIX.encode()
_NUL: Final = b"\\u0000"  # valid JSON, but PostgreSQL's text and jsonb cannot hold it

Entry = tuple[bytes, bytes, dict[bytes, bytes] | None]  # (stream key, entry id, fields)
# Told when a camera's archive starts falling behind its stream's retention: (camera, backlog,
# stream length). The service turns it into a Kubernetes Event on the Camera.
BehindHook = Callable[[str, int, int], Awaitable[None]]


def camera_of(key: bytes) -> str:
    return key[len(_PREFIX) :].decode()


class Archiver:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        metrics: Metrics,
        dsn: str | Callable[[], str],
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.dsn = dsn
        self.streams: set[bytes] = set()
        self.shards: list[_Reader] = []
        self.partitions: set[date] = set()
        self.behind: set[str] = set()
        self.last_progress = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._claimer = self.writer()
        self.on_behind: BehindHook | None = None
        # XREADGROUP replies are walked here (`_entries`), not turned into dicts of lists of
        # tuples by redis-py first: that was a fifth of the archiver's CPU per event.
        redis.set_response_callback("XREADGROUP", _raw_reply)

    def writer(self) -> Writer:
        s = self.settings
        return Writer(
            self.dsn,
            self.metrics,
            self.partitions,
            backoff_initial=s.backoff_initial_seconds,
            backoff_max=s.backoff_max_seconds,
        )

    # --- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self._retrying(self.discover)
        for coro in (
            self._every(self.settings.discover_seconds, self.discover),
            self._every(self.settings.claim_every_seconds, self.claim),
            self._every(self.settings.backlog_every_seconds, self.check_backlog),
        ):
            self._tasks.append(loop.create_task(coro))

    async def close(self) -> None:
        tasks = [*self._tasks, *(s.task for s in self.shards)]
        for task in tasks:
            task.cancel()
        # Each task ends its own way (a cancelled COPY rolls back: its entries stay pending for
        # a claim); the process bounds the whole shutdown (main.serve).
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for writer in [*(s.writer for s in self.shards), self._claimer]:
            await writer.close()
        self.shards.clear()
        self._tasks.clear()

    async def _every(self, seconds: float, step: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._retrying(step, once=True)

    async def _retrying(self, step: Any, once: bool = False) -> None:
        delay = self.settings.backoff_initial_seconds
        while True:
            try:
                await step()
                return
            except (aioredis.RedisError, OSError) as exc:
                self.metrics.redis_errors.inc()
                log.warning("Redis unavailable", extra={"step": step.__name__, "error": str(exc)})
                if once:
                    return
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.settings.backoff_max_seconds)

    # --- discovery --------------------------------------------------------------------------
    async def discover(self) -> None:
        found: list[bytes] = []
        async for key in self.redis.scan_iter(
            match=STREAM_PREFIX + "*", count=1000, _type="STREAM"
        ):
            if key not in self.streams:
                found.append(key)
        for key in found:
            if await self.join(key):
                self.streams.add(key)
                self._assign(key)
        self.metrics.streams.set(len(self.streams))

    async def join(self, key: bytes) -> bool:
        """Create the group on a stream (from its first entry); False if the key is gone."""
        try:
            await self.redis.xgroup_create(key, self.settings.group, id="0")
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return True
            if "requires the key to exist" in str(exc):
                return False
            raise
        log.info("joined stream", extra={"camera": camera_of(key)})
        return True

    def _assign(self, key: bytes) -> None:
        for shard in self.shards:
            if len(shard.keys) < self.settings.streams_per_reader:
                shard.add(key)
                return
        shard = _Reader(self, self.writer())
        self.shards.append(shard)
        shard.add(key)

    def forget(self, key: bytes) -> None:
        self.streams.discard(key)
        for shard in self.shards:
            shard.keys.discard(key)
        self.metrics.streams.set(len(self.streams))

    # --- one batch --------------------------------------------------------------------------
    def records(self, entries: Iterable[Entry]) -> list[Record]:
        """Validate entries into records; invalid ones are counted (and acknowledged anyway)."""
        now_ms = time.time() * 1000
        future_ms = self.settings.max_future_seconds * 1000
        records: list[Record] = []
        invalid = self.metrics.invalid
        for key, raw_id, fields in entries:
            if fields is None:
                continue
            camera = camera_of(key)
            raw = fields.get(b"e")
            if raw is not None and _NUL in raw:
                invalid.labels("unstorable").inc()
                continue
            event, reason = classify_entry(camera, fields)
            if event is None:
                invalid.labels(reason).inc()
                continue
            if event.ts > now_ms + future_ms:
                invalid.labels("future").inc()
                continue
            records.append(to_record(camera, raw_id.decode(), event))
        return records

    async def store(self, writer: Writer, entries: Sequence[Entry]) -> None:
        """Write, then acknowledge: nothing is acknowledged that is not committed."""
        if not entries:
            return
        records = self.records(entries)
        inserted = await writer.write(records)
        now_ms = time.time() * 1000
        m = self.metrics
        m.archived.inc(inserted)
        m.duplicates.inc(len(records) - inserted)
        m.batches.observe(len(entries))
        for record in records:
            m.lag.observe(max(0.0, now_ms - record.row[2]) / 1000)
        by_key: dict[bytes, list[bytes]] = {}
        for key, raw_id, _fields in entries:
            by_key.setdefault(key, []).append(raw_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, ids in by_key.items():
                    pipe.xack(key, self.settings.group, *ids)
                await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            # Stored but not acknowledged: the entries are claimed again later, and the
            # primary key makes that a no-op.
            m.redis_errors.inc()
            log.warning("XACK failed after commit", extra={"error": str(exc)})
        self.last_progress = time.monotonic()

    # --- claiming a dead replica's entries --------------------------------------------------
    async def claim(self) -> None:
        if not self.streams:
            return
        writer = self._claimer
        idle_ms = int(self.settings.claim_idle_seconds * 1000)
        for key in list(self.streams):
            start = "0-0"
            while True:
                try:
                    reply = await self.redis.xautoclaim(
                        key,
                        self.settings.group,
                        self.settings.consumer,
                        idle_ms,
                        start,
                        count=self.settings.read_count,
                    )
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        if not await self.join(key):
                            self.forget(key)
                        break
                    raise
                start = _text(reply[0])
                claimed = reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    # Pending entries trimmed before anyone archived them: lost for good.
                    self.metrics.lost.inc(len(deleted))
                    log.error(
                        "pending entries trimmed before they were archived",
                        extra={"camera": camera_of(key), "count": len(deleted)},
                    )
                    await self.redis.xack(key, self.settings.group, *deleted)
                if claimed:
                    self.metrics.claimed.inc(len(claimed))
                    log.info(
                        "claimed idle entries",
                        extra={"camera": camera_of(key), "count": len(claimed)},
                    )
                    await self.store(writer, [(key, i, f) for i, f in claimed])
                if start == "0-0":
                    break

    # --- falling behind ---------------------------------------------------------------------
    async def check_backlog(self) -> None:
        keys = list(self.streams)
        if not keys:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xinfo_groups(key)
                pipe.xinfo_stream(key)
            replies = await pipe.execute(raise_on_error=False)
        for i, key in enumerate(keys):
            groups, info = replies[2 * i], replies[2 * i + 1]
            if isinstance(groups, Exception) or isinstance(info, Exception):
                continue
            newly = self._backlog(camera_of(key), groups, info)
            if newly is not None and self.on_behind is not None:
                await self.on_behind(camera_of(key), *newly)

    def _backlog(
        self, camera: str, groups: list[dict[str, Any]], info: dict[str, Any]
    ) -> tuple[int, int] | None:
        """Update the gauges; (backlog, length) when the camera has just fallen behind."""
        ours = next((g for g in groups if _text(g.get("name")) == self.settings.group), None)
        if ours is None:
            return None
        length = int(info.get("length") or 0)
        lag = ours.get("lag")
        backlog = int(ours.get("pending") or 0) + (int(lag) if lag is not None else length)
        self.metrics.backlog.labels(camera).set(backlog)
        behind = length >= 100 and backlog >= self.settings.behind_ratio * length
        self.metrics.behind.labels(camera).set(1 if behind else 0)
        if behind and camera not in self.behind:
            log.warning(
                "archive falling behind the stream's retention: unarchived events are about "
                "to be trimmed",
                extra={"camera": camera, "backlog": backlog, "length": length},
            )
            self.behind.add(camera)
            return backlog, length
        if not behind and camera in self.behind:
            log.info("archive caught up", extra={"camera": camera, "backlog": backlog})
            self.behind.discard(camera)
        return None


class _Reader:
    """One XREADGROUP loop over up to `streams_per_reader` streams, and its writer.

    The next read runs while the last one is written (a queue of one batch between them), so
    Redis, this process and PostgreSQL work at the same time instead of taking turns.
    """

    def __init__(self, archiver: Archiver, writer: Writer) -> None:
        self.archiver = archiver
        self.writer = writer
        self.keys: set[bytes] = set()
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.run(), name="archive-reader")

    def add(self, key: bytes) -> None:
        self.keys.add(key)
        self.wake.set()

    async def run(self) -> None:
        batches: asyncio.Queue[list[Entry]] = asyncio.Queue(maxsize=1)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(batches))
                group.create_task(self._write(batches))
        except Exception:
            # Nothing awaits this task: say why it ended (/healthz then reports no progress).
            log.exception("archive reader stopped")
            raise

    async def _write(self, batches: asyncio.Queue[list[Entry]]) -> None:
        a = self.archiver
        step = a.settings.batch_max_events
        while True:
            entries = await batches.get()
            for start in range(0, len(entries), step):
                await a.store(self.writer, entries[start : start + step])
            a.last_progress = time.monotonic()

    async def _read(self, batches: asyncio.Queue[list[Entry]]) -> None:
        a = self.archiver
        s = a.settings
        delay = s.backoff_initial_seconds
        while True:
            if not self.keys:
                self.wake.clear()
                await self.wake.wait()
                continue
            keys = list(self.keys)
            try:
                reply: Any = await a.redis.execute_command(  # type: ignore[no-untyped-call]
                    "XREADGROUP",
                    "GROUP",
                    s.group,
                    s.consumer,
                    "COUNT",
                    s.read_count,
                    "BLOCK",
                    s.block_ms,
                    "STREAMS",
                    *keys,
                    *(">" for _ in keys),
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis lost the group (restarted without its data, or the stream was deleted).
                for key in keys:
                    if not await a.join(key):
                        a.forget(key)
                continue
            except (aioredis.RedisError, OSError) as exc:
                a.metrics.redis_errors.inc()
                log.warning("XREADGROUP failed, retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, s.backoff_max_seconds)
                continue
            delay = s.backoff_initial_seconds
            entries = _entries(reply)
            if entries:
                await batches.put(entries)
            else:
                a.last_progress = time.monotonic()


def _raw_reply(response: Any, **_options: Any) -> Any:
    return response


def _entries(reply: Any) -> list[Entry]:
    """The entries of a raw XREADGROUP reply: {key: [[id, [field, value, ...]], ...]} in RESP3
    (redis-py's default), [[key, [...]], ...] in RESP2; an entry deleted while pending has no
    fields."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    entries: list[Entry] = []
    for key, items in streams:
        for raw_id, flat in items:
            if not flat:
                entries.append((key, raw_id, None))
            elif len(flat) == 2:
                entries.append((key, raw_id, {flat[0]: flat[1]}))
            else:
                entries.append((key, raw_id, dict(zip(flat[::2], flat[1::2], strict=False))))
    return entries


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
