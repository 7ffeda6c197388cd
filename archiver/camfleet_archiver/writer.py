"""PostgreSQL side of the archiver: a batch of stream entries → rows, in one transaction.

Rows are COPYed straight into the partitioned table. When a batch holds an entry that is
already stored (a redelivery after a crash, a claim), the primary key refuses the whole COPY and
the batch goes through a temporary staging table and one `INSERT … SELECT … ON CONFLICT DO
NOTHING` instead: a redelivered or claimed entry never makes a second row. In the same
transaction the new rows are added to the timeline's rollup (`event_counts`): counted from the
batch when every row was new, from the rows the INSERT returned otherwise, so the counts stay
exact under redelivery too. The caller acknowledges the entries in Redis only after `write`
returned, i.e. after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

import orjson
import psycopg
from psycopg import errors

from camfleet.events import FastEvent
from camfleet_archiver.metrics import Metrics
from camfleet_archiver.schema import (
    COUNTS_BUCKET_SECONDS,
    COUNTS_TABLE,
    TABLE,
    create_partitions,
    existing_partitions,
    utc_day,
)

log = logging.getLogger(__name__)

COLUMNS: Final = (
    "camera",
    "ts",
    "entry_ms",
    "entry_seq",
    "frame",
    "source",
    "labels",
    "objects",
    "attributes",
)
_COLUMN_LIST: Final = ", ".join(COLUMNS)
_STAGING: Final = "events_staging"
_CREATE_STAGING: Final = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (LIKE {TABLE}) ON COMMIT DELETE ROWS"
)
_COPY: Final = f"COPY {_STAGING} ({_COLUMN_LIST}) FROM STDIN"
_COPY_DIRECT: Final = f"COPY {TABLE} ({_COLUMN_LIST}) FROM STDIN"
# Rows are added in key order, so two replicas adding to the same counts lock them in the same
# order and cannot deadlock.
_ADD_COUNTS: Final = (
    f"INSERT INTO {COUNTS_TABLE} (camera, bucket, label, count) "
    "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::integer[]) "
    "ORDER BY 1, 2, 3 "
    f"ON CONFLICT (camera, bucket, label) DO UPDATE SET count = {COUNTS_TABLE}.count + "
    "EXCLUDED.count"
)
_INSERT: Final = (
    f"WITH new AS (INSERT INTO {TABLE} ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGING} "
    "ON CONFLICT DO NOTHING RETURNING camera, ts, labels), "
    f"counted AS (INSERT INTO {COUNTS_TABLE} (camera, bucket, label, count) "
    f"SELECT camera, date_bin('{COUNTS_BUCKET_SECONDS} seconds', ts, "
    "timestamptz '1970-01-01 00:00:00+00'), l, count(*) FROM new, unnest(labels) AS l "
    "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 "
    f"ON CONFLICT (camera, bucket, label) DO UPDATE SET count = {COUNTS_TABLE}.count + "
    "EXCLUDED.count) "
    "SELECT count(*) FROM new"
)
_INSERT_ONE: Final = (
    f"INSERT INTO {TABLE} ({_COLUMN_LIST}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_BUCKET_MS: Final = COUNTS_BUCKET_SECONDS * 1000
# camera, ts, entry_ms, entry_seq, frame, source, labels (as a text[] literal), objects,
# attributes (JSON).
Row = tuple[str, datetime, int, int, int | None, str, str, str, str | None]


@dataclass(frozen=True, slots=True)
class Record:
    """One valid event as it will be stored."""

    row: Row
    ts_ms: int
    labels: list[str]


def to_record(camera: str, entry_id: str, event: FastEvent | bytes) -> Record:
    """The row of one event that passed `classify_entry` (or its canonical JSON)."""
    data = event.doc if isinstance(event, FastEvent) else orjson.loads(event)
    ms, _, seq = entry_id.partition("-")
    objects = data.get("objects") or []
    attributes = data.get("attributes")
    ts_ms = int(data["ts"])
    labels = sorted({o["label"] for o in objects})
    row: Row = (
        camera,
        _EPOCH + timedelta(milliseconds=ts_ms),
        int(ms),
        int(seq or 0),
        data.get("frame"),
        data["source"],
        _array_literal(labels),
        orjson.dumps(objects).decode(),
        None if attributes is None else orjson.dumps(attributes).decode(),
    )
    return Record(row, ts_ms, labels)


def _array_literal(items: list[str]) -> str:
    """A text[] literal (`{"a","b"}`): COPY then takes a plain string, which psycopg writes far
    more cheaply than it adapts a list. Every element is quoted, so only quotes and
    backslashes need escaping."""
    text = '","'.join(items)
    if "\\" in text or '"' in text:
        text = '","'.join(i.replace("\\", "\\\\").replace('"', '\\"') for i in items)
    return '{"' + text + '"}' if items else "{}"


def count_labels(
    records: Sequence[Record],
) -> tuple[list[str], list[datetime], list[str], list[int]]:
    """The rollup's increments for `records`, as the columns `_ADD_COUNTS` takes."""
    counts: dict[tuple[str, int, str], int] = {}
    for record in records:
        camera, labels = record.row[0], record.labels
        bucket = record.ts_ms - record.ts_ms % _BUCKET_MS
        for label in labels:
            key = (camera, bucket, label)
            counts[key] = counts.get(key, 0) + 1
    cameras, buckets, labels_, values = [], [], [], []
    for (camera, bucket, label), n in sorted(counts.items()):
        cameras.append(camera)
        buckets.append(_EPOCH + timedelta(milliseconds=bucket))
        labels_.append(label)
        values.append(n)
    return cameras, buckets, labels_, values


