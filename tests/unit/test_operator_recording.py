"""The operator's side of recording: what a recording Camera's ingest pod and Secret carry, and
that recording keeps an on-demand ingest running (pure builders, no servers)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from camfleet import ingest_contract as ic
from camfleet.camera import Camera, CameraSpec, Resources
from camfleet_operator.builders.deployment import build_deployment, desired_replicas, spec_hash
from camfleet_operator.builders.secret import build_secret
from camfleet_operator.model import IngestDefaults, IssuedToken, RecordingSecrets, RecordingStore

BASE = IngestDefaults(
    image="ghcr.io/camfleet/ingest:0.1.0",
    resources=Resources(requests={"cpu": "250m"}),
    livekit_url="wss://livekit.example.com",
)
S3 = BASE.model_copy(
    update={
        "recording": RecordingStore(
            store_url="s3://recordings/site-a", s3_endpoint="http://s3.store:7070"
        )
    }
)
PV = BASE.model_copy(
    update={"recording": RecordingStore(store_url="file:///recordings", volume_claim="rec")}
)
SECRETS = RecordingSecrets(
    index_dsn=SecretStr("postgresql://rec:pw@db/camfleet"),
    s3_access_key_id=SecretStr("AKID"),
    s3_secret_access_key=SecretStr("s3cret"),
)
TOKEN = IssuedToken(token="t", expires_at=1, room="r", identity="i", issuer="k")


def camera(**spec: Any) -> Camera:
    body = {
        "metadata": {"name": "door", "namespace": "site-a", "uid": "u1", "generation": 1},
        "spec": {"source": {"url": "rtsp://10.0.0.7/s"}, **spec},
    }
    return Camera.from_body(body)


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_recording_is_off_by_default_and_adds_nothing() -> None:
    cam = camera()
    assert cam.spec.recording.mode == "off"
    env = env_of(build_deployment(cam, S3, replicas=1))
    assert not any("RECORDING" in name for name in env)
    # An operator upgrade must not roll ingests that do not record.
    assert spec_hash(cam, S3) == spec_hash(cam, BASE)


def test_a_recording_camera_gets_the_store_and_its_credentials_by_reference() -> None:
    cam = camera(recording={"mode": "continuous", "retention": "2w"})
    env = env_of(build_deployment(cam, S3, replicas=1))
    p = ic.ENV_PREFIX
    assert env[p + ic.ENV_RECORDING_MODE] == "continuous"
    assert env[p + ic.ENV_RECORDING_RETENTION] == "2w"
    assert env[p + ic.ENV_RECORDING_STORE_URL] == "s3://recordings/site-a"
    assert env[p + ic.ENV_RECORDING_S3_ENDPOINT] == "http://s3.store:7070"
    for var, key in (
        (ic.ENV_RECORDING_INDEX_DSN, ic.SECRET_INDEX_DSN),
        (ic.ENV_RECORDING_S3_ACCESS_KEY_ID, ic.SECRET_S3_ACCESS_KEY_ID),
        (ic.ENV_RECORDING_S3_SECRET_ACCESS_KEY, ic.SECRET_S3_SECRET_ACCESS_KEY),
    ):
        assert env[p + var] == {"secretKeyRef": {"name": cam.secret_name, "key": key}}
    secret = build_secret(cam, TOKEN, SECRETS)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data[ic.SECRET_INDEX_DSN] == "postgresql://rec:pw@db/camfleet"
    assert data[ic.SECRET_S3_SECRET_ACCESS_KEY] == "s3cret"
    assert "s3cret" not in str(build_deployment(cam, S3, replicas=1))
    assert spec_hash(cam, S3) != spec_hash(camera(), S3)


def test_a_directory_store_mounts_its_claim() -> None:
    cam = camera(recording={"mode": "continuous"})
    deployment = build_deployment(cam, PV, replicas=1)
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "recordings", "persistentVolumeClaim": {"claimName": "rec"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert {"name": "recordings", "mountPath": "/recordings"} in container["volumeMounts"]
    env = env_of(deployment)
    assert env[ic.ENV_PREFIX + ic.ENV_RECORDING_STORE_URL] == "file:///recordings"
    assert ic.ENV_PREFIX + ic.ENV_RECORDING_S3_ACCESS_KEY_ID not in env


def test_recording_keeps_an_on_demand_ingest_running() -> None:
    cam = camera(onDemand=True, recording={"mode": "continuous"})
    assert desired_replicas(cam, has_viewer=False, defaults=S3) == 1
    # Without a store nothing can record: on-demand as before.
    assert desired_replicas(cam, has_viewer=False, defaults=BASE) == 0
    assert desired_replicas(camera(onDemand=True), has_viewer=False, defaults=S3) == 0
    disabled = camera(enabled=False, recording={"mode": "continuous"})
    assert desired_replicas(disabled, has_viewer=True, defaults=S3) == 0


def test_the_recording_spec_is_validated() -> None:
    spec = CameraSpec.model_validate(
        {"source": {"url": "rtsp://h/s"}, "recording": {"mode": "events", "preRoll": "5s"}}
    )
    assert spec.recording.pre_roll == "5s"
    for bad in ({"mode": "always"}, {"retention": "7days"}, {"preRoll": "5"}, {"onDelete": "x"}):
        with pytest.raises(ValidationError):
            CameraSpec.model_validate({"source": {"url": "rtsp://h/s"}, "recording": bad})


def test_the_recording_condition_follows_the_ingest_attributes() -> None:
    from datetime import UTC, datetime

    from camfleet_operator.conditions import Observed, compute_status

    now = datetime(2026, 12, 2, tzinfo=UTC)
    cam = camera(recording={"mode": "continuous"})
    live = {"publishing_video": True, "ready_replicas": 1, "container_running": True}

    def recording(**observed: Any) -> tuple[str, str]:
        status = compute_status(cam, Observed(**(live | observed)), None, now)
        cond = status.condition("Recording")
        assert cond is not None
        assert status.phase == "Live"  # a recording gap never degrades the live camera
        return cond.status, cond.reason

    assert recording(recording_store=False) == ("False", "NoRecordingStore")
    assert recording(recording_store=True) == ("Unknown", "WaitingForIngest")
    on = {ic.ATTR_RECORDING: ic.RECORDING_ON}
    assert recording(recording_store=True, attributes=on) == ("True", "Recording")
    gap = {ic.ATTR_RECORDING: ic.RECORDING_GAP, ic.ATTR_RECORDING_REASON: "StoreUnavailable"}
    assert recording(recording_store=True, attributes=gap) == ("False", "StoreUnavailable")
    events = camera(onDemand=True, recording={"mode": "events"})
    status = compute_status(events, Observed(**live, recording_store=True), None, now)
    assert status.phase == "Live"
    cond = status.condition("Recording")
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", "ModeNotSupported")
    assert desired_replicas(events, has_viewer=False, defaults=S3) == 0  # still on demand
    plain = compute_status(camera(), Observed(**live), None, now)
    assert plain.condition("Recording") is None
