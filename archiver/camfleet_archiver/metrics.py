"""Prometheus metrics of one archiver replica, on its own registry (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.archived = Counter(
            "camfleet_archiver_events_archived", "Rows written (new stream entries).", registry=r
        )
        self.duplicates = Counter(
            "camfleet_archiver_events_duplicate",
            "Entries already in the table (redelivered or claimed after a crash).",
            registry=r,
        )
        self.invalid = Counter(
            "camfleet_archiver_events_invalid",
            "Entries dropped as malformed or out of range (and acknowledged).",
            ["reason"],
            registry=r,
        )
        self.lost = Counter(
            "camfleet_archiver_events_lost",
            "Entries trimmed from Redis before they were archived (XAUTOCLAIM reports them).",
            registry=r,
        )
        self.claimed = Counter(
            "camfleet_archiver_events_claimed",
            "Entries claimed from another (dead or stuck) consumer.",
            registry=r,
        )
        self.batches = Histogram(
            "camfleet_archiver_batch_events",
            "Entries per transaction.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.lag = Histogram(
            "camfleet_archiver_lag_seconds",
            "From an entry's arrival in Redis (its id) to its commit in PostgreSQL.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.streams = Gauge(
            "camfleet_archiver_streams", "Camera streams this replica reads.", registry=r
        )
        self.backlog = Gauge(
            "camfleet_archiver_backlog_entries",
            "Entries of a camera's stream not yet archived (undelivered + pending).",
            ["camera"],
            registry=r,
        )
        self.behind = Gauge(
            "camfleet_archiver_behind_retention",
            "1 while a camera's backlog nears its stream length: trimming is about to drop "
            "unarchived events.",
            ["camera"],
            registry=r,
        )
        self.postgres_errors = Counter(
            "camfleet_archiver_postgres_errors", "Failed PostgreSQL operations.", registry=r
        )
        self.redis_errors = Counter(
            "camfleet_archiver_redis_errors", "Failed Redis operations.", registry=r
        )
        self.camera_rows = Gauge(
            "camfleet_archiver_camera_rows", "Stored events per camera.", ["camera"], registry=r
        )
        self.camera_bytes = Gauge(
            "camfleet_archiver_camera_bytes",
            "Storage per camera (its share of the table's rows times the table's total size, "
            "indexes included).",
            ["camera"],
            registry=r,
        )
        self.partitions = Gauge(
            "camfleet_archiver_partitions", "Daily partitions of the events table.", registry=r
        )
        self.retention_deleted = Counter(
            "camfleet_archiver_retention_deleted_rows",
            "Rows removed by per-camera retention (row deletes; dropped partitions not counted).",
            registry=r,
        )
        self.partitions_dropped = Counter(
            "camfleet_archiver_partitions_dropped",
            "Daily partitions dropped past the longest retention.",
            registry=r,
        )
