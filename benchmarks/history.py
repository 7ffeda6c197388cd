"""Event history benchmarks: archive rate and CPU, archive lag, query latency, bytes per event.

    .venv/bin/python benchmarks/history.py                 # everything (several minutes)
    .venv/bin/python benchmarks/history.py --only rate,lag  # a subset: rate, lag, query

Real servers from the test bed (redis-server, PostgreSQL 15 with its default durability), the
archiver as its own process (`python -m camfleet_archiver`, CPU read from /proc), the gateway
in-process on a loopback port. Prints medians/percentiles; results go to docs/benchmarks.md.

- rate: N events already in 50 cameras' streams, then one archiver drains them; events/s and
  the archiver's CPU (cores) while it does.
- lag: 50 cameras x 10 events/s published for `--lag-seconds`; the archiver's own histogram of
  entry arrival in Redis → commit, p50/p99 interpolated within its buckets.
- query: 10 million rows generated in SQL (generate_series, 50 cameras x 10 events/s, two
  objects per event), then the gateway's /events (first page of one camera-hour, with and
  without a label) and /timeline (one camera-hour in 30 s buckets) at random hours; p50/p95.
  Also bytes per stored event (table + indexes / rows).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg
import redis

from camfleet.ai import Publisher
from camfleet_archiver.schema import create_partitions, migrate
from camfleet_dev.gateway import run_gateway
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.process import free_port, http_ok
from camfleet_dev.testbed.redis import RedisServer
from overlay_gateway.settings import Settings as GatewaySettings

CAMERAS = [f"bench/cam-{i:02d}" for i in range(50)]
TOKEN = "bench-token"


def event(camera: str, n: int) -> dict[str, object]:
    return {
        "camera": camera,
        "ts": int(time.time() * 1000),
        "frame": n,
        "source": "yolo11n@bench",
        "objects": [
            {"id": f"t{n % 7}", "label": "person", "score": 0.91, "box": [0.41, 0.22, 0.12, 0.51]},
            {"id": f"t{n % 5}", "label": "car", "score": 0.77, "box": [0.05, 0.60, 0.30, 0.25]},
        ],
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU of a process and its children (a postmaster and its backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid, rest = int(stat.parent.name), text.rsplit(")", 1)[1].split()
        if pid == root_pid or int(rest[1]) == root_pid:
            total += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return total


def postmaster_pid(pg: PostgresServer) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().split()[0])


def start_archiver(redis_url: str, dsn: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "CAMFLEET_ARCHIVER_REDIS_URL": redis_url,
        "CAMFLEET_ARCHIVER_POSTGRES_DSN": dsn,
        "CAMFLEET_ARCHIVER_HOST": "127.0.0.1",
        "CAMFLEET_ARCHIVER_PORT": str(port),
        "CAMFLEET_ARCHIVER_DISCOVER_SECONDS": "0.5",
        "CAMFLEET_ARCHIVER_LOG_LEVEL": "WARNING",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camfleet_archiver"], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 60
    while not http_ok(f"http://127.0.0.1:{port}/healthz"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"archiver did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        try:
            (n,) = conn.execute("SELECT count(*) FROM events").fetchone()  # type: ignore[misc]
        except psycopg.errors.UndefinedTable:
            return 0
    return int(n)


def bench_rate(redis_url: str, pg: PostgresServer, work: Path, total: int) -> None:
    dsn = pg.create_database("bench_rate")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    per_camera = total // len(CAMERAS)
    with Publisher(redis_url, retention=per_camera + 1000) as pub:
        for n in range(per_camera):
            pub.publish_many([event(c, n) for c in CAMERAS])
    migrate(dsn)  # not part of the measurement
    proc, port = start_archiver(redis_url, dsn, work / "archiver-rate.log")
    postmaster = postmaster_pid(pg)
    try:
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        pg0 = tree_cpu_seconds(postmaster)
        # Progress from the archiver's own counter: polling count(*) would load PostgreSQL.
        while archived(port) < per_camera * len(CAMERAS):
            time.sleep(0.1)
        elapsed, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
        pg_cpu = tree_cpu_seconds(postmaster) - pg0
    finally:
        stop(proc)
    done = rows(dsn)
    print(
        f"rate: {done} events in {elapsed:.1f} s = {done / elapsed:,.0f} events/s; "
        f"archiver CPU {cpu:.1f} s = {cpu / elapsed:.2f} cores "
        f"({done / cpu:,.0f} events per CPU-second); PostgreSQL CPU {pg_cpu:.1f} s = "
        f"{pg_cpu / elapsed:.2f} cores ({pg_cpu / done * 1e6:.0f} µs per event, archiver "
        f"{cpu / done * 1e6:.0f} µs)",
        flush=True,
    )


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation within Prometheus histogram buckets (upper bound, cumulative)."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            share = (rank - below) / (count - below) if count > below else 0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


def bench_lag(redis_url: str, pg: PostgresServer, work: Path, seconds: float) -> None:
    dsn = pg.create_database("bench_lag")
    redis.Redis.from_url(redis_url).flushdb()
    migrate(dsn)
    with Publisher(redis_url) as pub:  # create the 50 streams so discovery is not measured
        pub.publish_many([event(c, 0) for c in CAMERAS])
    proc, port = start_archiver(redis_url, dsn, work / "archiver-lag.log")
    try:
        time.sleep(1.5)
        with urllib_get(port) as first:
            base = _lag_buckets(first)
        cpu0 = cpu_seconds(proc.pid)
        sent = 0
        with Publisher(redis_url) as pub:
            start = time.monotonic()
            tick = 0
            while time.monotonic() - start < seconds:
                tick += 1
                pub.publish_many([event(c, tick) for c in CAMERAS])  # one per camera per tick
                sent += len(CAMERAS)
                next_at = start + tick / 10
                time.sleep(max(0.0, next_at - time.monotonic()))
        time.sleep(2)
        cpu = cpu_seconds(proc.pid) - cpu0
        with urllib_get(port) as last:
            after = _lag_buckets(last)
    finally:
        stop(proc)
    buckets = [(b, after[b] - base.get(b, 0)) for b in sorted(after)]
    p50, p99 = _quantile(buckets, 0.5), _quantile(buckets, 0.99)
    print(
        f"lag: {sent} events at {len(CAMERAS)} cameras x 10/s for {seconds:.0f} s: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (interpolated in the histogram's "
        f"buckets); archiver CPU {cpu / (seconds + 2):.2f} cores",
        flush=True,
    )


def archived(port: int) -> float:
    with urllib_get(port) as text:
        match = re.search(r"^camfleet_archiver_events_archived_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


class urllib_get:
    def __init__(self, port: int) -> None:
        import urllib.request

        self.resp = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)

    def __enter__(self) -> str:
        return str(self.resp.read().decode())

    def __exit__(self, *exc: object) -> None:
        self.resp.close()


def _lag_buckets(text: str) -> dict[float, float]:
    found = {}
    for match in re.finditer(
        r'^camfleet_archiver_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M
    ):
        found[float(match.group(1))] = float(match.group(2))
    return found


GENERATE = """
INSERT INTO events (camera, ts, entry_ms, entry_seq, frame, source, labels, objects)
SELECT
    'bench/cam-' || lpad(c::text, 2, '0'),
    %(start)s::timestamptz + (i * interval '100 milliseconds'),
    (extract(epoch FROM %(start)s::timestamptz) * 1000)::bigint + i * 100 + 20,
    c,
    i,
    'yolo11n@bench',
    CASE WHEN i %% 10 = 0 THEN ARRAY['car', 'person'] WHEN i %% 97 = 0 THEN ARRAY['dog']
         ELSE ARRAY['person'] END,
    jsonb_build_array(
        jsonb_build_object('id', 't' || (i %% 7), 'label', 'person', 'score', 0.91,
                           'box', jsonb_build_array(0.41, 0.22, 0.12, 0.51)),
        jsonb_build_object('id', 't' || (i %% 5),
                           'label', CASE WHEN i %% 10 = 0 THEN 'car' ELSE 'person' END,
                           'score', 0.77, 'box', jsonb_build_array(0.05, 0.6, 0.3, 0.25)))
