"""What audio and snapshots cost an ingest: CPU per camera, side by side in one run.

Real servers from the test bed (GStreamer RTSP camera, livekit-server), real `camfleet-ingest`
processes, all running at the same time so that every variant sees the same machine load:

    .venv/bin/python benchmarks/audio_snapshot.py --per-variant 2 --seconds 20

audio: `--per-variant` ingests of each of: the `h264-aac` mount with audio off (the baseline:
the same RTSP session, audio not demuxed), and audio auto from `h264-aac`, `h264-pcma`,
`h264-opus` (decode, resample to 48 kHz, the SDK's Opus encoder). No subscriber: the SFU
receives both tracks either way.

snapshot: two ingests of the textured 4 Mbit/s clip (`h264-4mbps`, real-camera-sized
keyframes), one never asked, one asked for `/snapshot.jpg` every `--snapshot-every` seconds
(2 s: the fastest the ingest decodes, `SNAPSHOT_MIN_INTERVAL_S`; the gateway asks at most every
5 s per camera). Prints each request's latency (a decode when the interval has passed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from ingest_media import INGEST, Worker, cpu_seconds, ingest_frames, rss_mb, servers, stop

from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.process import free_port

VARIANTS = {
    "audio off (h264-aac)": ("h264-aac", "off"),
    "audio AAC": ("h264-aac", "auto"),
    "audio G.711 A-law": ("h264-pcma", "auto"),
    "audio Opus": ("h264-opus", "auto"),
}


def start_ingest(
    server: LiveKitServer, url: str, work: Path, name: str, **settings: str
) -> tuple[Worker, int]:
    """An ingest as benchmarks/ingest_media.py starts one, with extra settings; and its port."""
    port = free_port()
    room = f"bench-{name}"
    token_file = work / f"{name}.token"
    token_file.write_text(server.token(room, f"ingest-bench-{name}", publish=True))
    env = dict(
        os.environ,
        CAMFLEET_INGEST_CAMERA=f"bench/{name}",
        CAMFLEET_INGEST_SOURCE_URL=url,
        CAMFLEET_INGEST_LIVEKIT_URL=server.url,
        CAMFLEET_INGEST_TOKEN_FILE=str(token_file),
        CAMFLEET_INGEST_ROOM=room,
        CAMFLEET_INGEST_HTTP_HOST="127.0.0.1",
        CAMFLEET_INGEST_HTTP_PORT=str(port),
        CAMFLEET_INGEST_TERMINATION_LOG=str(work / f"{name}.termination"),
        **{f"CAMFLEET_INGEST_{k}": v for k, v in settings.items()},
    )
    log = (work / f"{name}.log").open("ab")
    proc = subprocess.Popen([INGEST], env=env, stdout=log, stderr=log)
    return Worker(proc, lambda: ingest_frames(port)), port


def measure(
    groups: dict[str, list[Worker]], warmup: float, seconds: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 60
    for workers in groups.values():
        for w in workers:
            while True:
                try:
                    if w.frames() > 0:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or w.proc.poll() is not None:
                    raise RuntimeError(f"ingest {w.proc.args!r} never published")
                time.sleep(0.5)
    time.sleep(warmup)
    every = [w for ws in groups.values() for w in ws]
    cpu0 = {id(w): cpu_seconds(w.proc.pid) for w in every}
    frames0 = {id(w): w.frames() for w in every}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    out: dict[str, dict[str, Any]] = {}
    for name, workers in groups.items():
        cpu = [(cpu_seconds(w.proc.pid) - cpu0[id(w)]) / wall * 100 for w in workers]
        fps = [(w.frames() - frames0[id(w)]) / wall for w in workers]
        out[name] = {
            "cameras": len(workers),
            "cpu_pct_per_camera": round(statistics.mean(cpu), 2),
            "fps": round(statistics.mean(fps), 1),
            "rss_mb": round(statistics.mean(rss_mb(w.proc.pid) for w in workers), 1),
        }
    return out


def poll_snapshots(port: int, every: float, stop_at: float, latencies: list[float]) -> None:
    url = f"http://127.0.0.1:{port}/snapshot.jpg"
    while time.monotonic() < stop_at:
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                resp.read()
            latencies.append((time.perf_counter() - t) * 1000)
        except OSError:
            pass
        time.sleep(every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-variant", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--snapshot-every", type=float, default=2.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="audio-bench-") as tmp,
        servers(Path(tmp)) as (
            camera,
            server,
        ),
    ):
        work = Path(tmp)
        groups: dict[str, list[Worker]] = {}
        for index, (name, (clip, audio)) in enumerate(VARIANTS.items()):
            groups[name] = [
                start_ingest(server, camera.url(clip), work, f"a{index}-{i}", AUDIO=audio)[0]
                for i in range(args.per_variant)
            ]
        ports: dict[str, int] = {}
        for name in ("snapshot: never asked", "snapshot: asked"):
            worker, port = start_ingest(
                server, camera.url("h264-4mbps"), work, name.split()[-1], ADVERTISE_HOST="127.0.0.1"
            )
            groups[name] = [worker]
            ports[name] = port
        latencies: list[float] = []
        poller = threading.Thread(
            target=poll_snapshots,
            args=(ports["snapshot: asked"], args.snapshot_every, time.monotonic() + 1e9, latencies),
            daemon=True,
        )
        try:
            poller.start()
            results = measure(groups, 6, args.seconds)
        finally:
            for workers in groups.values():
                stop(workers)
        base = results["audio off (h264-aac)"]["cpu_pct_per_camera"]
        for name, row in results.items():
            if name.startswith("audio") and name != "audio off (h264-aac)":
                row["audio_cost_pct"] = round(row["cpu_pct_per_camera"] - base, 2)
            print(json.dumps({"variant": name, **row}), flush=True)
        never = results["snapshot: never asked"]["cpu_pct_per_camera"]
        asked = results["snapshot: asked"]["cpu_pct_per_camera"]
        print(
            json.dumps(
                {
                    "snapshot_every_s": args.snapshot_every,
                    "snapshot_cost_pct": round(asked - never, 2),
                    "request_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
                    "request_ms_max": round(max(latencies), 1) if latencies else None,
                    "requests": len(latencies),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
