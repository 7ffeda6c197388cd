"""Recording from the ingest's own pull: real ingest, real RTSP camera, real S3-compatible store
(versitygw), real PostgreSQL index, real livekit-server.

Segments must start on keyframes and join without holes; every recorded frame's media time is
the capture stamp the live frame carried, so the frame a viewer (or an AI worker) saw with stamp
T is, picture for picture, the recorded frame at T. A store outage must not touch the live path,
must leave an indexed gap, and must heal by itself; a killed ingest must never leave a row that
names a broken object.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import obstore
import psycopg
import pytest
import pytest_asyncio
from livekit import api
from obstore.store import S3Store
from test_ingest_media import CODE_PERIOD, Ingest, Subscriber, running_ingest

from camfleet_archiver.schema import migrate
from camfleet_dev import pattern
from camfleet_dev.clip import remux_clip
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.s3 import S3Server
from camfleet_dev.testbed.tools import ffmpeg

SEGMENT_S = 2  # the test clip's GOP: one segment per GOP, so 12 s make ~6 segments
FRAME_US = 40_000


@dataclass
class Row:
    start_us: int
    end_us: int
    first_frame: int
    frames: int
    keyframes_us: list[int]
    size: int
    key: str


@dataclass
class Recorded:
    """One decoded frame of a stored segment."""

    stamp_us: int
    code: int
    keyframe: bool


def us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


@dataclass
class Bed:
    s3: S3Server
    store: S3Store
    bucket: str
    dsn: str
    livekit: LiveKitServer
    camera: RtspCamera
    tmp_path: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "recording_mode": "continuous",
            "recording_store_url": f"s3://{self.bucket}/site",
            "recording_s3_endpoint": self.s3.endpoint,
            "recording_s3_region": self.s3.region,
            "recording_s3_access_key_id": self.s3.access_key_id,
            "recording_s3_secret_access_key": self.s3.secret_access_key,
            "recording_index_dsn": self.dsn,
            "recording_segment_seconds": str(SEGMENT_S),
            "recording_store_timeout_s": "2",
            "recording_retry_cap_s": "1",
            **extra,
        }

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def segments(self, camera: str) -> list[Row]:
        rows = await self.query(
            "SELECT start_ts, end_ts, first_frame, frames, keyframes_us, size, object_key"
            " FROM recording_segments WHERE camera = %s ORDER BY start_ts",
            camera,
        )
        return [Row(us(a), us(b), c, d, list(e), f, g) for a, b, c, d, e, f, g in rows]

    async def gaps(self, camera: str) -> list[tuple[int, int, str]]:
        rows = await self.query(
            "SELECT start_ts, end_ts, reason FROM recording_gaps WHERE camera = %s"
            " ORDER BY start_ts",
            camera,
        )
        return [(us(a), us(b), r) for a, b, r in rows]

    async def wait_segments(self, camera: str, count: int, within: float) -> list[Row]:
        start = time.monotonic()
        while time.monotonic() - start < within:
            rows = await self.segments(camera)
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.25)
        pytest.fail(f"{len(await self.segments(camera))}/{count} segments indexed in {within}s")

    async def wait_gaps(self, camera: str, count: int, within: float) -> list[tuple[int, int, str]]:
        start = time.monotonic()
        while time.monotonic() - start < within:
            gaps = await self.gaps(camera)
            if len(gaps) >= count:
                return gaps
            await asyncio.sleep(0.25)
        pytest.fail(f"{len(await self.gaps(camera))}/{count} gaps indexed in {within}s")

    async def fetch(self, key: str) -> bytes:
        result = await obstore.get_async(self.store, key)
        return bytes(await result.bytes_async())


@pytest_asyncio.fixture
async def bed(
    s3_server: S3Server,
    postgres: PostgresServer,
    livekit_server: LiveKitServer,
    rtsp_camera: RtspCamera,
    tmp_path: Path,
) -> AsyncIterator[Bed]:
    bucket = s3_server.create_bucket(f"rec-{secrets.token_hex(3)}")
    dsn = postgres.create_database(f"t_{secrets.token_hex(4)}")
    await asyncio.to_thread(migrate, dsn)
    store = S3Store(
        bucket,
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    yield Bed(s3_server, store, bucket, dsn, livekit_server, rtsp_camera, tmp_path)


def decode(data: bytes) -> list[Recorded]:
    """Decode a stored segment; each frame's media time (µs) and its burnt-in frame code."""
    out: list[Recorded] = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        assert stream.time_base.denominator == 1_000_000
        for packet in container.demux(stream):
            for frame in packet.decode():
                plane = frame.planes[0]
                luma = np.frombuffer(bytes(plane), np.uint8).reshape(-1, plane.line_size)
                code = pattern.read_code(luma[: frame.height, : frame.width])
                assert frame.pts is not None
                out.append(Recorded(frame.pts, code, bool(frame.key_frame)))
    return out


