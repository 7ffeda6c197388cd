"""`camfleet-ingest` as a real process: the test bed's RTSP camera in, the real livekit-server out.

A real subscriber (the Python LiveKit SDK) decodes what arrives and reads the frame code burnt
into every camera frame, so "the stamp belongs to the frame" is checked picture by picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from livekit import api, rtc

from camfleet_dev import pattern
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.process import free_port
from camfleet_dev.testbed.rtsp import RtspCamera

INGEST = str(Path(sys.executable).with_name("camfleet-ingest"))
CODE_PERIOD = 200  # the test clip loops its frame code every 8 s


@dataclass
class Ingest:
    """One `camfleet-ingest` subprocess, configured only through its environment."""

    env: dict[str, str]
    workdir: Path
    camera: str
    room: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "ingest.log"

    @property
    def termination_log(self) -> Path:
        return self.workdir / "termination-log"

    @property
    def identity(self) -> str:
        return "ingest-" + self.camera.replace("/", "-")

    def start(self) -> None:
        env = dict(os.environ, **self.env)
        env |= {
            "CAMFLEET_INGEST_HTTP_HOST": "127.0.0.1",
            "CAMFLEET_INGEST_HTTP_PORT": str(self.port),
            "CAMFLEET_INGEST_TERMINATION_LOG": str(self.termination_log),
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [INGEST],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    async def wait_health(self, status: int, within: float) -> float:
        """Seconds until /healthz answers `status`; fails the test after `within` seconds."""
        start = time.monotonic()
        while time.monotonic() - start < within:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"ingest exited with {self.proc.returncode}:\n{self.log()}")
            if await asyncio.to_thread(self.healthz) == status:
                return time.monotonic() - start
            await asyncio.sleep(0.2)
        pytest.fail(f"/healthz never answered {status} in {within}s:\n{self.log()[-3000:]}")

    async def wait_exit(self, within: float) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, within)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@contextlib.asynccontextmanager
async def running_ingest(
    livekit_server: LiveKitServer,
    tmp_path: Path,
    source_url: str,
    token: str | None = None,
    camera: str | None = None,
    **env: str,
) -> AsyncIterator[Ingest]:
    camera = camera or f"t-{secrets.token_hex(3)}/cam"
    room = camera.replace("/", "-")
    ingest = Ingest({}, tmp_path, camera, room)
    token_file = tmp_path / "token"
    token_file.write_text(token or livekit_server.token(room, ingest.identity, publish=True))
    ingest.env = {
        "CAMFLEET_INGEST_CAMERA": camera,
        "CAMFLEET_INGEST_SOURCE_URL": source_url,
        "CAMFLEET_INGEST_LIVEKIT_URL": livekit_server.url,
        "CAMFLEET_INGEST_TOKEN_FILE": str(token_file),
        "CAMFLEET_INGEST_ROOM": room,
        **{f"CAMFLEET_INGEST_{k.upper()}": v for k, v in env.items()},
    }
    ingest.start()
    try:
        yield ingest
    finally:
        ingest.kill()


@dataclass
class Seen:
    code: int
    frame_id: int
    user_timestamp: int
    width: int
    height: int


class Subscriber:
    """A viewer in the room: decodes the ingest's track and records code + metadata per frame."""

    def __init__(self, server: LiveKitServer, room: str, publisher: str) -> None:
        self.server = server
        self.room_name = room
        self.publisher = publisher
        self.room = rtc.Room()
        self.frames: list[Seen] = []
        self.missing_metadata = 0
        self.attributes: dict[str, str] = {}
        self.track: asyncio.Future[rtc.RemoteVideoTrack] = asyncio.Future()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        @self.room.on("track_subscribed")
        def _on_track(
            track: rtc.Track, _: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
        ) -> None:
            if (
                isinstance(track, rtc.RemoteVideoTrack)
                and who.identity == self.publisher
                and not self.track.done()
            ):
                self.attributes = dict(who.attributes)
                self.track.set_result(track)

        identity = f"viewer-{secrets.token_hex(3)}"
        token = self.server.token(self.room_name, identity)
        await self.room.connect(self.server.url, token)
        self.task = asyncio.create_task(self._consume())
        return self

    async def _consume(self) -> None:
        track = await self.track
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
        try:
            async for event in stream:
                frame = event.frame
                if frame.width < 64 or frame.height < 64:
                    continue  # WebRTC's 2x2 placeholder before the first decoded keyframe
                luma = frame.get_plane(0)
                assert luma is not None
                y = np.frombuffer(luma, dtype=np.uint8)[: frame.width * frame.height]
                code = pattern.read_code(y.reshape(frame.height, frame.width))
                md = event.metadata
                if md is None or not md.frame_id:
                    self.missing_metadata += 1
                    continue
                self.frames.append(
                    Seen(code, md.frame_id, md.user_timestamp, frame.width, frame.height)
                )
        finally:
            await stream.aclose()

    async def wait_frames(self, count: int, within: float) -> list[Seen]:
        start, seen = time.monotonic(), len(self.frames)
        while len(self.frames) - seen < count:
            if time.monotonic() - start > within:
                pytest.fail(f"{len(self.frames) - seen}/{count} new frames in {within}s")
            await asyncio.sleep(0.1)
        return self.frames[seen:]

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.room.disconnect()


