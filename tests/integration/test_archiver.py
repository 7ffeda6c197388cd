"""The archiver against a real redis-server and a real PostgreSQL: exactly one row per stream
entry, through crashes and restarts of the archiver, PostgreSQL and Redis; replicas; malformed
entries; concurrent migrations; retention.

Each test gets its own PostgreSQL database and its own Redis database number, so counts are
the test's own. In-process archivers (`Service`) where the test needs their metrics; a child
process where it must be SIGKILLed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from alembic.config import Config
from alembic.script import ScriptDirectory
from prometheus_client import generate_latest

from camfleet.ai import Publisher
from camfleet.events import Event, stream_key
from camfleet_archiver.main import Service
from camfleet_archiver.metrics import Metrics
from camfleet_archiver.retention import Policy, enforce, ensure_ahead
from camfleet_archiver.schema import existing_partitions, migrate
from camfleet_archiver.settings import Settings
from camfleet_archiver.writer import Writer, to_record
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.process import free_port, http_ok
from camfleet_dev.testbed.redis import RedisServer

_DBS = itertools.cycle(range(2, 16))  # Redis database numbers; 0 and 1 belong to other tests


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    url = f"redis://127.0.0.1:{redis_server.port}/{next(_DBS)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def dsn(postgres: PostgresServer) -> str:
    return postgres.create_database(f"t_{secrets.token_hex(4)}")


def archiver_settings(redis_url: str, dsn: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "postgres_dsn": dsn,
        "consumer": f"test-{secrets.token_hex(3)}",
        "discover_seconds": 0.3,
        "claim_idle_seconds": 1.0,
        "claim_every_seconds": 0.5,
        "backlog_every_seconds": 0.5,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        "block_ms": 100,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
async def service_factory() -> AsyncIterator[Callable[[Settings], Any]]:
    started: list[Service] = []

    async def start(settings: Settings) -> Service:
        service = Service(settings, Metrics())
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        # Bounded like the process's own shutdown: a hang here is a bug, not a slow teardown.
        await asyncio.wait_for(service.close(), 30)


def event(camera: str, n: int, labels: tuple[str, ...] = ("person",)) -> dict[str, Any]:
    return {
        "camera": camera,
        "ts": int(time.time() * 1000),
        "frame": n,
        "source": "test",
        "objects": [
            {"id": f"t{i}", "label": label, "score": 0.9, "box": [0.1, 0.1, 0.2, 0.2]}
            for i, label in enumerate(labels)
        ],
    }


def rows(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        try:
            result = conn.execute("SELECT camera, count(*) FROM events GROUP BY camera").fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {str(camera): int(n) for camera, n in result}  # type: ignore[call-overload]


def rollup_mismatches(dsn: str) -> list[tuple[object, ...]]:
    """Where the timeline's rollup differs from counting the events themselves (none, when
    every row was counted exactly once)."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "WITH truth AS (SELECT camera, date_bin('10 seconds', ts, "
            "timestamptz '1970-01-01 00:00:00+00') AS bucket, l AS label, count(*) AS n "
            "FROM events, unnest(labels) AS l GROUP BY 1, 2, 3) "
            "SELECT * FROM truth FULL JOIN event_counts c USING (camera, bucket, label) "
            "WHERE truth.n IS DISTINCT FROM c.count"
        ).fetchall()


def stored_ids(dsn: str, camera: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        result = conn.execute(
            "SELECT entry_ms, entry_seq FROM events WHERE camera = %s ORDER BY 1, 2", (camera,)
        ).fetchall()
    return [f"{ms}-{seq}" for ms, seq in result]


def stream_ids(redis_url: str, camera: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [i.decode() for i, _ in client.xrange(stream_key(camera))]
    finally:
        client.close()


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll `check` off the event loop: it may block (psycopg, HTTP), and an in-process archiver
    shares this loop; blocking it in the middle of one of its transactions would wait on that
    transaction's locks forever."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_sdk_events_are_archived_exactly_once(
    redis_url: str, dsn: str, service_factory: Callable[[Settings], Any]
) -> None:
    cameras = [f"arch-{secrets.token_hex(2)}/cam-{i}" for i in range(3)]
    with Publisher(redis_url) as pub:
        for n in range(300):
            pub.publish_many([event(c, n, ("person", "car")) for c in cameras])
    service = await service_factory(archiver_settings(redis_url, dsn))
    want = dict.fromkeys(cameras, 300)
    await until(lambda: rows(dsn) == want, 90, "300 rows per camera")
    # A second replica of the same group, and a new group reading everything again, add nothing.
    await service_factory(archiver_settings(redis_url, dsn, group="second-group"))
    await until(lambda: service.metrics.archived._value.get() == 900, 30, "metrics")
    await asyncio.sleep(2)
    assert rows(dsn) == want
    for camera in cameras:
        assert stored_ids(dsn, camera) == stream_ids(redis_url, camera)
    with psycopg.connect(dsn) as conn:
        labels, objects = conn.execute(
            "SELECT labels, objects FROM events WHERE camera = %s LIMIT 1", (cameras[0],)
        ).fetchone()  # type: ignore[misc]
    assert labels == ["car", "person"]
    assert [o["label"] for o in objects] == ["person", "car"]
    # Everything acknowledged: nothing pending for the group.
    client = redis.Redis.from_url(redis_url)
    try:
        for camera in cameras:
            assert client.xpending(stream_key(camera), "camfleet-archiver")["pending"] == 0
    finally:
        client.close()


async def test_malformed_entries_are_dropped_counted_and_acknowledged(
    redis_url: str, dsn: str, service_factory: Callable[[Settings], Any]
) -> None:
    camera = f"arch-{secrets.token_hex(2)}/garbage"
    key = stream_key(camera)
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd(key, {"e": b"not json"})
        client.xadd(key, {"x": b"{}"})
        client.xadd(key, {"e": b'{"v":2,"camera":"%s","ts":1,"source":"s"}' % camera.encode()})
        client.xadd(key, {"e": b'{"v":1,"camera":"other/cam","ts":1,"source":"s"}'})
        client.xadd(
            key, {"e": b'{"v":1,"camera":"%s","ts":1,"source":"a\\u0000"}' % camera.encode()}
        )
        with Publisher(redis_url) as pub:
            good = pub.publish(event(camera, 1))
        service = await service_factory(archiver_settings(redis_url, dsn))
        await until(lambda: rows(dsn).get(camera) == 1, 30, "the one valid event")
        invalid = {
            s.labels["reason"]: s.value
            for s in service.metrics.registry.collect()
            for s in s.samples
            if s.name == "camfleet_archiver_events_invalid_total"
        }
        assert invalid == {
            "not_json": 1,
            "missing_field": 1,
            "version": 1,
            "camera_mismatch": 1,
            "unstorable": 1,
        }
        assert stored_ids(dsn, camera) == [good]
        await until(
            lambda: client.xpending(key, "camfleet-archiver")["pending"] == 0, 10, "all acked"
        )
    finally:
        client.close()


async def test_two_replicas_share_the_work_without_duplicates(
    redis_url: str, dsn: str, service_factory: Callable[[Settings], Any]
) -> None:
    cameras = [f"arch-{secrets.token_hex(2)}/cam-{i}" for i in range(10)]
    settings = archiver_settings(redis_url, dsn, read_count=50)
    a = await service_factory(settings)
    b = await service_factory(settings.model_copy(update={"consumer": "replica-b"}))
    with Publisher(redis_url) as pub:
        for n in range(400):
            pub.publish_many([event(c, n) for c in cameras])
            if n % 50 == 0:
                await asyncio.sleep(0.05)  # let both replicas read while it arrives
    await until(lambda: rows(dsn) == dict.fromkeys(cameras, 400), 60, "400 rows per camera")
    share_a = a.metrics.archived._value.get()
    share_b = b.metrics.archived._value.get()
    assert share_a + share_b == 4000
    assert share_a > 0, (share_a, share_b)
    assert share_b > 0, (share_a, share_b)
    assert a.metrics.duplicates._value.get() + b.metrics.duplicates._value.get() == 0
    for camera in cameras:
        assert stored_ids(dsn, camera) == stream_ids(redis_url, camera)
    assert rollup_mismatches(dsn) == []  # both replicas added to the same counts


async def test_labels_are_stored_as_written_and_counted_once(dsn: str) -> None:
    """Labels reach PostgreSQL's text[] as COPY text literals: any character must survive, and a
    batch written twice (the redelivery path) adds nothing to the timeline's counts."""
    await asyncio.to_thread(migrate, dsn)
    labels = ['say "hi"', "back\\slash", "{a,b}", "NULL", "tab\there", "new\nline", "é ü 人", ","]
    body = event("odd/labels", 1)
    body["objects"] = [
        {"id": f"t{i}", "label": label, "score": 0.5, "box": [0.1, 0.1, 0.2, 0.2]}
        for i, label in enumerate(labels)
    ]
    ts = int(body["ts"])  # type: ignore[call-overload]
    record = to_record("odd/labels", f"{ts}-0", Event.model_validate(body).to_json())
    writer = Writer(dsn, Metrics(), set())
    assert await writer.write([record]) == 1
    second = to_record("odd/labels", f"{ts}-1", Event.model_validate(body).to_json())
    assert await writer.write([record, second]) == 1  # the first is already there
    await writer.close()
    with psycopg.connect(dsn) as conn:
        stored = [r[0] for r in conn.execute("SELECT labels FROM events").fetchall()]
        counts = dict(conn.execute("SELECT label, count FROM event_counts").fetchall())
    assert stored == [sorted(labels), sorted(labels)]
    assert counts == dict.fromkeys(labels, 2)
    assert rollup_mismatches(dsn) == []


class _Feeder(threading.Thread):
    """Publishes steadily to a few cameras through every restart; remembers the ids it got."""

    def __init__(self, redis_url: str, cameras: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.redis_url, self.cameras, self.rate = redis_url, cameras, rate
        self.ids: dict[str, list[str]] = {c: [] for c in cameras}
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with Publisher(self.redis_url, retries=2) as pub:
            n = 0
            while not self.halt.is_set():
                n += 1
                try:
                    ids = pub.publish_many([event(c, n) for c in self.cameras])
                except redis.RedisError:
                    self.failures += 1  # Redis restarting: the worker would drop this frame
                else:
                    for camera, entry in zip(self.cameras, ids, strict=True):
                        self.ids[camera].append(entry)
                time.sleep(1 / self.rate)


def _spawn(settings_env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "camfleet_archiver"],
            env={**os.environ, **settings_env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_crash_and_restarts_lose_nothing_and_duplicate_nothing(
    redis_url: str,
    dsn: str,
    postgres: PostgresServer,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """SIGKILL the archiver mid-stream, restart PostgreSQL (killed) and Redis under a steady
    feed: afterwards every stream entry is in the table exactly once."""
    cameras = [f"arch-{secrets.token_hex(2)}/cam-{i}" for i in range(4)]
    secret = tmp_path / "dsn"
    secret.write_text(dsn + "\n")
    port = free_port()
    env = {
        "CAMFLEET_ARCHIVER_REDIS_URL": redis_url,
        "CAMFLEET_ARCHIVER_POSTGRES_DSN_FILE": str(secret),
        "CAMFLEET_ARCHIVER_PORT": str(port),
        "CAMFLEET_ARCHIVER_HOST": "127.0.0.1",
        "CAMFLEET_ARCHIVER_DISCOVER_SECONDS": "0.3",
        "CAMFLEET_ARCHIVER_CLAIM_IDLE_SECONDS": "1",
        "CAMFLEET_ARCHIVER_CLAIM_EVERY_SECONDS": "0.5",
        "CAMFLEET_ARCHIVER_BACKOFF_MAX_SECONDS": "0.5",
        "CAMFLEET_ARCHIVER_BLOCK_MS": "100",
    }
    log = tmp_path / "archiver.log"
    feeder = _Feeder(redis_url, cameras, rate=100)  # 400 events/s
    feeder.start()
    first = _spawn({**env, "CAMFLEET_ARCHIVER_CONSUMER": "pod-a"}, log)
    procs = [first]
    try:
        await until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, "archiver up")
        await until(lambda: sum(rows(dsn).values()) > 500, 30, "archiving under way")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        # A new pod (another consumer name) must claim what pod-a had read but not committed.
        second = _spawn({**env, "CAMFLEET_ARCHIVER_CONSUMER": "pod-b"}, log)
        procs.append(second)
        await until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, "pod-b up")
        await asyncio.sleep(1)
        postgres.kill()
        await asyncio.sleep(1.5)
        postgres.start()
        await asyncio.sleep(1)
        redis_server.stop()
        await asyncio.sleep(1)
        redis_server.start()
        await asyncio.sleep(2)
    finally:
        feeder.halt.set()
        feeder.join(10)
    try:
        client = redis.Redis.from_url(redis_url)

        def settled() -> bool:
            return all(
                client.xpending(stream_key(c), "camfleet-archiver")["pending"] == 0
                and len(stored_ids(dsn, c)) == client.xlen(stream_key(c))
                for c in cameras
            )

        await until(settled, 60, "the archive to catch up")
        for camera in cameras:
            in_table = stored_ids(dsn, camera)
            assert len(in_table) == len(set(in_table))
            assert in_table == stream_ids(redis_url, camera)
            # Every id the publisher was given is there (a retried XADD may add one more).
            assert set(feeder.ids[camera]) <= set(in_table)
            assert len(feeder.ids[camera]) > 500
        # The timeline's counts went through the same redeliveries: each row counted once.
        assert rollup_mismatches(dsn) == []
        client.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
    text = log.read_text()
    assert "claimed idle entries" in text, "pod-b never claimed pod-a's pending entries"
    assert "Traceback" not in text, text[-3000:]


def _head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", "camfleet_archiver:migrations")
    return ScriptDirectory.from_config(config).get_current_head()


async def test_migrations_from_many_replicas_at_once_apply_once(dsn: str) -> None:
    await asyncio.gather(*(asyncio.to_thread(migrate, dsn) for _ in range(4)))
    with psycopg.connect(dsn) as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()  # type: ignore[misc]
        assert version == _head_revision()
        assert conn.execute("SELECT count(*) FROM event_counts").fetchone() == (0,)


async def test_retention_drops_old_data_and_nothing_newer(dsn: str) -> None:
    await asyncio.to_thread(migrate, dsn)
    now = datetime.now(UTC).replace(microsecond=0)
    ages = [
        timedelta(days=40),
        timedelta(days=20),
        timedelta(days=8),
        timedelta(days=1),
        timedelta(hours=1),
    ]
    cameras = ["ret/default", "ret/short", "ret/long"]
    records = []
    seq = itertools.count()
    for camera in cameras:
        for age in ages:
            ts = int((now - age).timestamp() * 1000)
            body = event(camera, 1)
            body["ts"] = ts
            records.append(
                to_record(camera, f"{ts}-{next(seq)}", Event.model_validate(body).to_json())
            )
    writer = Writer(dsn, Metrics(), set())
    assert await writer.write(records) == len(records)
    await writer.close()
    policy = Policy(
        timedelta(days=30),
        {"ret/short": timedelta(days=7), "ret/long": timedelta(days=60)},
    )
    metrics = Metrics()

    def kept() -> dict[str, int]:
        return rows(dsn)

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await ensure_ahead(conn, 2, now)
        result = await enforce(conn, policy, metrics, now)
        assert result.ran
        # The longest retention (60d) still needs the 40-day-old day: no partition dropped;
        # rows past each camera's own retention deleted, every newer row kept.
        assert result.dropped == ()
        assert kept() == {"ret/default": 4, "ret/short": 2, "ret/long": 5}
        assert result.deleted == 4
        assert rollup_mismatches(dsn) == []  # the timeline lost the same rows
        # The long camera gone (30d for everyone now): the 40-day-old partition is dropped.
        result = await enforce(conn, Policy(timedelta(days=30)), metrics, now)
        assert len(result.dropped) == 1
        assert kept() == {"ret/default": 4, "ret/short": 2, "ret/long": 4}
        assert rollup_mismatches(dsn) == []
        days = await existing_partitions(conn)
    assert min(days) == (now - timedelta(days=20)).date()
    assert max(days) == (now + timedelta(days=2)).date()


async def test_falling_behind_is_a_metric_a_log_and_a_camera_event(
    redis_url: str,
    kube: KubeCluster,
    camera_crd: object,
    namespace: str,
    service_factory: Callable[[Settings], Any],
) -> None:
    """PostgreSQL unreachable: nothing is archived, the backlog reaches the stream's length,
    and the Camera gets a Warning Event `ArchiveBehind`."""
    await asyncio.to_thread(
        kube.apply,
        "apiVersion: camfleet.io/v1alpha1\nkind: Camera\nmetadata: {name: dock}\n"
        'spec: {source: {url: "rtsp://127.0.0.1:8554/dock"}}\n',
        namespace=namespace,
    )
    camera = f"{namespace}/dock"
    with Publisher(redis_url) as pub:
        pub.publish_many([event(camera, n) for n in range(200)])
    down = f"postgresql://camfleet:camfleet@127.0.0.1:{free_port()}/camfleet"
    service = await service_factory(
        archiver_settings(
            redis_url,
            down,
            migrate=False,
            kube_enabled=True,
            kubeconfig=kube.kubeconfig,
            backlog_every_seconds=0.3,
        )
    )
    await until(lambda: service.archiver.behind == {camera}, 30, "behind retention")
    text = generate_latest(service.metrics.registry).decode()
    assert f'camfleet_archiver_behind_retention{{camera="{camera}"}} 1.0' in text
    assert f'camfleet_archiver_backlog_entries{{camera="{camera}"}} 200.0' in text

    def event_reasons() -> list[str]:
        listed = kube.kubectl(
            "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}", check=False
        )
        return str(listed.stdout).split()

    deadline = time.monotonic() + 20
    while "ArchiveBehind" not in event_reasons():
        assert time.monotonic() < deadline, event_reasons()
        await asyncio.sleep(0.3)
