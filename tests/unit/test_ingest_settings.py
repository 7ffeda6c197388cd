"""Ingest settings from the environment and Secret files; errors never echo a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from camfleet_ingest.failures import CodecUnsupported
from camfleet_ingest.settings import IngestSettings, safe_errors
from camfleet_ingest.source import SourceInfo, choose_mode, url_with_credentials

BASE = {
    "CAMFLEET_INGEST_CAMERA": "ns1/cam-1",
    "CAMFLEET_INGEST_SOURCE_URL": "rtsp://10.0.0.9:554/stream1",
    "CAMFLEET_INGEST_LIVEKIT_URL": "ws://livekit:7880",
    "CAMFLEET_INGEST_TOKEN_FILE": "/var/run/camfleet/livekit/token",
    "CAMFLEET_INGEST_ROOM": "ns1-cam-1",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_defaults(env: pytest.MonkeyPatch) -> None:
    s = IngestSettings()  # type: ignore[call-arg]
    assert (s.transport, s.mode, s.http_port) == ("tcp", "auto", 8080)
    assert s.termination_log == Path("/dev/termination-log")
    assert s.backoff_cap_s <= 30
    assert s.identity == "ingest-ns1-cam-1"
    assert s.credentials() == (None, None)


def test_credentials_from_env_and_files(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("CAMFLEET_INGEST_SOURCE_USERNAME", "admin")
    env.setenv("CAMFLEET_INGEST_SOURCE_PASSWORD", "p@ss:w/rd")
    s = IngestSettings()  # type: ignore[call-arg]
    assert s.credentials() == ("admin", "p@ss:w/rd")
    assert "p@ss" not in repr(s)

    (tmp_path / "user").write_text("viewer\n")
    (tmp_path / "pass").write_text("from-a-file\n")
    env.delenv("CAMFLEET_INGEST_SOURCE_USERNAME")
    env.delenv("CAMFLEET_INGEST_SOURCE_PASSWORD")
    env.setenv("CAMFLEET_INGEST_SOURCE_USERNAME_FILE", str(tmp_path / "user"))
    env.setenv("CAMFLEET_INGEST_SOURCE_PASSWORD_FILE", str(tmp_path / "pass"))
    s = IngestSettings()  # type: ignore[call-arg]
    assert s.credentials() == ("viewer", "from-a-file")
    (tmp_path / "pass").write_text("rotated")  # Secret files change in place
    assert s.credentials() == ("viewer", "rotated")


def test_credentials_in_the_url_are_refused_without_echo(env: pytest.MonkeyPatch) -> None:
    env.setenv("CAMFLEET_INGEST_SOURCE_URL", "rtsp://admin:hunter2-secret@10.0.0.9/s")
    with pytest.raises(ValidationError) as info:
        IngestSettings()  # type: ignore[call-arg]
    summary = safe_errors(info.value)
    assert "CAMFLEET_INGEST_SOURCE_URL" in summary
    assert "credentials" in summary
    assert "hunter2" not in summary


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CAMFLEET_INGEST_CAMERA", "no-slash"),
        ("CAMFLEET_INGEST_SOURCE_URL", "http://10.0.0.9/x"),
        ("CAMFLEET_INGEST_TRANSPORT", "quic"),
        ("CAMFLEET_INGEST_MODE", "fast"),
        ("CAMFLEET_INGEST_AUDIO", "aac"),
        ("CAMFLEET_INGEST_SNAPSHOT_WIDTH", "8"),
        ("CAMFLEET_INGEST_BACKOFF_CAP_S", "60"),
        ("CAMFLEET_INGEST_MAX_BITRATE_KBPS", "0"),
    ],
)
def test_invalid_values(env: pytest.MonkeyPatch, key: str, value: str) -> None:
    env.setenv(key, value)
    with pytest.raises(ValidationError):
        IngestSettings()  # type: ignore[call-arg]


def test_password_and_password_file_are_exclusive(env: pytest.MonkeyPatch) -> None:
    env.setenv("CAMFLEET_INGEST_SOURCE_PASSWORD", "a")
    env.setenv("CAMFLEET_INGEST_SOURCE_PASSWORD_FILE", "/x")
    with pytest.raises(ValidationError, match="not both"):
        IngestSettings()  # type: ignore[call-arg]


def test_url_with_credentials_is_percent_encoded() -> None:
    assert url_with_credentials("rtsp://cam:8554/a?b=1", "ad min", "p@ss:w/rd") == (
        "rtsp://ad%20min:p%40ss%3Aw%2Frd@cam:8554/a?b=1"
    )
    assert url_with_credentials("rtsp://[fe80::1]/a", "u", "p") == "rtsp://u:p@[fe80::1]/a"
    assert url_with_credentials("rtsp://cam/a", None, None) == "rtsp://cam/a"


def info(codec: str, b_frames: bool = False) -> SourceInfo:
    return SourceInfo(codec, 1920, 1080, 25.0, "High", b_frames)


@pytest.mark.parametrize(
    ("requested", "source", "expected"),
    [
        ("auto", info("h264"), "passthrough"),
        ("auto", info("h264", b_frames=True), "transcode"),
        ("auto", info("hevc"), "transcode"),
        ("auto", info("mjpeg"), "transcode"),
        ("transcode", info("h264"), "transcode"),
        ("passthrough", info("h264"), "passthrough"),
    ],
)
def test_choose_mode(requested: str, source: SourceInfo, expected: str) -> None:
    assert choose_mode(requested, source, "ns/c") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("source", [info("hevc"), info("h264", b_frames=True)])
def test_forced_passthrough_of_what_webrtc_cannot_carry(source: SourceInfo) -> None:
    with pytest.raises(CodecUnsupported, match="ns/c") as err:
        choose_mode("passthrough", source, "ns/c")
    assert err.value.permanent


@pytest.mark.parametrize(
    ("value", "enabled"), [("auto", True), ("opus", True), ("off", False), ("none", False)]
)
def test_audio_values_old_and_new(env: pytest.MonkeyPatch, value: str, enabled: bool) -> None:
    env.setenv("CAMFLEET_INGEST_AUDIO", value)
    assert IngestSettings().audio_enabled is enabled  # type: ignore[call-arg]


def test_snapshot_address_only_when_advertised(env: pytest.MonkeyPatch) -> None:
    assert IngestSettings().snapshot_url is None  # type: ignore[call-arg]
    env.setenv("CAMFLEET_INGEST_ADVERTISE_HOST", "10.1.2.3")
    env.setenv("CAMFLEET_INGEST_HTTP_PORT", "9090")
    got = IngestSettings().snapshot_url  # type: ignore[call-arg]
    assert got == "http://10.1.2.3:9090/snapshot.jpg"
    env.setenv("CAMFLEET_INGEST_ADVERTISE_HOST", "fd00::7")
    got = IngestSettings().snapshot_url  # type: ignore[call-arg]
    assert got == "http://[fd00::7]:9090/snapshot.jpg"
