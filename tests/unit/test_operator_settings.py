"""Operator settings from `CAMFLEET_*` env: validation, sharding and the secret file."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from camfleet_operator.settings import Settings

BASE = {
    "CAMFLEET_LIVEKIT_URL": "wss://lk.example.com",
    "CAMFLEET_LIVEKIT_API_KEY": "key",
}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in {**BASE, **env}.items():
        monkeypatch.setenv(name, value)
    return Settings()  # type: ignore[call-arg]


def test_secret_from_file_is_reread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("first\n")
    s = settings(monkeypatch, CAMFLEET_LIVEKIT_API_SECRET_FILE=str(secret))
    assert s.api_secret() == "first"
    secret.write_text("rotated")
    assert s.api_secret() == "rotated"
    assert "first" not in repr(s)


def test_secret_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="API_SECRET"):
        settings(monkeypatch)


def test_api_url_derived_from_ws_url(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, CAMFLEET_LIVEKIT_API_SECRET="hunter2-secret")
    assert s.api_url() == "https://lk.example.com"
    assert s.api_secret() == "hunter2-secret"
    assert "hunter2" not in repr(s)


def test_namespaces_and_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        CAMFLEET_LIVEKIT_API_SECRET="x",
        CAMFLEET_NAMESPACES="site-a, site-b",
        CAMFLEET_SHARD_SELECTOR="camfleet.io/shard=a,tier,!legacy",
    )
    assert s.namespaces == ["site-a", "site-b"]
    assert s.shard_labels() == {"camfleet.io/shard": "a", "tier": True, "legacy": False}
    other = settings(
        monkeypatch, CAMFLEET_LIVEKIT_API_SECRET="x", CAMFLEET_SHARD_SELECTOR="camfleet.io/shard=b"
    )
    assert s.finalizer() != other.finalizer()
    assert s.finalizer().startswith("camfleet.io/finalizer-")
    monkeypatch.delenv("CAMFLEET_SHARD_SELECTOR")
    unsharded = settings(monkeypatch, CAMFLEET_LIVEKIT_API_SECRET="x")
    assert unsharded.finalizer() == "camfleet.io/finalizer"


@pytest.mark.parametrize("selector", ["a=", "=b", "!a=b"])
def test_bad_shard_selector_fails_at_start(monkeypatch: pytest.MonkeyPatch, selector: str) -> None:
    with pytest.raises(ValidationError, match="shard selector"):
        settings(monkeypatch, CAMFLEET_LIVEKIT_API_SECRET="x", CAMFLEET_SHARD_SELECTOR=selector)


def test_rotation_margin_below_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="margin"):
        settings(
            monkeypatch,
            CAMFLEET_LIVEKIT_API_SECRET="x",
            CAMFLEET_TOKEN_TTL_SECONDS="600",
            CAMFLEET_TOKEN_ROTATION_MARGIN_SECONDS="600",
        )


def test_rotation_margin_above_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="reconcile interval"):
        settings(
            monkeypatch,
            CAMFLEET_LIVEKIT_API_SECRET="x",
            CAMFLEET_RECONCILE_INTERVAL_SECONDS="120",
            CAMFLEET_TOKEN_ROTATION_MARGIN_SECONDS="60",
        )


def test_ingest_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, CAMFLEET_LIVEKIT_API_SECRET="x", CAMFLEET_INGEST_CPU_LIMIT="1")
    defaults = s.ingest_defaults()
    assert defaults.livekit_url == "wss://lk.example.com"
    assert defaults.resources.limits == {"cpu": "1", "memory": "512Mi"}
