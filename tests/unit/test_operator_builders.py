"""Golden tests for the pure builders: the desired Deployment and Secret for sample Cameras.

Regenerate after an intended change with `CAMFLEET_UPDATE_GOLDEN=1 pytest tests/unit` and review
the diff of tests/unit/golden/ like code.
"""

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from camfleet.camera import Camera, Resources
from camfleet_operator import constants as c
from camfleet_operator.builders.deployment import build_deployment, desired_replicas, spec_hash
from camfleet_operator.builders.secret import build_secret, issued_token, needs_rotation
from camfleet_operator.model import IngestDefaults, IssuedToken

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CAMFLEET_UPDATE_GOLDEN") == "1"

DEFAULTS = IngestDefaults(
    image="ghcr.io/camfleet/ingest:0.1.0",
    resources=Resources(requests={"cpu": "250m", "memory": "128Mi"}, limits={"memory": "512Mi"}),
    livekit_url="wss://livekit.example.com",
)
TOKEN = IssuedToken(
    token="eyJhbGciOiJIUzI1NiJ9.e30.sig",
    expires_at=1_800_000_000,
    room="site-a-door",
    identity="ingest-site-a-door",
    issuer="APIkey",
)

CAMERAS: dict[str, dict[str, Any]] = {
    "minimal": {"source": {"url": "rtsp://10.0.0.7:554/stream1"}},
    "full": {
        "source": {
            "url": "rtsps://cam.example.com:322/h265",
            "credentialsSecretRef": {"name": "door-creds", "usernameKey": "user"},
            "transport": "udp",
        },
        "stream": {"mode": "transcode", "audio": "opus", "maxBitrateKbps": 2500},
        "room": "lobby",
        "onDemand": True,
        "ingest": {
            "image": "registry.local/ingest:dev",
            "resources": {"requests": {"cpu": 1, "memory": "256Mi"}},
            "nodeSelector": {"camfleet.io/gpu": "true"},
            "tolerations": [{"key": "media", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "access": {"groups": ["security"]},
    },
    "disabled": {"source": {"url": "rtsp://10.0.0.8/live"}, "enabled": False},
}


def camera(spec: dict[str, Any], *, name: str = "door", generation: int = 1) -> Camera:
    return Camera.from_body(
        {
            "metadata": {
                "name": name,
                "namespace": "site-a",
                "uid": "0b7c9f7e-1111-4c1e-9a52-5b1f8d6a2c10",
                "generation": generation,
            },
            "spec": spec,
        }
    )


def render(case: str) -> list[dict[str, Any]]:
    cam = camera(CAMERAS[case])
    replicas = desired_replicas(cam, has_viewer=False)
    return [build_deployment(cam, DEFAULTS, replicas=replicas), build_secret(cam, TOKEN)]


@pytest.mark.parametrize("case", sorted(CAMERAS))
def test_golden(case: str) -> None:
    path = GOLDEN / f"operator_{case}.yaml"
    rendered = yaml.safe_dump_all(render(case), sort_keys=False)
    if UPDATE:
        path.write_text(rendered)
    assert path.exists(), f"{path} missing; run with CAMFLEET_UPDATE_GOLDEN=1"
    assert list(yaml.safe_load_all(path.read_text())) == render(case)


def test_builders_are_deterministic() -> None:
    assert render("full") == render("full")


def test_deployment_contract() -> None:
    cam = camera(CAMERAS["full"])
    dep = build_deployment(cam, DEFAULTS, replicas=1)
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert dep["metadata"]["ownerReferences"][0]["uid"] == cam.uid
    assert dep["metadata"]["labels"] == {
        "app.kubernetes.io/name": "camfleet-ingest",
        "app.kubernetes.io/instance": "door",
        "app.kubernetes.io/managed-by": "camfleet-operator",
        "app.kubernetes.io/component": "ingest",
        "camfleet.io/camera": "door",
    }
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["camfleet-ingest"]
    assert container["image"] == "registry.local/ingest:dev"
    env = {e["name"]: e for e in container["env"]}
    assert env["CAMFLEET_INGEST_SOURCE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "door-creds",
        "key": "password",
    }
    assert env["CAMFLEET_INGEST_CAMERA"]["value"] == "site-a/door"
    assert env["CAMFLEET_INGEST_ROOM"]["value"] == "lobby"
    assert env["CAMFLEET_INGEST_TOKEN_FILE"]["value"] == "/var/run/camfleet/livekit/token"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"][0]["containerPort"] == 8080
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["terminationMessagePolicy"] == "File"
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "256Mi"}}


def test_no_credentials_in_plain_env() -> None:
    dep = build_deployment(camera(CAMERAS["full"]), DEFAULTS, replicas=1)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    plain = [e for e in container["env"] if "value" in e]
    assert all("PASSWORD" not in e["name"] and "USERNAME" not in e["name"] for e in plain)


def test_replicas() -> None:
    assert desired_replicas(camera(CAMERAS["minimal"]), has_viewer=False) == 1
    assert desired_replicas(camera(CAMERAS["disabled"]), has_viewer=True) == 0
    on_demand = camera(CAMERAS["full"])
    assert desired_replicas(on_demand, has_viewer=False) == 0
    assert desired_replicas(on_demand, has_viewer=True) == 1


def test_any_spec_change_rolls_the_pod_template() -> None:
    base = camera(CAMERAS["minimal"])
    changed = camera({**CAMERAS["minimal"], "source": {"url": "rtsp://10.0.0.7/other"}})
    assert spec_hash(base, DEFAULTS) != spec_hash(changed, DEFAULTS)
    assert spec_hash(base, DEFAULTS) != spec_hash(
        base, DEFAULTS.model_copy(update={"image": "ingest:2"})
    )
    regenerated = camera(CAMERAS["minimal"], generation=7)
    assert spec_hash(base, DEFAULTS) == spec_hash(regenerated, DEFAULTS)


def test_desired_hash_tracks_content() -> None:
    a = build_deployment(camera(CAMERAS["minimal"]), DEFAULTS, replicas=1)
    b = build_deployment(camera(CAMERAS["minimal"]), DEFAULTS, replicas=0)
    assert (
        a["metadata"]["annotations"][c.ANN_DESIRED_HASH]
        != (b["metadata"]["annotations"][c.ANN_DESIRED_HASH])
    )


def test_secret_round_trip_and_rotation() -> None:
    cam = camera(CAMERAS["minimal"])
    secret = build_secret(cam, TOKEN)
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN.token
    assert issued_token(secret) == TOKEN
    assert issued_token({"metadata": {}, "data": {}}) is None
    kwargs = {"room": TOKEN.room, "identity": TOKEN.identity, "issuer": TOKEN.issuer}
    assert not needs_rotation(TOKEN, now=TOKEN.expires_at - 7200, margin=3600, **kwargs)
    assert needs_rotation(TOKEN, now=TOKEN.expires_at - 3600, margin=3600, **kwargs)
    assert needs_rotation(None, now=0, margin=0, **kwargs)
    assert needs_rotation(TOKEN, now=0, margin=0, **{**kwargs, "room": "elsewhere"})
    assert needs_rotation(TOKEN, now=0, margin=0, **{**kwargs, "issuer": "other-key"})