FROM generate_series(0, %(cameras)s - 1) AS c, generate_series(%(lo)s, %(hi)s - 1) AS i
"""


async def bench_query(redis_url: str, pg: PostgresServer, total: int, requests: int) -> None:
    dsn = pg.create_database("bench_query")
    migrate(dsn, "0001")  # the events first; migration 0002 then counts them into the rollup
    per_camera = total // len(CAMERAS)  # events at 10/s: 200,000 = 5.6 hours per camera
    start = datetime(2026, 11, 20, tzinfo=UTC)
    hours = per_camera / 36_000
    t0 = time.monotonic()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        days = {(start + timedelta(hours=h)).date() for h in range(int(hours) + 2)}
        await create_partitions(conn, days, counts=False)
        step = 20_000
        for lo in range(0, per_camera, step):
            await conn.execute(
                GENERATE,
                {
                    "start": start,
                    "cameras": len(CAMERAS),
                    "lo": lo,
                    "hi": min(per_camera, lo + step),
                },
            )
        t1 = time.monotonic()
        await asyncio.to_thread(migrate, dsn)
        rollup_s = time.monotonic() - t1
        await conn.execute("VACUUM ANALYZE events")
        await conn.execute("VACUUM ANALYZE event_counts")
        (count,) = await (await conn.execute("SELECT count(*) FROM events")).fetchone()  # type: ignore[misc]
        (size, heap) = await (
            await conn.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)), sum(pg_relation_size(inhrelid)) "
                "FROM pg_inherits WHERE inhparent = 'events'::regclass"
            )
        ).fetchone()  # type: ignore[misc]
    print(
        f"query: migration 0002 counted them into the rollup in {rollup_s:.0f} s",
        flush=True,
    )
    print(
        f"query: generated {count:,} rows in {time.monotonic() - t0:.0f} s; "
        f"{size / count:.0f} bytes per stored event with indexes ({heap / count:.0f} heap only)",
        flush=True,
    )
    settings = GatewaySettings(
        redis_url=redis_url,
        auth_modes=["static"],
        static_token=TOKEN,
        kube_enabled=False,
        postgres_dsn=dsn,
    )
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with run_gateway(settings) as gw, aiohttp.ClientSession() as session:
        kinds = {
            "events (first page of 100, one camera-hour)": ("events", {}),
            "events label=dog (one camera-hour)": ("events", {"label": "dog"}),
            "timeline (one camera-hour, 30 s buckets, from a whole 10 s: rollup)": (
                "timeline",
                {"bucket": "30"},
            ),
            "timeline (the same, from any millisecond: counted from the events)": (
                "timeline",
                {"bucket": "30", "unaligned": "1"},
            ),
        }
        for name, (path, extra) in kinds.items():
            times = []
            extra = dict(extra)
            unaligned = extra.pop("unaligned", None) is not None
            for _ in range(requests):
                camera = rng.choice(CAMERAS)
                h0 = start + timedelta(seconds=rng.uniform(0, (hours - 1) * 3600))
                if path == "timeline" and not unaligned:
                    # From a whole 10 s, as the viewer asks.
                    h0 = h0.replace(second=h0.second // 10 * 10, microsecond=0)
                params = {
                    "from": str(int(h0.timestamp() * 1000)),
                    "to": str(int((h0 + timedelta(hours=1)).timestamp() * 1000)),
                    **extra,
                }
                t = time.perf_counter()
                async with session.get(
                    f"{gw.url}/api/cameras/{camera}/{path}", params=params, headers=headers
                ) as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                times.append(time.perf_counter() - t)
            times.sort()
            p50 = statistics.median(times) * 1000
            p95 = times[int(0.95 * len(times)) - 1] * 1000
            print(
                f"query: {name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({requests} requests)",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="rate,lag,query")
    parser.add_argument("--rate-events", type=int, default=200_000)
    parser.add_argument("--lag-seconds", type=float, default=30)
    parser.add_argument("--query-rows", type=int, default=10_000_000)
    parser.add_argument("--query-requests", type=int, default=200)
    args = parser.parse_args()
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="camfleet-bench-history-"))
    print(f"logs in {work}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    with RedisServer(work / "redis") as rs, PostgresServer(work / "pg", durable=True) as pg:
        if "rate" in only:
            bench_rate(rs.url, pg, work, args.rate_events)
        if "lag" in only:
            bench_lag(rs.url, pg, work, args.lag_seconds)
        if "query" in only:
            asyncio.run(bench_query(rs.url, pg, args.query_rows, args.query_requests))
    print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
