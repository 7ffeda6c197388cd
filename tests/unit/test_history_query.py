"""History API parameters and the archiver's pure parts, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from camfleet.camera import CameraSpec, parse_retention
from camfleet_archiver.cameras import policy_from_cameras
from camfleet_archiver.retention import Policy
from camfleet_archiver.writer import to_record
from overlay_gateway.history import (
    BadQuery,
    Cursor,
    parse_events_query,
    parse_time,
    parse_timeline_query,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_times_are_epoch_ms_or_iso_8601_in_utc() -> None:
    assert parse_time("from", "1796126400000") == NOW
    assert parse_time("from", "2026-12-01T12:00:00Z") == NOW
    assert parse_time("from", "2026-12-01T13:00:00+01:00") == NOW
    assert parse_time("from", "2026-12-01T12:00:00") == NOW  # no offset: UTC
    for bad in ("yesterday", "", "-5", "1e12", "2026-12-01T25:00:00Z"):
        with pytest.raises(BadQuery):
            parse_time("from", bad)


def test_events_query_defaults_and_bounds() -> None:
    q = parse_events_query("a/b", {}, max_limit=1000, now=NOW)
    assert (q.start, q.end, q.limit, q.order, q.cursor) == (
        NOW - timedelta(hours=1),
        NOW,
        100,
        "asc",
        None,
    )
    with pytest.raises(BadQuery, match="limit must be from 1 to 50"):
        parse_events_query("a/b", {"limit": "51"}, max_limit=50, now=NOW)
    with pytest.raises(BadQuery, match="from must be before to"):
        parse_events_query("a/b", {"from": "5", "to": "5"}, max_limit=50, now=NOW)


def test_cursor_round_trips_to_the_microsecond() -> None:
    ts = datetime(2026, 12, 1, 12, 0, 0, 123457, tzinfo=UTC)
    cursor = Cursor(ts, 1796126400000, 7)
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "!!", "bm9wZQ", "LTEuMi4z"):  # "nope", "-1.2.3"
        with pytest.raises(BadQuery):
            Cursor.decode(bad)


def test_timeline_buckets_are_round_and_bounded() -> None:
    assert parse_timeline_query("a/b", {}, now=NOW).bucket_seconds == 30  # 1 h / 30 s = 120
    day = {"from": "0", "to": str(86_400_000)}
    assert parse_timeline_query("a/b", day, now=NOW).bucket_seconds == 900
    with pytest.raises(BadQuery, match="at most 2000"):
        parse_timeline_query("a/b", {**day, "bucket": "10"}, now=NOW)


def test_retention_field_and_policy() -> None:
    assert parse_retention("30d") == timedelta(days=30)
    assert parse_retention("12h") == timedelta(hours=12)
    assert parse_retention("2w") == timedelta(weeks=2)
    for bad in ("0d", "30", "d", "1.5d", "30m", "123456d"):
        with pytest.raises(ValueError, match="invalid retention"):
            parse_retention(bad)
    spec = CameraSpec.model_validate(
        {"source": {"url": "rtsp://cam/1"}, "history": {"retention": "7d"}}
    )
    assert spec.history is not None
    assert spec.history.retention_delta == timedelta(days=7)
    policy = policy_from_cameras(
        [
            {"metadata": {"namespace": "a", "name": "x"}, "spec": {"history": {"retention": "7d"}}},
            {"metadata": {"namespace": "a", "name": "y"}, "spec": {}},
            {"metadata": {"namespace": "a", "name": "z"}, "spec": {"history": {"retention": "9y"}}},
        ],
        timedelta(days=30),
    )
    assert policy == Policy(timedelta(days=30), {"a/x": timedelta(days=7)})
    assert policy.longest() == timedelta(days=30)
    assert policy.of("a/y") == timedelta(days=30)


def test_record_of_an_event() -> None:
    body = (
        b'{"v":1,"camera":"a/b","ts":1796126400123,"source":"s","objects":['
        b'{"id":"1","label":"person","score":0.5,"box":[0,0,0.5,0.5]},'
        b'{"id":"2","label":"car","score":0.5,"box":[0,0,0.5,0.5]},'
        b'{"id":"3","label":"person","score":0.5,"box":[0,0,0.5,0.5]}]}'
    )
    record = to_record("a/b", "1796126400200-3", body)
    camera, ts, ms, seq, frame, source, labels, objects, attributes = record.row
    assert (camera, ms, seq, frame, source, attributes) == (
        "a/b",
        1796126400200,
        3,
        None,
        "s",
        None,
    )
    assert ts == NOW + timedelta(milliseconds=123)
    assert labels == '{"car","person"}'  # a text[] literal for COPY
    assert record.labels == ["car", "person"]
    assert objects.startswith('[{"id":"1"')
