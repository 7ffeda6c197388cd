"""PostgreSQL side of the archiver: a batch of stream entries → rows, in one transaction.

Rows are COPYed straight into the partitioned table. When a batch holds an entry that is
already stored (a redelivery after a crash, a claim), the primary key refuses the whole COPY and
the batch goes through a temporary staging table and one `INSERT … SELECT … ON CONFLICT DO
NOTHING` instead: a redelivered or claimed entry never makes a second row. The caller
acknowledges the entries in Redis only after `write` returned, i.e. after the commit.
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

from camfleet_archiver.metrics import Metrics
from camfleet_archiver.schema import TABLE, create_partitions, existing_partitions, utc_day

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
_INSERT: Final = (
    f"INSERT INTO {TABLE} ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGING} "
    "ON CONFLICT DO NOTHING"
)
_INSERT_ONE: Final = (
    f"INSERT INTO {TABLE} ({_COLUMN_LIST}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
Row = tuple[str, datetime, int, int, int | None, str, list[str], str, str | None]


@dataclass(frozen=True, slots=True)
class Record:
    """One valid event as it will be stored."""

    row: Row
    ts_ms: int


def to_record(camera: str, entry_id: str, event_json: bytes) -> Record:
    """The row of one event that passed `classify_entry` (its JSON as it came from the stream:
    valid by then, so only the fields the row needs are read)."""
    data = orjson.loads(event_json)
    ms, _, seq = entry_id.partition("-")
    objects = data.get("objects") or []
    attributes = data.get("attributes")
    ts_ms = int(data["ts"])
    row: Row = (
        camera,
        _EPOCH + timedelta(milliseconds=ts_ms),
        int(ms),
        int(seq or 0),
        data.get("frame"),
        data["source"],
        sorted({o["label"] for o in objects}),
        orjson.dumps(objects).decode(),
        None if attributes is None else orjson.dumps(attributes).decode(),
    )
    return Record(row, ts_ms)


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
                return len(records)
        except errors.UniqueViolation:
            pass
        async with conn.transaction():
            cur = conn.cursor()
            async with cur.copy(_COPY) as copy:
                for record in records:
                    await copy.write_row(record.row)
            await cur.execute(_INSERT)
            return cur.rowcount

    async def _write_rows(self, records: Sequence[Record]) -> int:
        conn = await self._connection()
        inserted = 0
        for record in records:
            try:
                async with conn.transaction():
                    cur = await conn.execute(_INSERT_ONE, record.row)
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
