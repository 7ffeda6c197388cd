"""Recording retention by age against a real PostgreSQL index and a real S3-compatible store:
the segments (rows and objects) and gaps older than the retention go, nothing newer and nothing
of another camera does."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import obstore
import pytest
from obstore.store import S3Store

from camfleet.recording import Gap, Segment, segment_key
from camfleet_archiver.schema import migrate
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.s3 import S3Server
from camfleet_ingest.recording.index import SegmentIndex
from camfleet_ingest.recording.retention import enforce_age

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
HOUR_US = 3_600_000_000


def us(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


async def test_age_retention_deletes_the_oldest_and_nothing_else(
    postgres: PostgresServer, s3_server: S3Server
) -> None:
    dsn = postgres.create_database(f"r_{secrets.token_hex(4)}")
    await asyncio.to_thread(migrate, dsn)
    bucket = s3_server.create_bucket(f"ret-{secrets.token_hex(3)}")
    store = S3Store(
        bucket,
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    index = SegmentIndex(dsn, timeout_s=5)
    keys: dict[tuple[str, int], str] = {}
    # Segments every 30 min from 5 h ago to now, for two cameras; a gap 4 h ago.
    for camera in ("site/door", "site/yard"):
        for age_h in (5.0, 4.5, 4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5):
            start = us(NOW) - int(age_h * HOUR_US)
            key = segment_key("rec", camera, start)
            keys[(camera, start)] = key
            await obstore.put_async(store, key, b"segment")
            await index.add_segment(
                Segment(
                    camera=camera,
                    start_us=start,
                    end_us=start + 4_000_000,
                    first_frame=1,
                    frames=100,
                    keyframes_us=(0,),
                    size=7,
                    key=key,
                )
            )
    # Objects no row names (a crash between PUT and INSERT): two days ago and today.
    old_orphan = segment_key("rec", "site/door", us(NOW - timedelta(days=2)))
    new_orphan = segment_key("rec", "site/door", us(NOW) - 60_000_000)
    for key in (old_orphan, new_orphan):
        await obstore.put_async(store, key, b"orphan")
    await index.add_gap(
        Gap(
            camera="site/door",
            start_us=us(NOW) - 4 * HOUR_US,
            end_us=us(NOW) - 4 * HOUR_US + 9,
            reason="StoreUnavailable",
        )
    )
    try:
        deleted = await enforce_age(
            index, store, "site/door", timedelta(hours=3), now=NOW, prefix="rec"
        )
        # 5, 4.5, 4 and 3.5 h old ended before the horizon; the one starting 3 h ago ends
        # after it (4 s later) and stays.
        assert deleted == 4
        assert await enforce_age(index, store, "site/door", timedelta(hours=3), now=NOW) == 0
        for (camera, start), key in keys.items():
            gone = camera == "site/door" and start + 4_000_000 < us(NOW - timedelta(hours=3))
            if gone:
                with pytest.raises(FileNotFoundError):
                    await obstore.head_async(store, key)
            else:
                await obstore.head_async(store, key)
        # The day folder past the horizon is swept; today's orphan waits for its day to pass.
        with pytest.raises(FileNotFoundError):
            await obstore.head_async(store, old_orphan)
        await obstore.head_async(store, new_orphan)
        assert await index.stored_bytes("site/door") == 6 * 7
        assert await index.stored_bytes("site/yard") == 10 * 7
        rows = await index._execute("SELECT count(*) FROM recording_gaps", ())
        assert rows == [(0,)]
    finally:
        await index.close()
