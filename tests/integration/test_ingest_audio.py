"""The ingest's audio track and its snapshots, as a real process against the test bed's RTSP
camera (h264 with AAC, G.711 A-law/µ-law or Opus, from one media) and the real livekit-server.

A real SDK subscriber receives the audio frames (PCM, decoded from the SDK's Opus) and finds
the beep the camera puts on video frame ``media.BEEP_FRAME`` in each codec's audio. The A/V
offset itself is a benchmark (benchmarks/audio_snapshot.py --av): on this shared 2-core
machine it follows the load (+45 ms quiet, hundreds of ms under load 8), too much for a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from livekit import rtc
from test_ingest_media import Subscriber, cpu_seconds, running_ingest

from camfleet_dev import pattern
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.rtsp import RtspCamera

CODECS = {"aac": "aac", "pcma": "pcm_alaw", "pcmu": "pcm_mulaw", "opus": "opus"}
LOUD = 3000  # s16 amplitude: the beep is at half scale (16384), silence decodes to ~0


class Listener(Subscriber):
    """A subscriber that also takes the ingest's audio track: PCM frames and beep onsets."""

    def __init__(self, server: LiveKitServer, room: str, publisher: str) -> None:
        super().__init__(server, room, publisher)
        self.audio: asyncio.Future[rtc.RemoteAudioTrack] = asyncio.Future()
        self.audio_frames = 0
        # Beep onsets as sample positions in the received audio, and (arrival, position) per
        # frame (benchmarks/audio_snapshot.py times them; here their presence counts).
        self.onsets: list[int] = []
        self.arrivals: list[tuple[float, int]] = []
        self.samples = 0
        self._audio_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        @self.room.on("track_subscribed")
        def _on_audio(
            track: rtc.Track, _: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
        ) -> None:
            if isinstance(track, rtc.RemoteAudioTrack) and who.identity == self.publisher:
                self.attributes = dict(who.attributes)
                if not self.audio.done():
                    self.audio.set_result(track)

        await super().__aenter__()
        self._audio_task = asyncio.create_task(self._listen())
        return self

    async def _listen(self) -> None:
        track = await self.audio
        stream = rtc.AudioStream(track, sample_rate=48_000, num_channels=1)
        loud = False
        try:
            async for event in stream:
                self.audio_frames += 1
                self.arrivals.append((time.monotonic(), self.samples))
                pcm = np.frombuffer(event.frame.data, dtype=np.int16)
                hot = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)
                if hot.size and not loud:
                    self.onsets.append(self.samples + int(hot[0]))
                loud = bool(hot.size)
                self.samples += pcm.size
        finally:
            await stream.aclose()

    async def wait_audio(self, frames: int, within: float) -> None:
        start = time.monotonic()
        while self.audio_frames < frames:
            if time.monotonic() - start > within:
                pytest.fail(f"{self.audio_frames}/{frames} audio frames in {within}s")
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        if self._audio_task is not None:
            self._audio_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._audio_task
        await super().__aexit__(*exc)


async def test_each_camera_audio_codec_is_published_and_off_publishes_none(
    rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        listeners: dict[str, Listener] = {}
        for clip in CODECS:
            workdir = tmp_path / clip
            workdir.mkdir()
            ingest = await stack.enter_async_context(
                running_ingest(
                    livekit_server, workdir, rtsp_camera.url(f"h264-{clip}"), audio="auto"
                )
            )
            listeners[clip] = await stack.enter_async_context(
                Listener(livekit_server, ingest.room, ingest.identity)
            )
        (tmp_path / "off").mkdir()
        quiet = await stack.enter_async_context(
            running_ingest(livekit_server, tmp_path / "off", rtsp_camera.url("h264-aac"))
        )
        silent = await stack.enter_async_context(
            Listener(livekit_server, quiet.room, quiet.identity)
        )
        for clip, listener in listeners.items():
            await listener.wait_audio(100, within=20)  # 100 x 10 ms
            assert listener.attributes.get("audio") == CODECS[clip], clip
        await silent.wait_frames(25, within=15)
        # Every other ingest's audio flows meanwhile: a track would have been announced.
        assert not silent.audio.done(), "audio: off must publish no audio track"
        assert "audio" not in silent.attributes
        # The beep (8 s laps) reaches each listener: the decoded audio is the camera's.
        for _ in range(50):  # 10 s: past the next beep of every lap
            if all(x.onsets for x in listeners.values()):
                break
            await asyncio.sleep(0.2)
        assert {clip for clip, x in listeners.items() if not x.onsets} == set()
        assert all(x.arrivals for x in listeners.values())


def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def jpeg_code(jpeg: bytes) -> tuple[int, int, int]:
    """(width, height, burnt-in frame code) of a JPEG, decoded by FFmpeg."""
    with av.open(io.BytesIO(jpeg)) as container:
        frame = next(container.decode(video=0))
    y = frame.reformat(format="gray").to_ndarray()
    return frame.width, frame.height, pattern.read_code(y)


async def test_snapshot_is_the_latest_keyframe_decoded_on_demand(
    rtsp_camera: RtspCamera, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    async with (
        running_ingest(
            livekit_server,
            tmp_path,
            rtsp_camera.url("h264"),
            advertise_host="127.0.0.1",
            snapshot_min_interval_s="1",
        ) as ingest,
        Subscriber(livekit_server, ingest.room, ingest.identity) as viewer,
    ):
        await viewer.wait_frames(1, within=15)
        url = f"http://127.0.0.1:{ingest.port}/snapshot.jpg"
        assert viewer.attributes["snapshot"] == url  # announced for the gateway
        assert ingest.proc is not None
        status, jpeg, headers = await asyncio.to_thread(fetch, url)
        assert status == 200
        assert headers["Content-Type"] == "image/jpeg"
        width, height, code = jpeg_code(jpeg)
        assert (width, height) == (640, 360)
        assert code % 50 == 0, f"frame code {code}: not one of the clip's keyframes (GOP 50)"
        taken = int(headers["X-Camfleet-Taken-At"])
        assert 0 <= time.time() * 1000 - taken < 10_000, "the keyframe's capture stamp, recent"
        # Within the interval the same JPEG, whoever asks: one decode.
        again = await asyncio.to_thread(fetch, url)
        assert again[1] == jpeg
        # Nobody asks: no decode costs. Measured: the ingest's CPU with and without one
        # request a second (a gateway asks at most every 5 s per camera).
        await asyncio.sleep(2.1)  # past the interval and the next keyframe
        newer = await asyncio.to_thread(fetch, url)
        assert int(newer[2]["X-Camfleet-Taken-At"]) > taken
        cpu0, t0 = cpu_seconds(ingest.proc.pid), time.monotonic()
        for _ in range(4):
            assert (await asyncio.to_thread(fetch, url))[0] == 200
            await asyncio.sleep(1)
        busy = (cpu_seconds(ingest.proc.pid) - cpu0) / (time.monotonic() - t0)
        assert busy < 0.3, f"snapshots every second cost {busy:.0%} of a core"
