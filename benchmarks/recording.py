"""Recording's cost, side by side in one run: ingests recording vs not, same camera, same window.

Real servers from the test bed (GStreamer RTSP camera, livekit-server, versitygw, PostgreSQL),
real `camfleet-ingest` processes. For each pair, one ingest records continuously to S3 and one
does not; both pull the same 1080p25 H.264 High 4 Mbit/s clip at the same time and are measured
over the same window (CPU as utime+stime from /proc, per wall second and normalised to 25
handled frames per second; VmRSS at the end).

Bytes: every segment the recording ingest stored in the window is read back from the store;
its file size against the access-unit bytes it holds (its packets) is the container's overhead,
and the total per hour of capture time is the figure a capacity plan needs.

    .venv/bin/python benchmarks/recording.py --pairs 1 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

import av
import obstore
import psycopg
from ingest_media import Worker, measure, start_ingest_on_port, stop
from obstore.store import S3Store

from camfleet_archiver.schema import migrate
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.s3 import S3Server
from camfleet_dev.testbed.tools import tools_dir

CLIP = "h264-4mbps"


def start(
    server: LiveKitServer, url: str, work: Path, name: str, recording: dict[str, str]
) -> Worker:
    return start_ingest_on_port(server, url, work, name, settings=recording)[0]


def payload_bytes(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(p.size for p in container.demux(container.streams.video[0]) if p.size)


async def stored(
    dsn: str, store: S3Store, cameras: list[str], t0_us: int, t1_us: int
) -> dict[str, float]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT object_key, size, extract(epoch FROM end_ts - start_ts)"
            " FROM recording_segments WHERE camera = ANY(%s)"
            " AND start_ts >= to_timestamp(%s) AND end_ts <= to_timestamp(%s)",
            (cameras, t0_us / 1e6, t1_us / 1e6),
        )
        rows = await cur.fetchall()
    files = payload = 0
    seconds = 0.0
    for key, size, duration in rows:
        data = bytes(await (await obstore.get_async(store, key)).bytes_async())
        assert len(data) == size
        files += size
        payload += payload_bytes(data)
        seconds += float(duration)
    per_camera_seconds = seconds / max(1, len(cameras))
    return {
        "segments": len(rows),
        "recorded_seconds_per_camera": round(per_camera_seconds, 1),
        "source_mbps": round(payload * 8 / max(seconds, 1e-9) / 1e6, 3),
        "stored_mb_per_camera_hour": round(files / max(seconds, 1e-9) * 3600 / 1e6, 1),
        "container_overhead_pct": round((files / max(1, payload) - 1) * 100, 3),
    }


def run(pairs: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="recording-bench-") as tmp:
        work = Path(tmp)
        with (
            RtspCamera(work / "rtsp", tools_dir() / "media") as camera,
            LiveKitServer(work / "livekit") as server,
            S3Server(work / "s3") as s3,
            PostgresServer(work / "pg") as pg,
        ):
            bucket = s3.create_bucket("bench")
            dsn = pg.create_database(f"b_{secrets.token_hex(3)}")
            migrate(dsn)
            recording = {
                "recording_mode": "continuous",
                "recording_store_url": f"s3://{bucket}/bench",
                "recording_s3_endpoint": s3.endpoint,
                "recording_s3_region": s3.region,
                "recording_s3_access_key_id": s3.access_key_id,
                "recording_s3_secret_access_key": s3.secret_access_key,
                "recording_index_dsn": dsn,
            }
            url = camera.url(CLIP)
            on = [start(server, url, work, f"on{i}", recording) for i in range(pairs)]
            off = [start(server, url, work, f"off{i}", {}) for i in range(pairs)]
            workers = on + off
            try:
                t0_us = time.time_ns() // 1000
                both = measure_split(on, off, seconds)
                t1_us = time.time_ns() // 1000
            finally:
                stop(workers)
            store = S3Store(
                bucket,
                endpoint=s3.endpoint,
                region=s3.region,
                access_key_id=s3.access_key_id,
                secret_access_key=s3.secret_access_key,
                virtual_hosted_style_request=False,
                client_options={"allow_http": True},
            )
            names = [f"bench/on{i}" for i in range(pairs)]
            both["bytes"] = asyncio.run(stored(dsn, store, names, t0_us, t1_us))
            return both


def measure_split(on: list[Worker], off: list[Worker], seconds: float) -> dict[str, object]:
    """Both sets measured over one window (the second measure() runs on a thread)."""
    results: dict[str, dict[str, object]] = {}

    def side(name: str, workers: list[Worker]) -> None:
        results[name] = measure(workers, 6, seconds)

    thread = threading.Thread(target=side, args=("off", off))
    thread.start()
    side("on", on)
    thread.join()
    out: dict[str, object] = {"recording_on": results["on"], "recording_off": results["off"]}
    cpu_on = float(results["on"]["cpu_pct_at_25fps"])  # type: ignore[arg-type]
    cpu_off = float(results["off"]["cpu_pct_at_25fps"])  # type: ignore[arg-type]
    rss_on = float(results["on"]["rss_mb_per_camera"])  # type: ignore[arg-type]
    rss_off = float(results["off"]["rss_mb_per_camera"])  # type: ignore[arg-type]
    out["extra_cpu_pct_of_core_per_camera"] = round(cpu_on - cpu_off, 2)
    out["cpu_ratio_on_off"] = round(cpu_on / max(cpu_off, 1e-9), 3)
    out["extra_rss_mb_per_camera"] = round(rss_on - rss_off, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    load = os.getloadavg()
    result = run(args.pairs, args.seconds)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