async def check_segments(bed: Bed, rows: list[Row]) -> list[Recorded]:
    """Every indexed segment is a whole object that starts on a keyframe and its decoded frames
    carry the index's stamps; through segments that join, the burnt-in code advances by one
    per recorded frame (none lost, none repeated) and follows the stamps' clock."""
    frames: list[Recorded] = []
    run: list[Recorded] = []
    for i, row in enumerate(rows):
        data = await bed.fetch(row.key)
        assert len(data) == row.size, f"{row.key}: object and index disagree on its size"
        decoded = decode(data)
        assert len(decoded) == row.frames
        assert decoded[0].keyframe
        assert decoded[0].stamp_us == row.start_us
        assert [f.stamp_us - row.start_us for f in decoded if f.keyframe] == row.keyframes_us
        assert row.start_us < decoded[-1].stamp_us < row.end_us
        if i and rows[i - 1].end_us != row.start_us:
            check_run(run)
            run = []
        run += decoded
        frames += decoded
    check_run(run)
    return frames


def check_run(frames: list[Recorded]) -> None:
    if not frames:
        return
    first = frames[0]
    for n, (a, b) in enumerate(itertools.pairwise(frames), start=1):
        assert b.stamp_us > a.stamp_us
        assert (b.code - a.code) % CODE_PERIOD == 1, f"frame lost or repeated: {a} {b}"
        # Stamps are arrival times of frames 40 ms apart at the camera: on a loaded machine
        # the camera and the reader stall and catch up, but the stamps follow the picture's
        # clock (which frame carries which stamp is checked exactly against live viewing).
        drift = (b.stamp_us - first.stamp_us) - n * FRAME_US
        assert abs(drift) < 2_000_000, f"stamps drift {drift / 1e3:.0f} ms from the picture"


async def ingest_attributes(server: LiveKitServer, room: str, identity: str) -> dict[str, str]:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        got = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return next((dict(p.attributes) for p in got.participants if p.identity == identity), {})


