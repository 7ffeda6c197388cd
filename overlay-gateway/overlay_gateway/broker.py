"""Redis Streams side of the gateway: each watched camera is read once per replica.

A camera's stream is read while at least one local client watches it (and a little longer).
Streams are multiplexed: a reader ("shard") owns one Redis connection and XREADs with BLOCK on
up to `streams_per_reader` streams at once, each from a concrete last-delivered id (never "$"
after the first read, so nothing between two reads is lost). One call then returns whatever
arrived on any of them, so Redis round trips and connections grow with activity, not with
the number of cameras. A newly watched stream interrupts the blocked read (CLIENT UNBLOCK).

Every entry is validated against the event contract (the contract's orjson fast path, the
pydantic model for whatever it leaves open); the client message is built once and each
stream's batch handed to the sink (the hub): one XREAD wake-up delivers everything that arrived
on all the reader's streams. On a Redis error the shard tells the sink its cameras are
degraded, retries with capped exponential backoff and jitter, and resumes from the last
delivered ids: nothing inside retention is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from camfleet.events import classify_entry, stream_key
from overlay_gateway.metrics import Metrics
from overlay_gateway.protocol import event_message, position_key

log = logging.getLogger(__name__)

__all__ = ["Broker", "EventSink", "IdleClosingPool", "ReplayResult", "classify_entry", "connect"]


class IdleClosingPool(aioredis.ConnectionPool):
    """A connection pool that can close the connections idle for a while (`close_idle`).

    redis-py keeps every connection a burst of commands opened (concurrent replays of a page
    with many cameras) for the life of the pool; this lets their number follow activity.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._released: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def release(self, connection: Any) -> None:
        self._released[connection] = time.monotonic()
        await super().release(connection)

    async def close_idle(self, idle_seconds: float) -> int:
        """Disconnect and drop the spare connections unused for `idle_seconds`."""
        cutoff = time.monotonic() - idle_seconds
        async with self._lock:  # taken off the list first: nobody can pick them up meanwhile
            stale = [c for c in self._available_connections if self._released.get(c, 0.0) <= cutoff]
            for connection in stale:
                self._available_connections.remove(connection)
        for connection in stale:
            with contextlib.suppress(RedisError, OSError):
                await connection.disconnect()
        return len(stale)


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    """A Redis client on an `IdleClosingPool` (the client owns and closes the pool)."""
    return aioredis.Redis.from_pool(IdleClosingPool.from_url(url, **kwargs))


class EventSink(Protocol):
    def publish(self, camera: str, batch: list[tuple[str, bytes]], arrived: float) -> int: ...
    def status(self, camera: str, state: str) -> None: ...


@dataclass(frozen=True)
class ReplayResult:
    events: list[tuple[str, bytes]]
    # True when entries after `since` may have been trimmed away before the client came back.
    gap: bool


