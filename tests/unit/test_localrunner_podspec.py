"""Pure parts of the local pod runner: container → process, kubelet-shaped status."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from camfleet_dev.localrunner.podspec import PodSpecError, build_process_spec, referenced_objects
from camfleet_dev.localrunner.status import ContainerState, Terminated, crash_backoff, pod_status


def _pod(**container: Any) -> dict[str, Any]:
    base = {
        "name": "ingest",
        "image": "ghcr.io/camfleet/ingest:0.1.0",
        "command": ["camfleet", "ingest"],
        "args": ["--port", "$(HTTP_PORT)"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [
            {"name": "HTTP_PORT", "value": "8080"},
            {"name": "TOKEN_FILE", "value": "/var/run/camfleet/livekit/token"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "cam", "key": "pw"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "volumeMounts": [{"name": "token", "mountPath": "/var/run/camfleet/livekit"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
        "terminationMessagePath": "/dev/termination-log",
    }
    base.update(container)
    return {
        "metadata": {"name": "cam-abc", "namespace": "ns"},
        "spec": {
            "containers": [base],
            "volumes": [{"name": "token", "secret": {"secretName": "cam-token"}}],
        },
    }


SECRETS = {
    "cam": {"metadata": {"name": "cam"}, "data": {"pw": base64.b64encode(b"s3cret").decode()}},
    "cam-token": {
        "metadata": {"name": "cam-token"},
        "data": {"token": base64.b64encode(b"jwt").decode()},
    },
}


def test_container_becomes_a_local_process(tmp_path: Path) -> None:
    spec = build_process_spec(
        _pod(), root=tmp_path, secrets=SECRETS, config_maps={}, host_ports={8080: 41234}
    )
    assert spec.argv == ["camfleet", "ingest", "--port", "41234"]
    assert spec.env["HTTP_PORT"] == "41234"
    assert spec.env["TOKEN_FILE"] == str(tmp_path / "var/run/camfleet/livekit/token")
    assert spec.env["PASSWORD"] == "s3cret"
    assert spec.env["POD"] == "cam-abc"
    assert spec.files == {tmp_path / "var/run/camfleet/livekit/token": b"jwt"}
    assert spec.termination_log == tmp_path / "dev/termination-log"
    assert spec.readiness is not None
    assert (spec.readiness.port, spec.readiness.path, spec.readiness.period) == (
        41234,
        "/healthz",
        2,
    )
    assert referenced_objects(_pod()) == ({"cam", "cam-token"}, set())


def test_missing_secret_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PodSpecError, match="Secret 'cam' not found"):
        build_process_spec(
            _pod(),
            root=tmp_path,
            secrets={"cam-token": SECRETS["cam-token"]},
            config_maps={},
            host_ports={8080: 1},
        )


def test_container_without_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PodSpecError, match="no command"):
        build_process_spec(
            _pod(command=[]), root=tmp_path, secrets=SECRETS, config_maps={}, host_ports={}
        )


def test_status_reports_running_ready_and_last_termination() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    state = ContainerState(name="ingest", image="img", restart_count=2, running_since=t0)
    state.ready = True
    state.last_terminated = Terminated(3, "Unreachable: camera ns/cam", t0, t0 + timedelta(1))
    status = pod_status(state, t0, t0)
    cs = status["containerStatuses"][0]
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert cs["restartCount"] == 2
    assert cs["state"] == {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    assert cs["lastState"]["terminated"]["message"] == "Unreachable: camera ns/cam"
    assert cs["lastState"]["terminated"]["reason"] == "Error"


def test_waiting_container_is_not_ready() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    state = ContainerState(name="ingest", image="img", waiting_reason="CrashLoopBackOff")
    status = pod_status(state, t0, t0)
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"


def test_crash_backoff_doubles_to_a_cap() -> None:
    assert [crash_backoff(n, 1, 10) for n in range(6)] == [0, 1, 2, 4, 8, 10]
