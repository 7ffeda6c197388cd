"""Retention by age: a recording ingest deletes its own camera's segments older than
`spec.recording.retention`, on a timer, rows first and objects after.

Rows go first so that no row ever names a deleted object (a crash in between leaves objects
without rows, which an orphan sweep removes, never the reverse). Deletes are batched (one
statement and one multi-object delete per batch) and bounded per pass, so a camera that comes
back after a long outage catches up over a few passes instead of holding a long transaction.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import obstore

from camfleet_ingest.recording.index import SegmentIndex
from camfleet_ingest.recording.store import ObjectStore

log = logging.getLogger(__name__)

BATCH = 500
MAX_BATCHES_PER_PASS = 20


async def enforce_age(
    index: SegmentIndex,
    store: ObjectStore,
    camera: str,
    retention: timedelta,
    now: datetime | None = None,
) -> int:
    """Delete this camera's segments (and gaps) that ended before now - retention; return how
    many segments went. Raises what the index or the store raised (the caller retries)."""
    horizon = (now or datetime.now(UTC)) - retention
    removed = 0
    for _ in range(MAX_BATCHES_PER_PASS):
        keys = await index.delete_before(camera, horizon, BATCH)
        if keys:
            await obstore.delete_async(store, keys)
            removed += len(keys)
        if len(keys) < BATCH:
            break
    if removed:
        log.info("recording retention", extra={"deleted_segments": removed})
    return removed
