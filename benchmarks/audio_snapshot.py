"""What audio and snapshots cost an ingest: CPU per camera, side by side in one run.

Real servers from the test bed (GStreamer RTSP camera, livekit-server), real `camfleet-ingest`
processes, all running at the same time so that every variant sees the same machine load:

    .venv/bin/python benchmarks/audio_snapshot.py --per-variant 2 --seconds 20
    .venv/bin/python benchmarks/audio_snapshot.py --av 40
    .venv/bin/python benchmarks/audio_snapshot.py --jpeg

audio: `--per-variant` ingests of each of: the `h264-aac` mount with audio off (the baseline:
the same RTSP session, audio not demuxed), and audio auto from `h264-aac`, `h264-pcma`,
`h264-opus` (decode, resample to 48 kHz, the SDK's Opus encoder). No subscriber: the SFU
receives both tracks either way.

snapshot: two ingests of the textured 4 Mbit/s clip (`h264-4mbps`, real-camera-sized
keyframes), one never asked, one asked for `/snapshot.jpg` every `--snapshot-every` seconds
(2 s: the fastest the ingest decodes, `SNAPSHOT_MIN_INTERVAL_S`; the gateway asks at most every
5 s per camera). Prints each request's latency (a decode when the interval has passed).

jpeg: the ingest's snapshot code (`camfleet_ingest.snapshot.encode_jpeg`: decode the keyframe,
scale to 640 px, JPEG) in this process on each clip's first keyframe, CPU time (all threads)
per snapshot, median of 10: what one snapshot costs, load-independent.

av: one ingest of `h264-aac` (audio auto) and an SDK subscriber decoding both tracks; per beep
(every 8 s, on video frame `media.BEEP_FRAME`), the beep's onset minus that frame's arrival.
Both are timed on their own timelines (audio: 48 kHz sample positions; video: frame codes 40 ms
apart), anchored where a frame was read most promptly, so the subscriber's own lateness on a
busy machine does not count. Prints the load average with it: on a shared 2-core machine the
offset follows the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from ingest_media import Worker, cpu_seconds, rss_mb, servers, start_ingest_on_port, stop
from livekit import rtc

from camfleet_dev import pattern
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.media import BEEP_FRAME

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
    return start_ingest_on_port(server, url, work, name, settings=settings)


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


async def av_offsets(server: LiveKitServer, url: str, work: Path, seconds: float) -> list[float]:
    worker, _ = start_ingest(server, url, work, "av", AUDIO="auto")
    room = rtc.Room()
    video: asyncio.Future[rtc.RemoteVideoTrack] = asyncio.Future()
    audio: asyncio.Future[rtc.RemoteAudioTrack] = asyncio.Future()

    @room.on("track_subscribed")
    def _on(track: rtc.Track, *_: object) -> None:
        if isinstance(track, rtc.RemoteVideoTrack) and not video.done():
            video.set_result(track)
        if isinstance(track, rtc.RemoteAudioTrack) and not audio.done():
            audio.set_result(track)

    arrivals: list[tuple[float, int]] = []  # audio: (arrival, sample position)
    onsets: list[int] = []
    frames: list[tuple[float, int]] = []  # video: (arrival, frame code)

    async def listen() -> None:
        stream = rtc.AudioStream(await audio, sample_rate=48_000, num_channels=1)
        position, loud = 0, False
        async for event in stream:
            arrivals.append((time.monotonic(), position))
            pcm = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.int32)
            hot = np.flatnonzero(np.abs(pcm) > 3000)
            if hot.size and not loud:
                onsets.append(position + int(hot[0]))
            loud = bool(hot.size)
            position += pcm.size

    async def watch() -> None:
        stream = rtc.VideoStream(await video, format=rtc.VideoBufferType.I420)
        async for event in stream:
            f = event.frame
            if f.width < 64:
                continue
            plane = f.get_plane(0)
            assert plane is not None
            y = np.frombuffer(plane, dtype=np.uint8)[: f.width * f.height]
            frames.append((time.monotonic(), pattern.read_code(y.reshape(f.height, f.width))))

    await room.connect(server.url, server.token("bench-av", "av-viewer"))
    tasks = [asyncio.create_task(listen()), asyncio.create_task(watch())]
    try:
        await asyncio.sleep(seconds)
    finally:
        for task in tasks:
            task.cancel()
        await room.disconnect()
        stop([worker])
    if not arrivals or not frames:
        return []
    audio_anchor = min(t - pos / 48_000 for t, pos in arrivals)
    index, last, unwrapped = 0, frames[0][1], []
    for t, code in frames:
        step = (code - last) % 200
        index += step if step < 100 else 0
        last = code
        unwrapped.append((t, index, code))
    video_anchor = min(t - i * 0.04 for t, i, _ in unwrapped)
    shown = [video_anchor + i * 0.04 for _, i, code in unwrapped if code == BEEP_FRAME]
    offsets = []
    for onset in (audio_anchor + pos / 48_000 for pos in onsets):
        near = [t for t in shown if abs(t - onset) < 2]
        if near:
            offsets.append(round((onset - min(near, key=lambda t: abs(t - onset))) * 1000, 1))
    return offsets


def jpeg_cost() -> None:
    from camfleet_dev.testbed.tools import tools_dir
    from camfleet_ingest.snapshot import encode_jpeg

    for clip in ("h264", "h264-4mbps"):
        base = tools_dir() / "media" / clip
        meta = json.loads(Path(f"{base}.index.json").read_text())
        data = Path(f"{base}.h264").read_bytes()
        unit = next(u for u in meta["units"] if u["key"])
        idr = data[unit["offset"] : unit["offset"] + unit["size"]]
        cpu = []
        for _ in range(10):
            t = time.process_time()
            jpeg, _, _ = encode_jpeg(idr, "h264", 640)
            cpu.append((time.process_time() - t) * 1000)
        ms = statistics.median(cpu)
        row = {"clip": clip, "keyframe_bytes": len(idr), "jpeg_bytes": len(jpeg)}
        row |= {"cpu_ms_per_snapshot": round(ms, 1), "pct_core_1_per_2s": round(ms / 20, 2)}
        print(json.dumps(row | {"pct_core_1_per_5s": round(ms / 50, 2)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-variant", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--snapshot-every", type=float, default=2.0)
    parser.add_argument("--snapshot-clip", default="h264-4mbps")
    parser.add_argument("--av", type=float, default=0, help="seconds of A/V offset measurement")
    parser.add_argument("--jpeg", action="store_true", help="CPU per snapshot, in-process")
    args = parser.parse_args()
    if args.jpeg:
        jpeg_cost()
        return
    if args.av:
        with (
            tempfile.TemporaryDirectory(prefix="av-bench-") as tmp,
            servers(Path(tmp)) as (
                camera,
                server,
            ),
        ):
            load = os.getloadavg()[0]
            offsets = asyncio.run(av_offsets(server, camera.url("h264-aac"), Path(tmp), args.av))
            print(json.dumps({"av_offsets_ms": offsets, "load_before": round(load, 2)}))
        return
    with (
        tempfile.TemporaryDirectory(prefix="audio-bench-") as tmp,
        servers(Path(tmp)) as (
            camera,
            server,
        ),
    ):
        work = Path(tmp)
        groups: dict[str, list[Worker]] = {}
        for index, (name, (clip, audio)) in enumerate(VARIANTS.items() if args.per_variant else ()):
            groups[name] = [
                start_ingest(server, camera.url(clip), work, f"a{index}-{i}", AUDIO=audio)[0]
                for i in range(args.per_variant)
            ]
        ports: dict[str, int] = {}
        for name in ("snapshot: never asked", "snapshot: asked"):
            worker, port = start_ingest(
                server,
                camera.url(args.snapshot_clip),
                work,
                name.split()[-1],
                ADVERTISE_HOST="127.0.0.1",
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
        base = results.get("audio off (h264-aac)", {}).get("cpu_pct_per_camera", 0.0)
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
