"""The dev kit configures the programs it starts from their own settings models."""

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from camfleet_dev.program_env import program_env, program_settings
from camfleet_operator.settings import Settings as OperatorSettings
from overlay_gateway.settings import Settings as GatewaySettings


def read_back(settings_type: type, env: dict[str, str], mp: pytest.MonkeyPatch) -> object:
    """What the program itself reads from exactly `env` (nothing else of this process's)."""
    for name in [n for n in os.environ if n.startswith("CAMFLEET_")]:
        mp.delenv(name)
    for name, value in env.items():
        mp.setenv(name, value)
    return settings_type()


def test_operator_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = program_settings(
        OperatorSettings,
        {
            "livekit_url": "ws://127.0.0.1:7880",
            "livekit_api_key": "devkey",
            "livekit_api_secret": "s3cret",
            "namespaces": ["demo", "site-*"],
            "reconcile_interval_seconds": 10,
            "webhook_port": 18088,
        },
    )
    env = program_env(wanted)
    assert env["CAMFLEET_LIVEKIT_API_SECRET"] == "s3cret"
    assert env["CAMFLEET_NAMESPACES"] == "demo,site-*"
    assert "CAMFLEET_MAX_WORKERS" not in env  # defaults stay the program's own
    assert read_back(OperatorSettings, env, monkeypatch) == wanted


def test_gateway_env_round_trips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wanted = program_settings(
        GatewaySettings,
        {
            "host": "127.0.0.1",
            "port": 18080,
            "redis_url": "redis://127.0.0.1:6390/0",
            "auth_modes": ["static"],
            "static_token": "t0ken",
            "kubeconfig": tmp_path / "kubeconfig",
            "kube_enabled": True,
        },
    )
    env = program_env(wanted)
    assert env["CAMFLEET_GATEWAY_AUTH_MODES"] == "static"
    assert env["CAMFLEET_GATEWAY_KUBE_ENABLED"] == "true"
    assert read_back(GatewaySettings, env, monkeypatch) == wanted


def test_a_mistyped_setting_fails_before_anything_starts() -> None:
    with pytest.raises(ValidationError):
        program_settings(
            OperatorSettings,
            {"livekit_url": "ws://x", "livekit_api_key": "k", "reconcile_interval_seconds": -1},
        )


def test_an_unknown_setting_name_is_refused() -> None:
    with pytest.raises(ValueError, match="reconcile_intervl_seconds"):
        program_settings(
            OperatorSettings,
            {"livekit_url": "ws://x", "livekit_api_key": "k", "reconcile_intervl_seconds": 10},
        )