async def wait_attribute(ingest: Ingest, server: LiveKitServer, value: str, within: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < within:
        got = await ingest_attributes(server, ingest.room, ingest.identity)
        if got.get("recording") == value:
            return
        await asyncio.sleep(0.25)
    pytest.fail(f"recording attribute never became {value!r}: {got}")


def frames_published(ingest: Ingest) -> float:
    for line in ingest.metrics().splitlines():
        if line.startswith("camfleet_ingest_frames_total{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_continuous_recording_keeps_every_live_frame_and_its_stamp(bed: Bed) -> None:
    async with running_ingest(
        bed.livekit, bed.tmp_path, bed.camera.url("h264"), **bed.env()
    ) as ingest:
        await ingest.wait_health(200, within=20)
        async with Subscriber(bed.livekit, ingest.room, ingest.identity) as viewer:
            live = await viewer.wait_frames(50, within=15)
        await wait_attribute(ingest, bed.livekit, "on", within=10)
        await bed.wait_segments(ingest.camera, 6, within=30)
        assert ingest.proc is not None
        ingest.proc.send_signal(signal.SIGTERM)  # the open segment is flushed on the way out
        assert await ingest.wait_exit(within=12) == 0
    rows = await bed.segments(ingest.camera)
    # Segments join exactly: each ends where the next one starts.
    for a, b in itertools.pairwise(rows):
        assert b.start_us == a.end_us, "a hole between consecutive segments"
    assert await bed.gaps(ingest.camera) == []
    frames = await check_segments(bed, rows)
    assert len(frames) >= 5 * SEGMENT_S * 25
    # The frame a viewer saw with stamp T is the recorded frame at T: same picture.
    recorded = {f.stamp_us: f.code for f in frames}
    matched = [f for f in live if f.user_timestamp in recorded]
    assert len(matched) >= 45, f"only {len(matched)}/50 live stamps found in the recording"
    assert all(recorded[f.user_timestamp] == f.code for f in matched)
    assert rows[0].key.startswith(f"site/{ingest.camera}/")

    # Clip export of 10 s from a keyframe: exactly those frames, remuxed, playable by FFmpeg.
    start = rows[0].start_us
    end = start + 10_000_000
    blobs = [await bed.fetch(r.key) for r in rows if r.start_us < end]
    clip = bed.tmp_path / "clip.mp4"
    clip.write_bytes(remux_clip(blobs, start, end))
    expected = [f.code for f in frames if start <= f.stamp_us < end]
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        codes = []
        for frame in container.decode(stream):
            plane = frame.planes[0]
            luma = np.frombuffer(bytes(plane), np.uint8).reshape(-1, plane.line_size)
            codes.append(pattern.read_code(luma[: frame.height, : frame.width]))
    assert codes == expected  # exactly the recorded frames stamped inside the range
    # 10 s at 25 fps; stamps are arrival times, so a frame at either edge may fall in or out.
    assert 248 <= len(codes) <= 252
    played = await asyncio.to_thread(
        subprocess.run,
        # Capture stamps are arrival times (a variable frame rate): decode on their own clock.
        [ffmpeg(), "-v", "error", "-i", str(clip), "-enc_time_base:v", "demux", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert played.returncode == 0
    assert played.stderr == ""


async def test_store_outage_and_a_killed_ingest_leave_indexed_gaps_and_heal(bed: Bed) -> None:
    # A buffer of about two of the test clip's (flat, small) segments: a 20 s outage overflows
    # it after ~4 s and the rest becomes a gap.
    env = bed.env(recording_buffer_bytes=str(32 * 1024))
    async with running_ingest(bed.livekit, bed.tmp_path, bed.camera.url("h264"), **env) as ingest:
        await ingest.wait_health(200, within=20)
        await bed.wait_segments(ingest.camera, 1, within=20)
        # The worst kind of outage for a client: the store hangs (accepts, never answers).
        bed.s3.freeze()
        stopped_us = time.time_ns() // 1000
        try:
            before, t0 = frames_published(ingest), time.monotonic()
            await wait_attribute(ingest, bed.livekit, "gap", within=10)
            while time.monotonic() - t0 < 20:
                assert await ingest.wait_health(200, within=2) < 2, "live frames stopped"
                await asyncio.sleep(1)
            rate = (frames_published(ingest) - before) / (time.monotonic() - t0)
            assert rate > 22, f"live path slowed to {rate:.1f} fps during the store outage"
            attributes = await ingest_attributes(bed.livekit, ingest.room, ingest.identity)
            assert attributes["recordingReason"] == "StoreUnavailable"
        finally:
            bed.s3.thaw()
            back_us = time.time_ns() // 1000
        await wait_attribute(ingest, bed.livekit, "on", within=15)
        outage = await bed.wait_gaps(ingest.camera, 1, within=15)
        start, end, reason = outage[0]
        assert reason == "StoreUnavailable"
        # What the buffer held was kept; the gap is the rest of the outage, no more.
        assert stopped_us - SEGMENT_S * 1_000_000 <= start < end <= back_us + 3 * SEGMENT_S * 1e6
        assert end - start > 4_000_000, "a 20 s outage with a ~4 s buffer leaves a real gap"
        count = len(await bed.segments(ingest.camera))
        await bed.wait_segments(ingest.camera, count + 1, within=15)  # recording resumed
        assert "camfleet_ingest_recording_dropped_seconds_total" in ingest.metrics()
        ingest.kill()  # SIGKILL: mid-segment, maybe mid-upload
    killed_at = time.time_ns() // 1000
    before_restart = await bed.segments(ingest.camera)
    ingest.start()  # the same camera again, as its Deployment would restart it
    try:
        await ingest.wait_health(200, within=20)
        await bed.wait_segments(ingest.camera, len(before_restart) + 2, within=20)
    finally:
        ingest.kill()
    rows = await bed.segments(ingest.camera)
    restarted = before_restart[-1].end_us
    # Within one RTSP session the picture follows the stamps (a new session restarts the clip).
    await check_segments(bed, [r for r in rows if outage[0][1] <= r.start_us < restarted])
    await check_segments(bed, [r for r in rows if r.start_us > restarted])
    gaps = await bed.gaps(ingest.camera)
    # The timeline is whole: consecutive segments join exactly or a gap row spans the hole.
    spans = {(g[0], g[1]) for g in gaps}
    for a, b in itertools.pairwise(rows):
        assert b.start_us == a.end_us or (a.end_us, b.start_us) in spans, (a, b, gaps)
    restart = [g for g in gaps if g[2] == "IngestRestart"]
    assert len(restart) == 1, gaps
    assert restart[0][0] == before_restart[-1].end_us
    assert restart[0][1] > killed_at - 5_000_000