def assert_stamped(frames: list[Seen]) -> None:
    """Every frame has metadata; ids and stamps increase; each id belongs to its picture."""
    assert all((f.width, f.height) == (1920, 1080) for f in frames)
    # A fresh track may show the camera's latest IDR more than once (camfleet_ingest.warmup):
    # the same picture with the same stamp. Any other repeat, or a step back, is a fault.
    for a, b in itertools.pairwise(frames):
        if b.frame_id == a.frame_id:
            assert (b.code, b.user_timestamp) == (a.code, a.user_timestamp), "repeat differs"
        else:
            assert b.frame_id > a.frame_id, "frame_id must increase"
            assert b.user_timestamp > a.user_timestamp, "user_timestamp must increase"
    stamps = [f.user_timestamp for f in frames]
    now_us = time.time_ns() // 1000
    assert all(now_us - 60_000_000 < s <= now_us for s in stamps), "µs since the epoch"
    # The frame id counts camera frames, the burnt-in code too: their difference is constant
    # exactly when each stamp travelled with its own picture.
    offsets = {(f.frame_id - f.code) % CODE_PERIOD for f in frames}
    assert len(offsets) == 1, f"stamps do not match pictures: {sorted(offsets)[:10]}"
    assert len({f.code for f in frames}) > len(frames) // 2, "the picture must advance"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def participants(server: LiveKitServer, room: str) -> list[str]:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        got = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        return [p.identity for p in got.participants]


