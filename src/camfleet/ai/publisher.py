"""Sync and async publishers. Both validate every event before anything reaches Redis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeAlias

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from camfleet.events import DEFAULT_RETENTION, STREAM_FIELD, Event, stream_key

EventLike: TypeAlias = Event | Mapping[str, Any]


def _prepare(event: EventLike) -> tuple[str, bytes]:
    """Validate (raises pydantic.ValidationError) and return (stream key, wire bytes)."""
    model = event if isinstance(event, Event) else Event.model_validate(event)
    return stream_key(model.camera), model.to_json()


def _xadd_args(retention: int) -> dict[str, Any]:
    # approximate=True is MAXLEN ~: Redis trims whole radix-tree nodes, much cheaper than exact.
    return {"maxlen": retention, "approximate": True}


# A restarting Redis answers LOADING for a moment and drops connections: retry those briefly.
# XADD with an auto id is not idempotent, so a retry after a lost reply can duplicate an
# event (at-least-once); the overlay draws the same boxes twice at worst.
_RETRY_ON: list[type[Exception]] = [BusyLoadingError, ConnectionError, TimeoutError]


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


def _check_retention(retention: int) -> int:
    if retention < 1:
        raise ValueError("retention must be >= 1 entry")
    return retention


def _decode_id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class Publisher:
    """Blocking publisher for synchronous AI workers.

    `publish` returns the Redis Stream id of the event. `publish_many` sends a batch in one
    round trip (a non-transactional pipeline), validating the whole batch first so that an
    invalid event sends nothing.
    """

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        *,
        retention: int = DEFAULT_RETENTION,
        retries: int = 5,
        client: redis.Redis | None = None,
    ) -> None:
        self.retention = _check_retention(retention)
        self._owns_client = client is None
        self._redis: redis.Redis = client or redis.Redis.from_url(
            redis_url, retry=redis.retry.Retry(_backoff(), retries), retry_on_error=_RETRY_ON
        )

    def publish(self, event: EventLike) -> str:
        key, data = _prepare(event)
        return _decode_id(self._redis.xadd(key, {STREAM_FIELD: data}, **_xadd_args(self.retention)))

    def publish_many(self, events: Iterable[EventLike]) -> list[str]:
        prepared = [_prepare(e) for e in events]
        if not prepared:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for key, data in prepared:
                pipe.xadd(key, {STREAM_FIELD: data}, **_xadd_args(self.retention))
            return [_decode_id(i) for i in pipe.execute()]

    def close(self) -> None:
        if self._owns_client:
            self._redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPublisher:
    """The asyncio twin of `Publisher` (redis.asyncio underneath)."""

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        *,
        retention: int = DEFAULT_RETENTION,
        retries: int = 5,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.retention = _check_retention(retention)
        self._owns_client = client is None
        self._redis: aioredis.Redis = client or aioredis.Redis.from_url(
            redis_url,
            retry=redis.asyncio.retry.Retry(_backoff(), retries),
            retry_on_error=_RETRY_ON,
        )

    async def publish(self, event: EventLike) -> str:
        key, data = _prepare(event)
        return _decode_id(
            await self._redis.xadd(key, {STREAM_FIELD: data}, **_xadd_args(self.retention))
        )

    async def publish_many(self, events: Iterable[EventLike]) -> list[str]:
        prepared = [_prepare(e) for e in events]
        if not prepared:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, data in prepared:
                pipe.xadd(key, {STREAM_FIELD: data}, **_xadd_args(self.retention))
            return [_decode_id(i) for i in await pipe.execute()]

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
