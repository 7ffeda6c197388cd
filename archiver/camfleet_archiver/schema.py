"""The history schema: migrations (Alembic, under an advisory lock) and daily partitions.

Migrations run at start-up on a dedicated connection that first takes a session advisory lock,
so N replicas starting together apply each revision once; the others wait and find nothing to
do. Partitions are one per UTC day of the events' capture time (`events_pYYYYMMDD`), created a
few days ahead and on demand for late events, under a transaction advisory lock.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

import psycopg
import sqlalchemy
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy.pool import NullPool

TABLE: Final = "events"
# The timeline's rollup (migration 0002): counts per camera, 10 s bucket and label, partitioned
# by the same days as the events so that retention drops both together.
COUNTS_TABLE: Final = "event_counts"
COUNTS_BUCKET_SECONDS: Final = 10
# pg_advisory_lock keys (any bigint; these spell "camfleet" and a purpose).
MIGRATION_LOCK: Final = 0x63616D666C656574
PARTITION_LOCK: Final = 0x63616D6670617274
RETENTION_LOCK: Final = 0x63616D6672657465
_PARTITION_RE: Final = re.compile(r"^events_p(\d{8})$")


def migrate(dsn: str, revision: str = "head") -> None:
    """Apply every migration up to `revision` (blocking; call before serving)."""

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(dsn)

    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=connect, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            conn.commit()
            try:
                config = Config()
                config.set_main_option("script_location", "camfleet_archiver:migrations")
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
            finally:
                conn.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK}
                )
                conn.commit()
    finally:
        engine.dispose()


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def counts_partition_name(day: date) -> str:
    return f"{COUNTS_TABLE}_p{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    match = _PARTITION_RE.match(name)
    return datetime.strptime(match.group(1), "%Y%m%d").date() if match else None


def utc_day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date()


async def existing_partitions(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> set[date]:
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass",
        (TABLE,),
    )
    days = {partition_day(str(name)) for (name,) in await cur.fetchall()}
    return {d for d in days if d is not None}


async def create_partitions(
    conn: psycopg.AsyncConnection[tuple[object, ...]], days: set[date], *, counts: bool = True
) -> None:
    """Create the daily partitions of `days` (events and their counts) that do not exist yet
    (one transaction)."""
    statements: list[sql.Composable] = []
    for day in sorted(days):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        tables = [(partition_name(day), TABLE)]
        if counts:  # False only before migration 0002 (which then adds them)
            tables.append((counts_partition_name(day), COUNTS_TABLE))
        for name, table in tables:
            statements.append(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(name),
                    sql.Identifier(table),
                    sql.Literal(start),
                    sql.Literal(start + timedelta(days=1)),
                )
            )
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        # One round trip: the parent tables stay locked (AccessExclusive) only as long as
        # PostgreSQL takes to create them, not while this process waits for its turn to run.
        await conn.execute(sql.SQL("; ").join(statements))
