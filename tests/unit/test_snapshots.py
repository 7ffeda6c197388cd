"""Snapshots without servers: the ingest's JPEG from a real H.264 keyframe (FFmpeg through
PyAV), its decode-at-most-every-interval rule, and the gateway's check of announced addresses."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import pytest

from camfleet.camera import Stream, audio_choice
from camfleet_dev import pattern
from camfleet_ingest.annexb import AccessUnit
from camfleet_ingest.reader import StampedAccessUnit
from camfleet_ingest.snapshot import Snapshots, encode_jpeg
from overlay_gateway.settings import Settings
from overlay_gateway.stills import snapshot_url_allowed


def keyframe(code: int, width: int = 1280, height: int = 720) -> bytes:
    """One Annex B IDR (with SPS/PPS) of the test pattern showing frame code ``code``."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"preset": "ultrafast", "x264-params": "repeat-headers=1"}
    frame = av.VideoFrame.from_ndarray(pattern.render(code, width, height), format="rgb24")
    frame = frame.reformat(format="yuv420p")
    frame.pts = 0
    packets = ctx.encode(frame) + ctx.encode(None)
    return bytes(packets[0])


def stamped(data: bytes, frame_id: int) -> StampedAccessUnit:
    return StampedAccessUnit(AccessUnit(data, True), frame_id, 1_700_000_000_000_000, 0, 1280, 720)


def decoded_code(jpeg: bytes) -> tuple[int, int, int]:
    with av.open(io.BytesIO(jpeg)) as container:
        frame = next(container.decode(video=0))
    return frame.width, frame.height, pattern.read_code(frame.reformat(format="gray").to_ndarray())


def test_jpeg_is_the_keyframe_scaled_with_its_code_legible() -> None:
    jpeg, width, height = encode_jpeg(keyframe(1234), "h264", 640)
    assert jpeg[:2] == b"\xff\xd8"
    assert (width, height) == (640, 360)
    assert decoded_code(jpeg) == (640, 360, 1234)
    # Never wider than the source, always even.
    assert encode_jpeg(keyframe(7), "h264", 3000)[1:] == (1280, 720)


def test_a_broken_keyframe_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="did not decode"):
        encode_jpeg(b"\x00\x00\x00\x01\x65garbage", "h264", 640)


async def test_decoded_only_when_asked_and_at_most_every_interval() -> None:
    now = [100.0]
    snaps = Snapshots(640, 2.0, clock=lambda: now[0])
    assert await snaps.snapshot() is None  # no keyframe yet
    snaps.keyframe(stamped(keyframe(50), 1))
    snaps.keyframe(stamped(keyframe(100), 2))
    assert snaps.decodes == 0, "keyframes cost nothing until someone asks"
    first = await snaps.snapshot()
    assert first is not None
    assert first.frame_id == 2
    assert first.taken_at_ms == 1_700_000_000_000
    assert decoded_code(first.jpeg)[2] == 100
    snaps.keyframe(stamped(keyframe(150), 3))
    now[0] += 1.0
    assert await snaps.snapshot() is first, "within the interval: the same JPEG"
    now[0] += 1.5
    newer = await snaps.snapshot()
    assert newer is not None
    assert newer.frame_id == 3
    assert snaps.decodes == 2
    now[0] += 10
    assert await snaps.snapshot() is newer, "no newer keyframe: no new decode"
    assert snaps.decodes == 2


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://10.1.2.3:8080/snapshot.jpg", True),
        ("http://[fd00::7]:8080/snapshot.jpg", True),
        ("http://10.1.2.3/snapshot.jpg", False),  # no port: not what an ingest announces
        ("https://10.1.2.3:8080/snapshot.jpg", False),
        ("http://10.1.2.3:8080/metrics", False),
        ("http://10.1.2.3:8080/snapshot.jpg?x=1", False),
        ("http://user:pw@10.1.2.3:8080/snapshot.jpg", False),
        ("file:///etc/passwd", False),
        ("http://10.1.2.3:99999/snapshot.jpg", False),
        ("", False),
    ],
)
def test_only_an_ingest_address_is_fetched(url: str, ok: bool) -> None:
    assert snapshot_url_allowed(url) is ok


def test_gateway_reaches_livekit_api_over_http() -> None:
    assert (
        Settings(livekit_url="wss://lk.example.com").livekit_server_url == "https://lk.example.com"
    )
    s = Settings(livekit_url="wss://lk.example.com", livekit_api_url="ws://livekit.lk:7880")
    assert s.livekit_server_url == "http://livekit.lk:7880"


def test_audio_old_spellings_mean_the_new_ones() -> None:
    assert [audio_choice(v) for v in ("auto", "opus", "off", "none")] == [
        "auto",
        "auto",
        "off",
        "off",
    ]
    assert Stream().audio_choice == "off"
    assert Stream.model_validate({"audio": "opus"}).audio_choice == "auto"