class Writer:
    """One PostgreSQL connection that writes batches, reconnecting and retrying until done."""

    def __init__(
        self,
        dsn: str | Callable[[], str],
        metrics: Metrics,
        partitions: set[date],
        *,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.metrics = metrics
        # Shared by the writers of one archiver: the days known to have a partition.
        self.partitions = partitions
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self.conn is None or self.conn.closed:
            # A callable is asked at every (re)connect: a rotated Secret file needs no restart.
            dsn = self.dsn() if callable(self.dsn) else self.dsn
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            await conn.execute(_CREATE_STAGING)
            if not self.partitions:
                self.partitions |= await existing_partitions(conn)
            self.conn = conn
        return self.conn

    async def write(self, records: Sequence[Record]) -> int:
        """Store `records` (committed when this returns); the number of new rows."""
        if not records:
            return 0
        delay = self.backoff_initial
        while True:
            try:
                return await self._write_once(records)
            except errors.CheckViolation:
                # No partition for a row: another replica's retention dropped one we knew.
                self.partitions.clear()
                await self._close()
            except errors.DataError as exc:
                # A value PostgreSQL cannot store: keep the rest, drop (and count) the culprits.
                log.warning("batch refused, writing row by row", extra={"error": str(exc)})
                return await self._write_rows(records)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                self.metrics.postgres_errors.inc()
                log.warning(
                    "PostgreSQL write failed, retrying",
                    extra={"error": str(exc).strip(), "retry_in": round(delay, 2)},
                )
                await self._close()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)

    async def ensure_partitions(self, days: set[date]) -> None:
        missing = days - self.partitions
        if missing:
            conn = await self._connection()
            await create_partitions(conn, missing)
            self.partitions |= missing

    async def _write_once(self, records: Sequence[Record]) -> int:
        conn = await self._connection()
        await self.ensure_partitions({utc_day(r.ts_ms) for r in records})
        # Straight into the table first: redeliveries are rare (a crash, a claim), so the usual
        # batch pays for one write per row. A batch holding a row that is already there fails
        # whole and goes through the staging table, which skips the rows already stored.
        try:
            async with conn.transaction():
                cur = conn.cursor()
                async with cur.copy(_COPY_DIRECT) as copy:
                    for record in records:
                        await copy.write_row(record.row)
                await cur.execute(_ADD_COUNTS, count_labels(records))
                return len(records)
        except errors.UniqueViolation:
            pass
        async with conn.transaction():
            cur = conn.cursor()
            async with cur.copy(_COPY) as copy:
                for record in records:
                    await copy.write_row(record.row)
            await cur.execute(_INSERT)
            row = await cur.fetchone()
            return int(row[0]) if row else 0  # type: ignore[call-overload]

    async def _write_rows(self, records: Sequence[Record]) -> int:
        conn = await self._connection()
        inserted = 0
        for record in records:
            try:
                async with conn.transaction():
                    cur = await conn.execute(_INSERT_ONE, record.row)
                    if cur.rowcount:
                        await cur.execute(_ADD_COUNTS, count_labels([record]))
                    inserted += cur.rowcount
            except errors.DataError:
                self.metrics.invalid.labels("unstorable").inc()
        return inserted

    async def _close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def close(self) -> None:
        await self._close()
