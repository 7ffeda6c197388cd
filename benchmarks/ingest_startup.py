"""Time from a fresh publication to a subscriber's first frame (the on-demand start-up).

Starts livekit-server and the RTSP test camera, then, per case, a fresh `camfleet-ingest` and a
Python SDK subscriber: either waiting in the room before the ingest starts ("waiting") or joining
once the ingest logs "publishing" plus a delay ("late+N"). Prints each case's timeline (seconds
since the case started). With `--debug-livekit`, livekit-server logs at debug level and the script
prints when the server saw the track published, its first RTP packet and its first forwarded
keyframe, which is where the time goes.

    .venv/bin/python benchmarks/ingest_startup.py [--debug-livekit]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from livekit import rtc

from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.process import free_port
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.tools import tools_dir

INGEST = str(Path(sys.executable).with_name("camfleet-ingest"))
Event = tuple[str, str, float]


class DebugLiveKit(LiveKitServer):
    def config(self) -> dict[str, Any]:
        return {**super().config(), "logging": {"json": True, "level": "debug"}}


async def subscribe(
    server: LiveKitServer, room: str, t0: float, label: str, events: list[Event]
) -> None:
    lk = rtc.Room()
    first = asyncio.Event()
    readers: list[asyncio.Task[None]] = []

    async def read(track: rtc.Track) -> None:
        async for _ in rtc.VideoStream(track):
            events.append((label, "first frame", time.monotonic() - t0))
            first.set()
            return

    @lk.on("track_subscribed")
    def _subscribed(track: rtc.Track, *_: object) -> None:
        events.append((label, "track subscribed", time.monotonic() - t0))
        readers.append(asyncio.create_task(read(track)))

    await lk.connect(server.url, server.token(room, f"viewer-{label}"))
    events.append((label, "joined", time.monotonic() - t0))
    try:
        await asyncio.wait_for(first.wait(), 30)
    finally:
        for task in readers:
            task.cancel()
        await lk.disconnect()


async def run_case(
    server: LiveKitServer, camera: RtspCamera, work: Path, delay: float | None
) -> list[Event]:
    room = f"startup-{secrets.token_hex(3)}"
    token = work / f"{room}.token"
    token.write_text(server.token(room, f"ingest-{room}", publish=True))
    log_path = work / f"{room}.log"
    env = {
        **os.environ,
        "CAMFLEET_INGEST_SOURCE_URL": camera.url("h264"),
        "CAMFLEET_INGEST_LIVEKIT_URL": server.url,
        "CAMFLEET_INGEST_TOKEN_FILE": str(token),
        "CAMFLEET_INGEST_ROOM": room,
        "CAMFLEET_INGEST_CAMERA": f"bench/{room}",
        "CAMFLEET_INGEST_HTTP_HOST": "127.0.0.1",
        "CAMFLEET_INGEST_HTTP_PORT": str(free_port()),
        "CAMFLEET_INGEST_TERMINATION_LOG": str(work / f"{room}.termination"),
    }
    events: list[Event] = []
    t0 = time.monotonic()
    viewer: asyncio.Task[None] | None = None
    if delay is None:
        viewer = asyncio.create_task(subscribe(server, room, t0, "waiting", events))
        await asyncio.sleep(1.0)
    with log_path.open("wb") as log:
        # A plain Popen on purpose: the ingest is started and stopped once per case.
        ingest = subprocess.Popen(  # noqa: ASYNC220
            [INGEST], env=env, stdout=log, stderr=log
        )
        events.append(("ingest", "started", time.monotonic() - t0))
        try:
            if delay is not None:
                while b'"publishing"' not in log_path.read_bytes():  # noqa: ASYNC110 - polls a file
                    await asyncio.sleep(0.05)
                events.append(("ingest", "publishing", time.monotonic() - t0))
                await asyncio.sleep(delay)
                viewer = asyncio.create_task(subscribe(server, room, t0, f"late+{delay}", events))
            assert viewer is not None
            await viewer
        finally:
            ingest.terminate()
            ingest.wait(10)
    return sorted(events, key=lambda e: e[2])


def server_timeline(server: LiveKitServer) -> None:
    assert server.proc is not None
    marks = ("mediaTrack published", "rtp receiver stream start", "forwarded key frame")
    for line in server.proc.log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if any(m in row.get("msg", "") for m in marks):
            print(f"  livekit {row['ts']:.3f} {row['msg']} ({row.get('room', '')})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debug-livekit", action="store_true")
    parser.add_argument("--delays", default="waiting,0,3", help="waiting and/or seconds")
    args = parser.parse_args()
    server_cls = DebugLiveKit if args.debug_livekit else LiveKitServer
    with tempfile.TemporaryDirectory(prefix="ingest-startup-") as tmp:
        work = Path(tmp)
        with (
            server_cls(work / "livekit") as server,
            RtspCamera(work / "rtsp", tools_dir() / "media") as camera,
        ):
            for item in args.delays.split(","):
                delay = None if item == "waiting" else float(item)
                events = await run_case(server, camera, work, delay)
                print(f"case {item}:")
                for who, what, at in events:
                    print(f"  {at:6.2f}s {who}: {what}")
            if args.debug_livekit:
                server_timeline(server)


if __name__ == "__main__":
    asyncio.run(main())
