"""Event history queries: the archiver's PostgreSQL table, read through a small pool.

Parameters are parsed here into frozen queries (`parse_events_query`, `parse_timeline_query`),
refusing anything odd with a `BadQuery` whose message the API returns as a 400. Pagination is
keyset pagination on the table's primary key order (ts, entry id): a cursor names the last row
returned, so rows inserted meanwhile never shift a page or repeat one.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

__all__ = [
    "BadQuery",
    "EventsQuery",
    "History",
    "HistoryUnavailable",
    "TimelineQuery",
    "parse_events_query",
    "parse_time",
    "parse_timeline_query",
]

DEFAULT_RANGE: Final = timedelta(hours=1)
DEFAULT_LIMIT: Final = 100
MAX_BUCKETS: Final = 2000
TIMELINE_BUCKETS: Final = 120  # the default bucket splits the range into about this many
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_EPOCH_MS: Final = re.compile(r"^\d{1,15}$")
_LABEL_MAX: Final = 128
# Nice bucket sizes (seconds) for the default timeline resolution.
_NICE_BUCKETS: Final = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    21600,
    43200,
    86400,
)


class BadQuery(ValueError):
    """A parameter the API refuses with 400; the message says which and why."""


class HistoryUnavailable(Exception):
    """PostgreSQL is unreachable or the query ran out of time (503)."""


def parse_time(name: str, value: str) -> datetime:
    """Epoch milliseconds or ISO-8601 (a time without offset is UTC)."""
    text = value.strip()
    if _EPOCH_MS.match(text):
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(
            f"{name}: {value[:64]!r} is neither epoch milliseconds nor ISO-8601 "
            "(e.g. 2026-12-01T08:00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _range(params: Mapping[str, str], now: datetime) -> tuple[datetime, datetime]:
    end = parse_time("to", params["to"]) if "to" in params else now
    start = parse_time("from", params["from"]) if "from" in params else end - DEFAULT_RANGE
    if start >= end:
        raise BadQuery("from must be before to")
    return start, end


def _label(params: Mapping[str, str]) -> str | None:
    label = params.get("label")
    if label is None:
        return None
    if not 1 <= len(label) <= _LABEL_MAX:
        raise BadQuery(f"label must be 1 to {_LABEL_MAX} characters")
    return label


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,9}", raw):
        raise BadQuery(f"{name} must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise BadQuery(f"{name} must be from {low} to {high}")
    return value


@dataclass(frozen=True)
class Cursor:
    ts: datetime
    entry_ms: int
    entry_seq: int

    def encode(self) -> str:
        micros = (self.ts - _EPOCH) // _MICROSECOND  # exact: a float would move the boundary
        raw = f"{micros}.{self.entry_ms}.{self.entry_seq}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            micros, ms, seq = (int(p) for p in raw.split("."))
            if min(micros, ms, seq) < 0:
                raise ValueError(value)
            ts = _EPOCH + micros * _MICROSECOND
        except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError, OSError):
            raise BadQuery("cursor is not one this API returned") from None
        return cls(ts, ms, seq)


@dataclass(frozen=True)
class EventsQuery:
    camera: str
    start: datetime
    end: datetime
    label: str | None
    limit: int
    order: Literal["asc", "desc"]
    cursor: Cursor | None


@dataclass(frozen=True)
class TimelineQuery:
    camera: str
    start: datetime
    end: datetime
    label: str | None
    bucket_seconds: int


_EVENTS_PARAMS: Final = {"from", "to", "label", "limit", "cursor", "order"}
_TIMELINE_PARAMS: Final = {"from", "to", "label", "bucket"}


def _known(params: Mapping[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def parse_events_query(
    camera: str, params: Mapping[str, str], *, max_limit: int, now: datetime | None = None
) -> EventsQuery:
    _known(params, _EVENTS_PARAMS)
    start, end = _range(params, now or datetime.now(UTC))
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise BadQuery("order must be asc or desc")
    cursor = Cursor.decode(params["cursor"]) if "cursor" in params else None
    return EventsQuery(
        camera,
        start,
        end,
        _label(params),
        _int(params, "limit", min(DEFAULT_LIMIT, max_limit), 1, max_limit),
        "asc" if order == "asc" else "desc",
        cursor,
    )


def parse_timeline_query(
    camera: str, params: Mapping[str, str], *, now: datetime | None = None
) -> TimelineQuery:
    _known(params, _TIMELINE_PARAMS)
    start, end = _range(params, now or datetime.now(UTC))
    span = (end - start).total_seconds()
    auto = next((b for b in _NICE_BUCKETS if span / b <= TIMELINE_BUCKETS), _NICE_BUCKETS[-1])
    bucket = _int(params, "bucket", auto, 1, 86400 * 7)
    if span / bucket > MAX_BUCKETS:
        raise BadQuery(
            f"{math.ceil(span / bucket)} buckets requested, at most {MAX_BUCKETS}: "
            "use a larger bucket or a shorter range"
        )
    return TimelineQuery(camera, start, end, _label(params), bucket)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


# The archiver's rollup (its migration 0002): per camera, label and 10 s bucket since the epoch.
ROLLUP_SECONDS: Final = 10
_ROLLUP_STEP: Final = timedelta(seconds=ROLLUP_SECONDS)


def rollup_floor(ts: datetime) -> datetime:
    """The start of the rollup bucket holding `ts`."""
    return _EPOCH + (ts - _EPOCH) // _ROLLUP_STEP * _ROLLUP_STEP


def rollup_covers(q: TimelineQuery) -> bool:
    """Whether every rollup bucket falls inside one of `q`'s buckets: the range starts on a
    rollup boundary and the buckets are whole multiples of it (the viewer asks that way)."""
    return q.bucket_seconds % ROLLUP_SECONDS == 0 and rollup_floor(q.start) == q.start


# Counts from the events from {start} on, and from the rollup before %(split)s (the last whole
# 10 s before the end of the range).
_TIMELINE_EVENTS: Final = sql.SQL(
    "SELECT date_bin(make_interval(secs => %(bucket)s), ts, %(start)s) AS b, l, count(*) "
    "FROM events, unnest(labels) AS l "
    "WHERE camera = %(camera)s AND ts >= {start} AND ts < %(end)s{label} "
    "GROUP BY 1, 2"
)
_TIMELINE_ROLLUP: Final = sql.SQL(
    "SELECT date_bin(make_interval(secs => %(bucket)s), bucket, %(start)s) AS b, label, "
    "sum(count) FROM event_counts "
    "WHERE camera = %(camera)s AND bucket >= %(start)s AND bucket < %(split)s{label} "
    "GROUP BY 1, 2 "
    "UNION ALL {events}"
)
_ROLLUP_LABEL: Final = sql.SQL(" AND label = %(label)s")
_EVENTS_LABEL: Final = sql.SQL(" AND l = %(label)s")


class History:
    """The read side of the events table (a pool opened lazily; PostgreSQL may be down)."""

    def __init__(self, dsn: str, *, pool_size: int, statement_timeout_ms: int) -> None:
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = (
            AsyncConnectionPool(
                dsn,
                min_size=1,
                max_size=pool_size,
                open=False,
                timeout=2.0,
                kwargs={
                    "options": f"-c statement_timeout={statement_timeout_ms}",
                    "autocommit": True,
                    "row_factory": tuple_row,
                },
            )
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def _fetch(
        self, query: sql.Composed, params: dict[str, Any], *, missing_table_ok: bool = True
    ) -> list[tuple[Any, ...]]:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(query, params)
                found: list[tuple[Any, ...]] = await cur.fetchall()
                return found
        except psycopg.errors.UndefinedTable:
            if not missing_table_ok:
                raise
            return []  # the archiver has not migrated yet: no history so far
        except psycopg.errors.QueryCanceled as exc:
            raise HistoryUnavailable("history query took too long") from exc
        except (psycopg.Error, OSError) as exc:
            raise HistoryUnavailable("history database unavailable") from exc

    async def fetch(self, query: sql.Composable, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the history database (the recording index too)."""
        return await self._fetch(sql.Composed([query]), params)

    async def events(self, q: EventsQuery) -> dict[str, Any]:
        desc = q.order == "desc"
        conditions: list[sql.Composable] = [
            sql.SQL("camera = %(camera)s AND ts >= %(start)s AND ts < %(end)s")
        ]
        params: dict[str, Any] = {
            "camera": q.camera,
            "start": q.start,
            "end": q.end,
            "limit": q.limit + 1,
        }
        if q.label is not None:
            conditions.append(sql.SQL("labels @> ARRAY[%(label)s]::text[]"))
            params["label"] = q.label
        if q.cursor is not None:
            op = sql.SQL("<") if desc else sql.SQL(">")
            conditions.append(
                sql.SQL("(ts, entry_ms, entry_seq) {} (%(c_ts)s, %(c_ms)s, %(c_seq)s)").format(op)
            )
            params.update(c_ts=q.cursor.ts, c_ms=q.cursor.entry_ms, c_seq=q.cursor.entry_seq)
        direction = sql.SQL("DESC") if desc else sql.SQL("ASC")
        query = sql.SQL(
            "SELECT ts, entry_ms, entry_seq, frame, source, objects, attributes FROM events "
            "WHERE {} ORDER BY ts {d}, entry_ms {d}, entry_seq {d} LIMIT %(limit)s"
        ).format(sql.SQL(" AND ").join(conditions), d=direction)
        found = await self._fetch(query, params)
        more = len(found) > q.limit
        found = found[: q.limit]
        events = []
        for ts, ms, seq, frame, source, objects, attributes in found:
            item: dict[str, Any] = {
                "id": f"{ms}-{seq}",
                "ts": _ms(ts),
                "source": source,
                "objects": objects,
            }
            if frame is not None:
                item["frame"] = frame
            if attributes is not None:
                item["attributes"] = attributes
            events.append(item)
        next_cursor = None
        if more and found:
            ts, ms, seq = found[-1][:3]
            next_cursor = Cursor(ts, ms, seq).encode()
        return {
            "camera": q.camera,
            "from": _ms(q.start),
            "to": _ms(q.end),
            "order": q.order,
            "events": events,
            "next": next_cursor,
        }

    async def timeline(self, q: TimelineQuery) -> dict[str, Any]:
        params: dict[str, Any] = {
            "camera": q.camera,
            "start": q.start,
            "end": q.end,
            "bucket": q.bucket_seconds,
            "label": q.label,
            "split": rollup_floor(q.end),
        }
        labelled = q.label is not None
        events_query = _TIMELINE_EVENTS.format(
            start=sql.SQL("%(start)s"), label=_EVENTS_LABEL if labelled else sql.SQL("")
        )
        if rollup_covers(q):
            # The archiver's rollup up to the last whole 10 s, the events themselves after it.
            query = _TIMELINE_ROLLUP.format(
                label=_ROLLUP_LABEL if labelled else sql.SQL(""),
                events=_TIMELINE_EVENTS.format(
                    start=sql.SQL("%(split)s"), label=_EVENTS_LABEL if labelled else sql.SQL("")
                ),
            )
            try:
                found = await self._fetch(query, params, missing_table_ok=False)
            except psycopg.errors.UndefinedTable:
                # A gateway newer than the archiver's schema: count from the events alone.
                found = await self._fetch(events_query, params)
        else:
            found = await self._fetch(events_query, params)
        buckets: dict[int, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for start, label, count in found:
            counts = buckets.setdefault(_ms(start), {})
            counts[label] = counts.get(label, 0) + int(count)
            totals[label] = totals.get(label, 0) + int(count)
        return {
            "camera": q.camera,
            "from": _ms(q.start),
            "to": _ms(q.end),
            "bucketSeconds": q.bucket_seconds,
            "buckets": [{"start": b, "counts": c} for b, c in sorted(buckets.items())],
            "totals": totals,
        }
