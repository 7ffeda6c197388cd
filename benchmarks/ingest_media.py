"""Ingest benchmarks on loopback: CPU/RSS per camera, glass-to-glass latency, stamp accuracy.

Real servers from the test bed (GStreamer RTSP camera, livekit-server), real `camfleet-ingest`
processes, a real subscriber (Python LiveKit SDK).

    .venv/bin/python benchmarks/ingest_media.py cpu --cameras 1,5,20 --seconds 20
    .venv/bin/python benchmarks/ingest_media.py latency --seconds 60
    .venv/bin/python benchmarks/ingest_media.py cpu --cameras 1 --only passthrough --profile DIR

cpu: for N cameras, N passthrough ingests vs N FFmpeg processes doing the seed's old path
(RTSP → MPEG-1 in MPEG-TS for JSMpeg: `-f mpegts -codec:v mpeg1video`), each pulling the same
1080p25 H.264 High source; plus one transcode-mode ingest (H.265 source) for the record. CPU is
utime+stime from /proc over the window, as % of one core per camera, both per wall second and
normalised per handled frame to 25 fps (a starved process on a busy machine handles fewer frames
and would otherwise look cheaper); RSS is VmRSS per camera; `threads_pct` splits the first
process's CPU by thread name (libwebrtc, the SDK's tokio runtime, FFmpeg name theirs);
`--profile DIR` also samples the first ingest's Python threads with py-spy over the window
(`DIR/ingest-N.txt`, raw stacks for `benchmarks/profile_summary.py --categories ingest`).

latency: one passthrough ingest and one subscriber. A reference RTSP reader (PyAV, decoding)
records when each burnt-in frame code leaves the camera; the subscriber reads the code from each
decoded frame: glass-to-glass = subscriber decode time - reference arrival of the same code
(one clock, one machine; the reference's own decode, a few ms, is subtracted from the figure,
so it is slightly optimistic). Stamp accuracy: (frame_id - code) mod 200 must be the same for
every frame; any other value is a frame whose stamp belongs to another picture.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from livekit import rtc

from camfleet_dev import pattern
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.process import free_port
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.tools import ffmpeg, tools_dir

INGEST = str(Path(sys.executable).with_name("camfleet-ingest"))
PERIOD = 200


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> Counter[str]:
    """CPU clock ticks per thread name (libwebrtc and tokio name their threads)."""
    out: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[name] += int(fields[11]) + int(fields[12])
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Worker:
    """A measured process and a way to ask how many frames it has handled so far."""

    proc: subprocess.Popen[bytes]
    frames: Callable[[], int]


def ingest_frames(port: int) -> int:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("camfleet_ingest_frames_total"):
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def ffmpeg_frames(progress: Path) -> int:
    frames = [line for line in progress.read_text().splitlines() if line.startswith("frame=")]
    return int(frames[-1].split("=", 1)[1]) if frames else 0


def start_ingest(
    server: LiveKitServer, url: str, work: Path, name: str, code: Path | None = None
) -> Worker:
    """One passthrough ingest; ``code``: a tree of another revision's ``ingest/`` and ``src/``
    to run instead of this checkout's (`--revisions`)."""
    return start_ingest_on_port(server, url, work, name, code=code)[0]


def start_ingest_on_port(
    server: LiveKitServer,
    url: str,
    work: Path,
    name: str,
    *,
    code: Path | None = None,
    settings: dict[str, str] | None = None,
) -> tuple[Worker, int]:
    """`start_ingest` with extra ``CAMFLEET_INGEST_<KEY>`` settings (keys upper-cased); the
    worker and its HTTP port (metrics, /snapshot.jpg)."""
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
        **{f"CAMFLEET_INGEST_{k.upper()}": v for k, v in (settings or {}).items()},
    )
    if code is not None:  # ahead of the editable install on sys.path
        env["PYTHONPATH"] = f"{code / 'ingest'}:{code / 'src'}"
    log = (work / f"{name}.log").open("ab")
    proc = subprocess.Popen([INGEST], env=env, stdout=log, stderr=log)
    return Worker(proc, lambda: ingest_frames(port)), port


def jsmpeg_transcoder(url: str) -> list[str]:
    """The seed's path: FFmpeg decodes the camera and re-encodes MPEG-1 in MPEG-TS for JSMpeg's
    decoder (the output, `-`, is left to the caller's options)."""
    args = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url]
    return [*args, "-f", "mpegts", "-codec:v", "mpeg1video", "-b:v", "2000k", "-bf", "0", "-an"]