def _position(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class _Stream:
    """One watched camera: where its reading stands and who holds it."""

    __slots__ = (
        "camera",
        "degraded",
        "id_arg",
        "id_for",
        "key",
        "key_arg",
        "last_id",
        "ready",
        "refs",
        "shard",
        "stop_handle",
    )

    def __init__(self, camera: str, shard: _Shard) -> None:
        self.camera = camera
        self.key = stream_key(camera).encode()
        self.key_arg = _bulk(self.key)  # encoded once, sent with every XREAD
        self.last_id: str | None = None  # resolved from "$" once, by the shard
        # last_id as an XREAD argument, and the last_id it was encoded from.
        self.id_arg = b""
        self.id_for: str | None = None
        self.ready = asyncio.Event()
        self.degraded = False
        self.refs = 0
        self.shard = shard
        self.stop_handle: asyncio.TimerHandle | None = None


class _Shard:
    """One Redis connection reading many streams with XREAD BLOCK."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        # A dedicated connection, driven directly: redis-py's generic command packing costs
        # ~0.2 ms for an XREAD over 50 streams, more than everything else an event costs.
        self.conn: Connection | None = None
        self.streams: dict[bytes, _Stream] = {}
        self.client_id: int | None = None
        # `generation` counts changes to `streams`; `reading` is the generation the blocked
        # XREAD was built from. A newer generation has to interrupt it.
        self.generation = 0
        self.reading = -1
        self.wake = asyncio.Event()
        # Set on a Redis error, cleared by the first good read (which tells the streams).
        self.degraded = False
        self.task = asyncio.get_running_loop().create_task(self.run(), name="stream-reader")
        # At most one at a time however many streams are added at once: each CLIENT UNBLOCK
        # in flight holds a pool connection.
        self._interrupt: asyncio.Task[None] | None = None
        # Per read, only what changed is recomputed: the streams read and the command's fixed
        # part follow `streams` (rebuilt when `_stale`), the ids follow each stream's last_id.
        self._unresolved: set[_Stream] = set()
        self._stale = True
        self._snapshot: dict[bytes, _Stream] = {}
        self._prefix = b""

    def add(self, stream: _Stream) -> None:
        self.streams[stream.key] = stream
        if stream.last_id is None:
            self._unresolved.add(stream)
        self._stale = True
        self.generation += 1
        self.wake.set()
        if self._interrupt is None or self._interrupt.done():
            self._interrupt = asyncio.get_running_loop().create_task(self._interrupt_read())

    def remove(self, stream: _Stream) -> None:
        # No interrupt: the next read simply leaves it out.
        if self.streams.get(stream.key) is stream:
            del self.streams[stream.key]
            self._unresolved.discard(stream)
            self._stale = True
            self.generation += 1

    async def _interrupt_read(self) -> None:
        """Unblock the pending XREAD until one that includes every added stream is under way."""
        for _ in range(500):
            if self.reading >= self.generation or self.client_id is None:
                return
            try:
                unblocked = await self.broker.redis.client_unblock(self.client_id)
            except (RedisError, OSError):
                return
            # Unblocked: the reader rebuilds its read (checked again above). Not blocked yet:
            # the read is still on its way to Redis. Either way, look again shortly.
            await asyncio.sleep(0 if unblocked else 0.002)

    async def run(self) -> None:
        b = self.broker
        backoff = b.backoff_initial
        while True:
            try:
                if self.conn is None:
                    pool = b.redis.connection_pool
                    self.conn = await pool.get_connection()  # type: ignore[no-untyped-call]
                if self.client_id is None:
                    await self.conn.send_command("CLIENT", "ID")
                    self.client_id = int(await self.conn.read_response())
                await self._resolve_new()
                if not self.streams:
                    self.wake.clear()
                    self.reading = self.generation
                    try:
                        await asyncio.wait_for(self.wake.wait(), timeout=b.idle_seconds)
                    except TimeoutError:
                        if not self.streams and b.retire(self):
                            await self._release_connection()
                            return
                    continue
                self.reading = self.generation
                snapshot, command = self._xread_command()
                await self._send(self.conn, command)
                response: Any = await self.conn.read_response(disable_decoding=True)
                b.metrics.redis_reads += 1
                backoff = b.backoff_initial
                if self.degraded:
                    self._recovered(snapshot.values())
                # RESP3 answers a map {key: entries}, RESP2 a list of [key, entries].
                pairs = response.items() if isinstance(response, dict) else response or []
                for key, entries in pairs:
                    stream = snapshot.get(key)
                    if stream is not None:
                        self._deliver(stream, entries)
                if pairs and b.xread_gather > 0:
                    await asyncio.sleep(b.xread_gather)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                b.metrics.redis_errors.inc()
                # The connection (and its client id) will be new after a reconnect.
                self.client_id = None
                if self.conn is not None:
                    await self.conn.disconnect()
                self._degraded(list(self.streams.values()), exc)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, b.backoff_max)
            except Exception:
                # A reader must never die on one surprising entry or reply.
                log.exception("stream reader error")
                await asyncio.sleep(b.backoff_max)

    async def _resolve_new(self) -> None:
        # Resolve "$" to a concrete id once per stream, so later reads never skip an entry.
        if not self._unresolved:
            return
        new = [s for s in self._unresolved if s.last_id is None]
        async with self.broker.redis.pipeline(transaction=False) as pipe:
            for stream in new:
                pipe.xrevrange(stream.key, count=1)
            tails: list[Any] = await pipe.execute()
        for stream, last in zip(new, tails, strict=True):
            stream.last_id = _position(last[0][0]) if last else "0-0"
            stream.ready.set()
            self._unresolved.discard(stream)
        self._stale = True

    @staticmethod
    async def _send(conn: Connection, command: bytes) -> None:
        """Send a packed command; the common case (an empty socket buffer) without a task.

        redis-py's send_packed_command wraps every write in asyncio.wait_for, i.e. a task and
        a timer per XREAD; one small command after a reply never fills the socket buffer.
        """
        writer = conn._writer  # redis-py's StreamWriter of this (connected) connection
        if writer is None or not conn.is_connected:
            await conn.send_packed_command(command, check_health=False)
            return
        writer.write(command)
        if writer.transport.get_write_buffer_size():
            await asyncio.wait_for(writer.drain(), conn.socket_timeout)

    def _degraded(self, streams: list[_Stream], exc: BaseException) -> None:
        self.degraded = True
        for stream in streams:
            # Subscribers are told "degraded"; they must not wait for Redis to return.
            stream.ready.set()
            if not stream.degraded:
                stream.degraded = True
                log.warning(
                    "stream reader degraded",
                    extra={"camera": stream.camera, "error": type(exc).__name__},
                )
                self.broker.sink.status(stream.camera, "degraded")

    def _recovered(self, streams: Iterable[_Stream]) -> None:
        for stream in streams:
            if stream.degraded:
                stream.degraded = False
                log.info("stream reader recovered", extra={"camera": stream.camera})
                self.broker.sink.status(stream.camera, "live")
        self.degraded = any(s.degraded for s in self.streams.values())

    def _deliver(self, stream: _Stream, entries: list[Any]) -> None:
        b = self.broker
        camera = stream.camera
        arrived = time.monotonic()
        now_ms = time.time() * 1000
        age = b.metrics.event_age
        batch: list[tuple[str, bytes]] = []
        for raw_id, flat in entries:
            position = _position(raw_id)
            stream.last_id = position
            fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
            event, reason = classify_entry(camera, fields)
            if event is None:
                b.metrics.events_invalid[reason] += 1
                log.debug("dropped invalid event", extra={"camera": camera, "reason": reason})
                continue
            age.observe(max(0.0, now_ms - event.ts) / 1000)
            batch.append((position, event_message(camera, position, event.json)))
        if batch:
            b.metrics.events_in += len(batch)
            b.sink.publish(camera, batch, arrived)

    async def _release_connection(self) -> None:
        conn, self.conn = self.conn, None
        self.client_id = None
        if conn is not None:
            # Closed, not kept as a spare: an idle reader's connection is not needed any more.
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect()
            await self.broker.redis.connection_pool.release(conn)

    async def close(self) -> None:
        tasks = [self.task] if self._interrupt is None else [self.task, self._interrupt]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._release_connection()

    def _xread_command(self) -> tuple[dict[bytes, _Stream], bytes]:
        """The streams to read (those with a position) and the XREAD command reading them."""
        if self._stale:
            self._stale = False
            self._snapshot = {k: s for k, s in self.streams.items() if s.last_id is not None}
            b = self.broker
            head = [b"XREAD", b"COUNT", str(b.xread_count).encode(), b"BLOCK"]
            head += [str(b.xread_block_ms).encode(), b"STREAMS"]
            self._prefix = b"".join(
                [
                    b"*%d\r\n" % (len(head) + 2 * len(self._snapshot)),
                    *map(_bulk, head),
                    *(s.key_arg for s in self._snapshot.values()),
                ]
            )
        ids = [self._prefix]
        for s in self._snapshot.values():
            if s.id_for is not s.last_id:
                s.id_for = s.last_id
                s.id_arg = _bulk((s.last_id or "0-0").encode())
            ids.append(s.id_arg)
        return self._snapshot, b"".join(ids)


class Broker:
    """Owns the Redis client and the stream readers of one gateway replica."""

    def __init__(
        self,
        redis: aioredis.Redis,
        sink: EventSink,
        metrics: Metrics,
        *,
        xread_block_ms: int = 5000,
        xread_count: int = 100,
        xread_gather: float = 0.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        linger: float = 5.0,
        streams_per_reader: int = 256,
        idle_seconds: float = 30.0,
        concurrent_replays: int = 8,
    ) -> None:
        self.redis = redis
        self.sink = sink
        self.metrics = metrics
        self.xread_block_ms = xread_block_ms
        self.xread_count = xread_count
        self.xread_gather = xread_gather
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.linger = linger
        self.streams_per_reader = streams_per_reader
        self.idle_seconds = idle_seconds
        self._streams: dict[str, _Stream] = {}
        self._shards: list[_Shard] = []
        # Each replay in flight holds a pool connection: a page subscribing to many cameras
        # with `since` must not open one per camera.
        self._replays = asyncio.Semaphore(concurrent_replays)
        self._reaper: asyncio.Task[None] | None = None
        if isinstance(redis.connection_pool, IdleClosingPool):
            self._reaper = asyncio.get_running_loop().create_task(
                self._close_idle(redis.connection_pool), name="redis-idle-reaper"
            )

    def retire(self, shard: _Shard) -> bool:
        """Forget a shard that has had no stream for a while; False if it has one again."""
        if shard.streams or shard not in self._shards:
            return False
        self._shards.remove(shard)
        return True

    async def _close_idle(self, pool: IdleClosingPool) -> None:
        while True:
            await asyncio.sleep(self.idle_seconds / 2)
            try:
                closed = await pool.close_idle(self.idle_seconds)
            except Exception:  # a reaper must never die
                log.exception("closing idle Redis connections failed")
                continue
            if closed:
                log.debug("closed idle Redis connections", extra={"count": closed})

    def degraded(self, camera: str) -> bool:
        stream = self._streams.get(camera)
        return stream is not None and stream.degraded

    def _shard(self) -> _Shard:
        for shard in self._shards:
            if len(shard.streams) < self.streams_per_reader:
                return shard
        shard = _Shard(self)
        self._shards.append(shard)
        return shard

    async def watch(self, camera: str) -> None:
        """Take a reference on the camera's stream, reading it; returns once it has a position."""
        stream = self._streams.get(camera)
        if stream is None:
            stream = self._streams[camera] = _Stream(camera, self._shard())
            stream.shard.add(stream)
            self.metrics.readers.set(len(self._streams))
        stream.refs += 1
        if stream.stop_handle is not None:
            stream.stop_handle.cancel()
            stream.stop_handle = None
        await stream.ready.wait()

    def release(self, camera: str) -> None:
        stream = self._streams.get(camera)
        if stream is None:
            return
        stream.refs -= 1
        if stream.refs <= 0 and stream.stop_handle is None:
            if self.linger > 0:
                stream.stop_handle = asyncio.get_running_loop().call_later(
                    self.linger, self._stop, camera
                )
            else:
                self._stop(camera)

    def _stop(self, camera: str) -> None:
        stream = self._streams.get(camera)
        if stream is None or stream.refs > 0:
            return
        del self._streams[camera]
        stream.shard.remove(stream)
        self.metrics.readers.set(len(self._streams))

    async def replay(self, camera: str, since: str, limit: int) -> ReplayResult:
        """Valid events after `since`, oldest first (at most `limit`, the newest if more)."""
        key = stream_key(camera)
        start = since if since.startswith("(") else f"({since}"
        if since in ("0", "0-0"):
            start = "-"
        async with self._replays, self.redis.pipeline(transaction=False) as pipe:
            pipe.xrevrange(key, max="+", min=start, count=limit + 1)
            pipe.xinfo_stream(key)
            rev, info = await self._pipeline(pipe)
        rev = rev or []
        gap = len(rev) > limit
        entries = list(reversed(rev[:limit]))
        # MAXLEN trimming leaves no trace of what it removed; if `since` itself is no longer
        # retained, entries after it may have gone too: say so (conservatively).
        first = (info or {}).get("recorded-first-entry-id")
        if (
            first is not None
            and since not in ("0", "0-0")
            and position_key(_position(first)) > position_key(since)
        ):
            gap = True
        events: list[tuple[str, bytes]] = []
        for raw_id, fields in entries:
            position = _position(raw_id)
            event, _reason = classify_entry(camera, fields)
            if event is not None:
                events.append((position, event_message(camera, position, event.json)))
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
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for stream in self._streams.values():
            if stream.stop_handle is not None:
                stream.stop_handle.cancel()
        self._streams.clear()
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.close()
        self.metrics.readers.set(0)


def _bulk(arg: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(arg), arg)
