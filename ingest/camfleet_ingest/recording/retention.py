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
SWEEP_MARGIN = timedelta(hours=1)


def camera_prefix(prefix: str, camera: str) -> str:
    """The store prefix under which `segment_key` puts this camera's segments."""
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{head}{camera}/"


async def sweep_days(store: ObjectStore, prefix: str, camera: str, horizon: datetime) -> int:
    """Delete every object in this camera's day folders that ended before ``horizon``.

    Their rows are gone by then (retention deletes rows first), so what is left there is what a
    crash left between a PUT and its INSERT, or between retention's two steps: objects no row
    names. One LIST of the day folders per pass; an old day is listed and emptied once.
    """
    base = camera_prefix(prefix, camera)
    listed = await obstore.list_with_delimiter_async(store, base)
    removed = 0
    for folder in listed["common_prefixes"]:
        day = folder.rstrip("/").rsplit("/", 1)[-1]
        try:
            end = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(days=1)
        except ValueError:
            continue  # not one of ours
        # A segment that starts just before midnight ends after it: keep a margin far longer
        # than any segment, so the sweep never takes an object whose row is still there.
        if end + SWEEP_MARGIN > horizon:
            continue
        async for batch in obstore.list(store, folder, chunk_size=BATCH):
            keys = [meta["path"] for meta in batch]
            if keys:
                await obstore.delete_async(store, keys)
                removed += len(keys)
    return removed


async def enforce_age(
    index: SegmentIndex,
    store: ObjectStore,
    camera: str,
    retention: timedelta,
    now: datetime | None = None,
    prefix: str | None = None,
) -> int:
    """Delete this camera's segments (and gaps) that ended before now - retention; return how
    many segments went. With ``prefix`` (the store's key prefix), also sweep the objects of
    whole days past the horizon that no row names. Raises what the index or the store raised
    (the caller retries)."""
    horizon = (now or datetime.now(UTC)) - retention
    removed = 0
    for _ in range(MAX_BATCHES_PER_PASS):
        keys = await index.delete_before(camera, horizon, BATCH)
        if keys:
            await obstore.delete_async(store, keys)
            removed += len(keys)
        if len(keys) < BATCH:
            break
    if prefix is not None:
        orphans = await sweep_days(store, prefix, camera, horizon)
        if orphans:
            log.info("recording retention swept objects without rows", extra={"objects": orphans})
    if removed:
        log.info("recording retention", extra={"deleted_segments": removed})
    return removed
