"""Retention: whole partitions dropped past the longest retention, rows deleted per camera.

A Camera's `spec.history.retention` (or the archiver's default) says how long its events are
kept. The table is partitioned by capture day, so the cheap part, dropping a day that every
camera is done with, covers everything older than the longest retention; cameras that keep
less lose their older rows by DELETE on the primary key (camera, ts). One replica at a time
does this (a try-lock); the others skip the pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from camfleet_archiver.metrics import Metrics
from camfleet_archiver.schema import (
    COUNTS_BUCKET_SECONDS,
    COUNTS_TABLE,
    RETENTION_LOCK,
    TABLE,
    counts_partition_name,
    create_partitions,
    existing_partitions,
    partition_name,
)

log = logging.getLogger(__name__)

AsyncConn = psycopg.AsyncConnection[tuple[object, ...]]


@dataclass(frozen=True)
class Policy:
    default: timedelta
    cameras: Mapping[str, timedelta] = field(default_factory=dict)

    def longest(self) -> timedelta:
        return max([self.default, *self.cameras.values()])

    def of(self, camera: str) -> timedelta:
        return self.cameras.get(camera, self.default)


@dataclass(frozen=True)
class RetentionResult:
    ran: bool
    dropped: tuple[str, ...] = ()
    deleted: int = 0


async def enforce(
    conn: AsyncConn, policy: Policy, metrics: Metrics, now: datetime | None = None
) -> RetentionResult:
    """One retention pass on an autocommit connection; skipped if another replica runs one."""
    now = now or datetime.now(UTC)
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (RETENTION_LOCK,))
    row = await cur.fetchone()
    if not row or not row[0]:
        return RetentionResult(False)
    try:
        horizon = now - policy.longest()
        dropped: list[str] = []
        for day in sorted(await existing_partitions(conn)):
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            if end <= horizon:
                name = partition_name(day)
                async with conn.transaction():
                    for table in (name, counts_partition_name(day)):
                        await conn.execute(
                            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table))
                        )
                dropped.append(name)
        deleted = 0
        longer = [c for c, keep in policy.cameras.items() if keep > policy.default]
        if policy.default < policy.longest():
            deleted += await _delete_before(
                conn, sql.SQL("NOT (camera = ANY(%s))"), longer, _bucket_floor(now - policy.default)
            )
        for camera, keep in sorted(policy.cameras.items()):
            if keep < policy.longest() and keep != policy.default:
                deleted += await _delete_before(
                    conn, sql.SQL("camera = %s"), camera, _bucket_floor(now - keep)
                )
        metrics.partitions_dropped.inc(len(dropped))
        metrics.retention_deleted.inc(deleted)
        if dropped or deleted:
            log.info("retention applied", extra={"dropped": dropped, "deleted": deleted})
        return RetentionResult(True, tuple(dropped), deleted)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK,))


def _bucket_floor(cutoff: datetime) -> datetime:
    """Cutoffs fall on a rollup bucket boundary, so the events and their counts go together."""
    seconds = int(cutoff.timestamp()) // COUNTS_BUCKET_SECONDS * COUNTS_BUCKET_SECONDS
    return datetime.fromtimestamp(seconds, UTC)


async def _delete_before(
    conn: AsyncConn, which: sql.Composable, value: object, cutoff: datetime
) -> int:
    """Delete the events (and their rollup counts) of the cameras `which` selects before
    `cutoff`, in one transaction; the number of events deleted."""
    async with conn.transaction():
        cur = await conn.execute(
            sql.SQL("DELETE FROM {} WHERE ts < %s AND {}").format(sql.Identifier(TABLE), which),
            (cutoff, value),
        )
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE bucket < %s AND {}").format(
                sql.Identifier(COUNTS_TABLE), which
            ),
            (cutoff, value),
        )
        return max(cur.rowcount, 0)


async def ensure_ahead(conn: AsyncConn, days_ahead: int, now: datetime | None = None) -> None:
    """Today's partition and the next `days_ahead` ones, before any event needs them."""
    today = (now or datetime.now(UTC)).date()
    wanted = {today + timedelta(days=i) for i in range(days_ahead + 1)}
    missing = wanted - await existing_partitions(conn)
    if missing:
        await create_partitions(conn, missing)


async def measure(conn: AsyncConn, metrics: Metrics) -> dict[str, tuple[int, int]]:
    """Rows and an estimate of bytes per camera (its share of the table's total size)."""
    cur = await conn.execute(
        sql.SQL("SELECT camera, count(*) FROM {} GROUP BY camera").format(sql.Identifier(TABLE))
    )
    counts = {str(camera): int(n) for camera, n in await cur.fetchall()}  # type: ignore[call-overload]
    cur = await conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
        "WHERE inhparent = %s::regclass",
        (TABLE,),
    )
    row = await cur.fetchone()
    total_bytes = int(row[0]) if row else 0  # type: ignore[call-overload]
    total_rows = sum(counts.values()) or 1
    sizes = {c: (n, total_bytes * n // total_rows) for c, n in counts.items()}
    metrics.camera_rows.clear()
    metrics.camera_bytes.clear()
    for camera, (rows, size) in sizes.items():
        metrics.camera_rows.labels(camera).set(rows)
        metrics.camera_bytes.labels(camera).set(size)
    metrics.partitions.set(len(await existing_partitions(conn)))
    return sizes
