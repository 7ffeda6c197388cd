"""The segment index: one row per stored segment and per gap, in the archiver's PostgreSQL.

The ingest writes its own rows (docs/recording.md says why): a segment's row is inserted only
after its object is in the store, so a row always names a complete object; a crash between the
two leaves an object without a row (retention sweeps those), never a row without an object.
Inserts are idempotent (the camera and start time are the key), so a retry after a lost reply
makes no second row. The tables come from the archiver's migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from camfleet.recording import TIMESCALE, Gap, Segment


def _ts(us: int) -> datetime:
    # PostgreSQL's timestamptz has microsecond resolution: the stamp survives exactly.
    return datetime.fromtimestamp(us // TIMESCALE, UTC).replace(microsecond=us % TIMESCALE)


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * TIMESCALE + ts.microsecond


class SegmentIndex:
    """One connection, opened lazily and re-opened after a failure."""

    def __init__(self, dsn: str, timeout_s: float) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(1, int(self._timeout_s)),
                application_name="camfleet-ingest",
            )
        return self._conn

    async def _execute(self, query: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        conn = await self._connection()
        try:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            await self.close()  # a broken connection: the next call dials again
            raise

    async def add_segment(self, segment: Segment) -> None:
        await self._execute(
            "INSERT INTO recording_segments (camera, start_ts, end_ts, first_frame, frames,"
            " keyframes_us, size, object_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                segment.camera,
                _ts(segment.start_us),
                _ts(segment.end_us),
                segment.first_frame,
                segment.frames,
                list(segment.keyframes_us),
                segment.size,
                segment.key,
            ),
        )

    async def add_gap(self, gap: Gap) -> None:
        await self._execute(
            "INSERT INTO recording_gaps (camera, start_ts, end_ts, reason)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (gap.camera, _ts(gap.start_us), _ts(gap.end_us), gap.reason),
        )

    async def last_end_us(self, camera: str) -> int | None:
        """Where this camera's recording ended before (a previous run of the ingest)."""
        rows = await self._execute(
            "SELECT end_ts FROM recording_segments WHERE camera = %s"
            " ORDER BY start_ts DESC LIMIT 1",
            (camera,),
        )
        value = rows[0][0] if rows else None
        return _us(value) if isinstance(value, datetime) else None

    async def delete_before(self, camera: str, horizon: datetime, limit: int) -> list[str]:
        """Delete up to ``limit`` of the oldest segment rows that ended before ``horizon`` (and
        the camera's gaps that did); return the deleted rows' object keys."""
        rows = await self._execute(
            "DELETE FROM recording_segments WHERE (camera, start_ts) IN ("
            " SELECT camera, start_ts FROM recording_segments WHERE camera = %s AND start_ts < %s"
            " AND end_ts < %s ORDER BY start_ts LIMIT %s) RETURNING object_key",
            (camera, horizon, horizon, limit),
        )
        await self._execute(
            "DELETE FROM recording_gaps WHERE camera = %s AND end_ts < %s", (camera, horizon)
        )
        return [str(key) for (key,) in rows]

    async def stored_bytes(self, camera: str) -> int:
        rows = await self._execute(
            "SELECT coalesce(sum(size), 0) FROM recording_segments WHERE camera = %s", (camera,)
        )
        return int(str(rows[0][0])) if rows else 0

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()