async def test_h264_passthrough_stamped_one_session_clean_exit(
    rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    async with running_ingest(livekit_server, tmp_path, rtsp_camera.url("h264")) as ingest:
        assert ingest.proc is not None
        start = time.monotonic()
        async with (
            Subscriber(livekit_server, ingest.room, ingest.identity) as viewer,
            Subscriber(livekit_server, ingest.room, ingest.identity) as second,
        ):
            await viewer.wait_frames(1, within=15)
            assert time.monotonic() - start < 15
            cpu_before, t_before = cpu_seconds(ingest.proc.pid), time.monotonic()
            frames = await viewer.wait_frames(50, within=10)
            cpu = (cpu_seconds(ingest.proc.pid) - cpu_before) / (time.monotonic() - t_before)
            await second.wait_frames(10, within=10)
            assert_stamped(frames)
            assert viewer.missing_metadata == 0
            assert viewer.attributes == {
                "mode": "passthrough",
                "codec": "h264",
                "resolution": "1920x1080",
                "fps": "25",
            }
            # Two viewers, one camera session: LiveKit fans out, the camera sees only us.
            assert rtsp_camera.sessions("h264") == 1
            assert await ingest.wait_health(200, within=2) < 2
            metrics = ingest.metrics()
            assert 'mode="passthrough"' in metrics
            # No encoder runs: decode + libx264 at 1080p25 costs ~0.5 core, passthrough ~0.05.
            assert cpu < 0.25, f"passthrough used {cpu:.0%} of a core"

            ingest.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            assert await ingest.wait_exit(within=10) == 0
            assert time.monotonic() - t0 < 5
        assert ingest.identity not in await participants(livekit_server, ingest.room)
        assert not ingest.termination_log.exists()
        for _ in range(20):  # the TEARDOWN reaches the camera's bookkeeping asynchronously
            if rtsp_camera.sessions("h264") == 0:
                break
            await asyncio.sleep(0.1)
        assert rtsp_camera.sessions("h264") == 0


@pytest.mark.parametrize("clip", ["h265", "h264-bframes"])
async def test_auto_transcodes_what_webrtc_cannot_carry(
    clip: str, rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    async with (
        running_ingest(livekit_server, tmp_path, rtsp_camera.url(clip), mode="auto") as ingest,
        Subscriber(livekit_server, ingest.room, ingest.identity) as viewer,
    ):
        await viewer.wait_frames(1, within=15)
        frames = await viewer.wait_frames(25, within=10)
        assert_stamped(frames)
        assert viewer.attributes["mode"] == "transcode"
        assert viewer.attributes["codec"] == ("h265" if clip == "h265" else "h264")
        assert 'mode="transcode"' in ingest.metrics()


async def test_wrong_password_fails_permanently_without_leaking_it(
    rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    password = f"wrong-{secrets.token_hex(6)}"
    async with running_ingest(
        livekit_server,
        tmp_path,
        rtsp_camera.secure_url("h264"),
        source_username=rtsp_camera.username,
        source_password=password,
    ) as ingest:
        assert await ingest.wait_exit(within=20) != 0
        message = ingest.termination_log.read_text()
        assert message.startswith("AuthFailed: ")
        assert ingest.camera in message
        assert password not in message
        assert password not in ingest.log()
        assert ingest.proc is not None
        assert password not in " ".join(map(str, ingest.proc.args))  # type: ignore[arg-type]


async def test_refused_token_fails_as_publish_rejected(
    rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    forged = api.AccessToken(livekit_server.api_key, secrets.token_hex(24))
    grants = api.VideoGrants(room_join=True, room="any", can_publish=True)
    token = forged.with_identity("ingest-x-y").with_grants(grants).to_jwt()
    async with running_ingest(
        livekit_server, tmp_path, rtsp_camera.url("h264"), token=token
    ) as ingest:
        # Retried with a re-read token file (rotation in progress?), then given up.
        assert await ingest.wait_exit(within=30) != 0
        assert ingest.termination_log.read_text().startswith("PublishRejected: ")
        assert ingest.log().count("reconnecting to livekit-server") >= 2
        assert token not in ingest.log()  # the SDK echoes refused tokens; the logs must not


async def test_camera_restart_recovers_by_itself(
    rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """Credentials from a Secret file, the camera goes away and comes back on its own."""
    password_file = tmp_path / "password"
    password_file.write_text(rtsp_camera.password + "\n")
    async with running_ingest(
        livekit_server,
        tmp_path,
        rtsp_camera.secure_url("h264"),
        source_username=rtsp_camera.username,
        source_password_file=str(password_file),
        healthy_window_s="1.5",  # notice the outage sooner: a shorter test
    ) as ingest:
        async with Subscriber(livekit_server, ingest.room, ingest.identity) as viewer:
            await viewer.wait_frames(10, within=15)
            assert ingest.proc is not None
            assert rtsp_camera.password not in cmdline(ingest.proc.pid)
            try:
                rtsp_camera.stop()
                await ingest.wait_health(503, within=10)
                assert 'reason="Unreachable"} 1.0' in ingest.metrics()
            finally:
                rtsp_camera.start()
            back = await ingest.wait_health(200, within=10)
            assert back < 10
            frames = await viewer.wait_frames(25, within=10)
            assert_stamped(frames)
            assert "camfleet_ingest_reconnects_total" in ingest.metrics()
        assert rtsp_camera.password not in ingest.log()


async def test_livekit_restart_republishes_by_itself(
    rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    async with running_ingest(livekit_server, tmp_path, rtsp_camera.url("h264")) as ingest:
        await ingest.wait_health(200, within=15)
        assert livekit_server.proc is not None
        try:
            livekit_server.proc.kill()  # as a crash would: no graceful drain of participants
            await ingest.wait_health(503, within=10)
        finally:
            livekit_server.start()
        await ingest.wait_health(200, within=40)
        async with Subscriber(livekit_server, ingest.room, ingest.identity) as viewer:
            frames = await viewer.wait_frames(25, within=15)
            assert_stamped(frames)
        assert rtsp_camera.sessions("h264") == 1  # the camera session survived the outage


async def test_rejoins_when_the_sdk_gives_up(
    rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """The SDK does not resume a removed participant: the supervisor's own reconnect does."""
    async with running_ingest(livekit_server, tmp_path, rtsp_camera.url("h264")) as ingest:
        await ingest.wait_health(200, within=15)
        async with api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room=ingest.room, identity=ingest.identity)
            )
        rejoined = (
            f'camfleet_ingest_reconnects_total{{camera="{ingest.camera}",side="livekit"}} 1.0'
        )
        for _ in range(100):
            if rejoined in ingest.metrics():
                break
            await asyncio.sleep(0.1)
        assert rejoined in ingest.metrics()
        async with Subscriber(livekit_server, ingest.room, ingest.identity) as viewer:
            assert_stamped(await viewer.wait_frames(25, within=15))


async def test_joins_the_room_and_says_why_while_the_camera_never_answered(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """A camera down from the start: the ingest is in the room, without video, with a reason."""
    dead = f"rtsp://127.0.0.1:{free_port()}/stream"  # refused: nothing listens there
    async with running_ingest(livekit_server, tmp_path, dead) as ingest:
        async with api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            attributes: dict[str, str] = {}
            tracks = -1
            for _ in range(150):
                got = await lk.room.list_participants(api.ListParticipantsRequest(room=ingest.room))
                me = [p for p in got.participants if p.identity == ingest.identity]
                if me:
                    attributes, tracks = dict(me[0].attributes), len(me[0].tracks)
                    if attributes.get("state") == "reconnecting":
                        break
                await asyncio.sleep(0.1)
        assert attributes == {"state": "reconnecting", "reason": "Unreachable"}
        assert tracks == 0
        assert ingest.proc is not None
        assert ingest.proc.poll() is None  # still retrying
