"""Failure classification from FFmpeg's real error codes and the LiveKit SDK's real errors."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import av
import av.error
import pytest
from livekit import rtc

from camfleet_ingest.failures import (
    AuthFailed,
    CodecUnsupported,
    IngestFailure,
    PublishRejected,
    Unreachable,
    classify_livekit_error,
    classify_source_error,
    termination_message,
    write_termination_log,
)

CAMERA = "ns1/cam1"
SECRET_URL = "rtsp://admin:hunter2-secret@10.0.0.9/stream"


def ffmpeg_error(code: int) -> Exception:
    """The exception PyAV raises for an FFmpeg return code (the URL rides in its text)."""
    try:
        av.error.err_check(-code, filename=SECRET_URL)
    except Exception as exc:
        return exc
    raise AssertionError("err_check did not raise")


def tag(name: bytes) -> int:
    return av.error.tag_to_code(name)


@pytest.mark.parametrize(
    ("code", "kind", "permanent"),
    [
        (tag(b"\xf8401"), AuthFailed, True),
        (tag(b"\xf8403"), AuthFailed, True),
        (tag(b"\xf8404"), Unreachable, False),
        (errno.ECONNREFUSED, Unreachable, False),
        (errno.ETIMEDOUT, Unreachable, False),
        (errno.EHOSTUNREACH, Unreachable, False),
        (tag(b"EOF "), Unreachable, False),
        (tag(b"EXIT"), Unreachable, False),  # PyAV's open/read timeout interrupts FFmpeg
        (tag(b"\xf8DEC"), CodecUnsupported, True),
    ],
)
def test_source_errors(code: int, kind: type[IngestFailure], permanent: bool) -> None:
    exc = ffmpeg_error(code)
    assert "hunter2-secret" in str(exc)  # FFmpeg's text really does carry the credentials
    failure = classify_source_error(exc, CAMERA)
    assert type(failure) is kind
    assert failure.permanent is permanent
    assert CAMERA in failure.message
    assert "hunter2" not in termination_message(failure)
    assert termination_message(failure).startswith(f"{kind.reason}: ")


def test_a_real_refused_connection_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(av.error.FFmpegError) as info:
            av.open(f"rtsp://u:pw@127.0.0.1:{port}/x", options={"rtsp_transport": "tcp"})
    failure = classify_source_error(info.value, CAMERA)
    assert isinstance(failure, Unreachable)
    assert "refused" in failure.message


async def test_livekit_server_away_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        room = rtc.Room()
        with pytest.raises(rtc.ConnectError) as info:
            await room.connect(
                f"ws://127.0.0.1:{port}", "x.y.z", rtc.RoomOptions(connect_timeout=2)
            )
    failure = classify_livekit_error(info.value, CAMERA, f"ws://127.0.0.1:{port}")
    assert isinstance(failure, Unreachable)
    assert not failure.permanent


@pytest.mark.parametrize(
    "text",
    [
        # What livekit-server 1.13 + the Rust SDK answer to a token signed with another secret.
        "engine: signal failure: client error: 401 Unauthorized - invalid token: eyJhbGciOi."
        "eyJ2aWRlbyI6.RThZ8Wi1q, error: token signature is invalid: signature is invalid",
        "engine: signal failure: client error: 403 Forbidden - permissions denied",
    ],
)
def test_livekit_refusals_are_publish_rejected(text: str) -> None:
    failure = classify_livekit_error(rtc.ConnectError(text), CAMERA, "ws://lk:7880")
    assert isinstance(failure, PublishRejected)
    # Transient on its own: the supervisor retries with a re-read token before giving up.
    assert not failure.permanent
    assert "eyJ" not in failure.message


def test_termination_log(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    write_termination_log(path, AuthFailed("camera ns1/cam1 rejected the credentials"))
    assert path.read_text() == "AuthFailed: camera ns1/cam1 rejected the credentials\n"
    # Outside Kubernetes there may be no such file to write: that must not raise.
    write_termination_log(tmp_path / "missing" / "dir" / "log", AuthFailed("x"))