def start_jsmpeg(url: str, work: Path, name: str) -> Worker:
    progress = work / f"{name}.progress"
    progress.write_text("")
    args = [*jsmpeg_transcoder(url), "-progress", str(progress), "-stats_period", "0.5", "-"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Worker(proc, lambda: ffmpeg_frames(progress))


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample a process's Python threads (native frames included) for ``seconds``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), "--duration", str(int(seconds))),
            *("--rate", "100", "--native", "--threads", "--format", "raw"),
            *("--output", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(
    workers: list[Worker], warmup: float, seconds: float, profile: Path | None = None
) -> dict[str, object]:
    """CPU per camera, both per wall second and normalised to 25 handled frames per second.

    On a busy machine a starved process handles fewer frames and so looks cheaper per wall
    second; CPU per handled frame (x 25 fps) is the figure that does not flatter it.
    """
    # Many processes starting at once on a small machine take a while to serve their stats.
    deadline = time.monotonic() + 30 + 3 * len(workers)
    for w in workers:
        while True:
            try:
                w.frames()
                break
            except OSError:
                if time.monotonic() > deadline or w.proc.poll() is not None:
                    raise
                time.sleep(0.5)
    time.sleep(warmup)
    for w in workers:
        if w.proc.poll() is not None:
            raise RuntimeError(f"process {w.proc.args!r} exited with {w.proc.returncode}")
    cpu0 = [cpu_seconds(w.proc.pid) for w in workers]
    threads0 = thread_cpu_seconds(workers[0].proc.pid)
    frames0 = [w.frames() for w in workers]
    spy = py_spy(workers[0].proc.pid, seconds, profile) if profile else None
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    cpu = [cpu_seconds(w.proc.pid) - c for w, c in zip(workers, cpu0, strict=True)]
    threads = thread_cpu_seconds(workers[0].proc.pid)
    threads.subtract(threads0)
    frames = [w.frames() - f for w, f in zip(workers, frames0, strict=True)]
    rss = [rss_mb(w.proc.pid) for w in workers]
    if spy is not None:
        spy.wait(30)
    fps = statistics.mean(frames) / wall
    return {
        "fps_per_camera": round(fps, 1),
        "cpu_pct_per_camera": round(statistics.mean(cpu) / wall * 100, 2),
        "cpu_pct_at_25fps": round(sum(cpu) / max(1, sum(frames)) * 25 * 100, 2),
        "rss_mb_per_camera": round(statistics.mean(rss), 1),
        # Where the first process's CPU goes, % of one core by thread name.
        "threads_pct": {
            name: round(ticks / os.sysconf("SC_CLK_TCK") / wall * 100, 2)
            for name, ticks in threads.most_common()
            if ticks > 0
        },
    }


def stop(workers: list[Worker]) -> None:
    procs = [w.proc for w in workers]
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def servers(work: Path) -> Iterator[tuple[RtspCamera, LiveKitServer]]:
    with (
        RtspCamera(work / "rtsp", tools_dir() / "media") as camera,
        LiveKitServer(work / "livekit") as server,
    ):
        yield camera, server


def checkout(revision: str, into: Path) -> Path:
    """This repository's ``ingest/`` and ``src/`` at ``revision``, unpacked under ``into``."""
    tree = into / f"rev-{revision.replace('/', '_')}"
    tree.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(Path(__file__).parent.parent), "archive", revision, "ingest", "src"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def run_cpu(
    cameras: list[int],
    seconds: float,
    clip: str,
    only: set[str] | None = None,
    revisions: list[str] | None = None,
    profile: Path | None = None,
    repeats: int = 1,
) -> list[dict[str, object]]:
    """``revisions``: passthrough rows for each of these revisions (this checkout: "."),
    interleaved, so that a change is measured side by side with its parent in one run."""
    results: list[dict[str, object]] = []
    with (
        tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp,
        servers(Path(tmp)) as (
            camera,
            server,
        ),
    ):
        work = Path(tmp)
        trees = {r: None if r == "." else checkout(r, work) for r in revisions or ["."]}
        kinds = [k for k in ("passthrough", "jsmpeg") if only is None or k in only]
        for n in cameras:
            for rep in range(repeats):
                for kind in kinds:
                    for rev, tree in trees.items() if kind == "passthrough" else [(".", None)]:
                        label = "wt" if rev == "." else rev.replace("/", "-").replace("~", "-")
                        tag = f"{kind[0]}{n}-{rep}-{label.lower()}"
                        if kind == "passthrough":
                            procs = [
                                start_ingest(server, camera.url(clip), work, f"{tag}-{i}", tree)
                                for i in range(n)
                            ]
                        else:
                            procs = [
                                start_jsmpeg(camera.url(clip), work, f"{tag}-{i}") for i in range(n)
                            ]
                        spy = None
                        if profile is not None and kind == "passthrough":
                            spy = profile / f"ingest-{tag}.txt"
                        try:
                            row: dict[str, object] = {"path": kind, "cameras": n}
                            if revisions:
                                row["revision"] = rev
                            row["load_avg_1m"] = round(os.getloadavg()[0], 2)
                            row |= measure(procs, 6, seconds, spy)
                        finally:
                            stop(procs)
                        print(json.dumps(row), flush=True)
                        results.append(row)
        if only is not None and "transcode" not in only:
            return results
        procs = [start_ingest(server, camera.url("h265"), work, "transcode")]
        try:
            row = {"path": "transcode (h265→h264)", "cameras": 1}
            row |= measure(procs, 6, seconds)
        finally:
            stop(procs)
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


class Reference(threading.Thread):
    """A second RTSP session that decodes and notes when each frame code arrives."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.arrivals: dict[int, float] = {}
        self.running = True

    def run(self) -> None:
        with av.open(self.url, options={"rtsp_transport": "tcp", "fflags": "nobuffer"}) as c:
            stream = c.streams.video[0]
            for packet in c.demux(stream):
                arrived = time.time()
                for frame in packet.decode():
                    # Luma only: the code is black/white blocks.
                    y = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
                    self.arrivals[pattern.read_code(y)] = arrived
                if not self.running:
                    return


async def run_latency(seconds: float, clip: str = "h264") -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp,
        servers(Path(tmp)) as (
            camera,
            server,
        ),
    ):
        work = Path(tmp)
        ref = Reference(camera.url(clip))
        ref.start()
        ingest = start_ingest(server, camera.url(clip), work, "lat")
        room = rtc.Room()
        got: asyncio.Future[rtc.RemoteVideoTrack] = asyncio.get_running_loop().create_future()

        @room.on("track_subscribed")
        def _on(track: rtc.Track, *_: object) -> None:
            if isinstance(track, rtc.RemoteVideoTrack) and not got.done():
                got.set_result(track)

        g2g: list[float] = []
        stamp_lat: list[float] = []
        offsets: dict[int, int] = {}
        frames = 0
        try:
            await room.connect(server.url, server.token("bench-lat", "viewer"))
            track = await asyncio.wait_for(got, 30)
            stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
            warm_until = time.monotonic() + 3
            end = time.monotonic() + 3 + seconds
            async for event in stream:
                now = time.time()
                f = event.frame
                if f.width < 64 or event.metadata is None:
                    continue
                plane = f.get_plane(0)
                assert plane is not None
                y = np.frombuffer(plane, dtype=np.uint8)[: f.width * f.height]
                code = pattern.read_code(y.reshape(f.height, f.width))
                if time.monotonic() < warm_until:
                    continue
                frames += 1
                md = event.metadata
                off = (md.frame_id - code) % PERIOD
                offsets[off] = offsets.get(off, 0) + 1
                stamp_lat.append((now * 1e6 - md.user_timestamp) / 1000)
                sent = ref.arrivals.get(code)
                if sent is not None and 0 <= now - sent < 4:  # the code repeats every 8 s
                    g2g.append((now - sent) * 1000)
                if time.monotonic() > end:
                    break
            await stream.aclose()
        finally:
            ref.running = False
            await room.disconnect()
            stop([ingest])
    main_offset = max(offsets, key=lambda k: offsets[k]) if offsets else None
    mismatches = sum(v for k, v in offsets.items() if k != main_offset)

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 1) if values else float("nan")

    return {
        "frames": frames,
        "glass_to_glass_ms_p50": pct(g2g, 50),
        "glass_to_glass_ms_p99": pct(g2g, 99),
        "ingest_stamp_to_decoded_ms_p50": pct(stamp_lat, 50),
        "ingest_stamp_to_decoded_ms_p99": pct(stamp_lat, 99),
        "stamp_mismatches": mismatches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    cpu = sub.add_parser("cpu")
    cpu.add_argument("--cameras", default="1,5")
    cpu.add_argument("--seconds", type=float, default=20)
    cpu.add_argument(
        "--clip",
        default="h264-4mbps",
        help="camera stream: h264-4mbps (a real camera's bitrate) or h264 (flat, tiny)",
    )
    cpu.add_argument("--only", default="", help="passthrough,jsmpeg,transcode (default: all)")
    cpu.add_argument(
        "--revisions",
        default="",
        help="git revisions of the ingest to run side by side (this checkout: .), e.g. main,.",
    )
    cpu.add_argument("--repeats", type=int, default=1, help="rounds per camera count")
    cpu.add_argument("--profile", type=Path, help="a folder: py-spy stacks of the first ingest")
    lat = sub.add_parser("latency")
    lat.add_argument("--seconds", type=float, default=60)
    lat.add_argument("--clip", default="h264", help="camera stream: h264 (flat) or h264-4mbps")
    args = parser.parse_args()
    if args.what == "cpu":
        only = {k.strip() for k in args.only.split(",") if k.strip()} or None
        revisions = [r.strip() for r in args.revisions.split(",") if r.strip()] or None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        rows = run_cpu(
            [int(n) for n in args.cameras.split(",")],
            args.seconds,
            args.clip,
            only,
            revisions,
            args.profile,
            args.repeats,
        )
        print("\n| path | cameras | fps/camera | CPU %/camera | CPU % at 25 fps | RSS MB/camera |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            path = f"{r['path']} @ {r['revision']}" if "revision" in r else r["path"]
            print(
                f"| {path} | {r['cameras']} | {r['fps_per_camera']} "
                f"| {r['cpu_pct_per_camera']} | {r['cpu_pct_at_25fps']} "
                f"| {r['rss_mb_per_camera']} |"
            )
    else:
        print(json.dumps(asyncio.run(run_latency(args.seconds, args.clip))))


if __name__ == "__main__":
    main()
