"""The Camera CRD on the real kube-apiserver: structural, defaulted, and refusing bad specs
with a message that names the field (no operator needed: the API server does this alone)."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from camfleet.camera import CameraSpec
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.tools import repo_root


def manifest(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "camfleet.io/v1alpha1",
            "kind": "Camera",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


GOOD = {"source": {"url": "rtsp://10.0.0.7:554/stream1"}}


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"source": {"url": "http://10.0.0.7/stream"}}, "spec.source.url", "rtsp://"),
        (
            {"source": {"url": "rtsp://admin:hunter2@10.0.0.7/stream"}},
            "spec.source.url",
            "must not carry credentials",
        ),
        ({"source": {"url": "rtsp://user@10.0.0.7/s"}}, "spec.source.url", "credentials"),
        ({**GOOD, "stream": {"mode": "turbo"}}, "spec.stream.mode", "Unsupported value"),
        ({**GOOD, "stream": {"audio": "aac"}}, "spec.stream.audio", "Unsupported value"),
        ({**GOOD, "enabled": "yes"}, "spec.enabled", "boolean"),
        (
            {**GOOD, "stream": {"mode": "transcode", "maxBitrateKbps": "fast"}},
            "spec.stream.maxBitrateKbps",
            "integer",
        ),
        (
            {**GOOD, "stream": {"mode": "passthrough", "maxBitrateKbps": 2000}},
            "spec.stream.maxBitrateKbps",
            "only allowed with stream.mode: transcode",
        ),
        ({**GOOD, "stream": {"maxBitrateKbps": 2000}}, "spec.stream.maxBitrateKbps", "transcode"),
        ({**GOOD, "room": "lobby/main"}, "spec.room", "letters, digits"),
        (
            {**GOOD, "source": {"url": "rtsp://x/s", "transport": "quic"}},
            "spec.source.transport",
            "Unsupported value",
        ),
        ({"stream": {}}, "spec.source", "Required value"),
        (
            {"source": {"url": "rtsp://10.0.0.7/s\nX-Injected: 1"}},
            "spec.source.url",
            "must not contain whitespace or control characters",
        ),
        ({"source": {"url": "rtsp://10.0.0.7/a b"}}, "spec.source.url", "whitespace"),
        ({**GOOD, "ingest": {"image": "img:1\t"}}, "spec.ingest.image", "control characters"),
        (
            {"source": {"url": "rtsp://x/s", "credentialsSecretRef": {"name": "c\r"}}},
            "spec.source.credentialsSecretRef.name",
            "control characters",
        ),
        ({**GOOD, "access": {"groups": ["ops\n"]}}, "spec.access.groups[0]", "control characters"),
        ({**GOOD, "recording": {"mode": "always"}}, "spec.recording.mode", "Unsupported value"),
        ({**GOOD, "recording": {"retention": "7days"}}, "spec.recording.retention", "should match"),
        (
            {**GOOD, "recording": {"mode": "continuous", "preRoll": "5s"}},
            "spec.recording.preRoll",
            "only allowed with recording.mode: events",
        ),
        (
            {**GOOD, "recording": {"mode": "events", "postRoll": "10"}},
            "spec.recording.postRoll",
            "should match",
        ),
    ],
)
def test_bad_camera_is_refused_naming_the_field(
    kube: KubeCluster,
    camera_crd: Path,
    namespace: str,
    spec: dict[str, Any],
    field: str,
    words: str,
) -> None:
    result = kube.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("bad", spec), check=False
    )
    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def test_long_name_is_refused(kube: KubeCluster, camera_crd: Path, namespace: str) -> None:
    result = kube.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("c" * 53, GOOD), check=False
    )
    assert result.returncode != 0
    assert "metadata.name" in result.stderr


def test_defaults_are_filled_by_the_api_server(
    kube: KubeCluster, camera_crd: Path, namespace: str
) -> None:
    spec = {
        "source": {"url": "rtsps://cam.local/s?token=a@b", "credentialsSecretRef": {"name": "c"}}
    }
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("door", spec))
    got = json.loads(kube.kubectl("get", "cam", "door", "-n", namespace, "-o", "json").stdout)
    assert got["spec"] == {
        "source": {
            "url": "rtsps://cam.local/s?token=a@b",
            "credentialsSecretRef": {
                "name": "c",
                "usernameKey": "username",
                "passwordKey": "password",
            },
            "transport": "tcp",
        },
        "stream": {"mode": "auto", "audio": "off"},
        "enabled": True,
        "onDemand": False,
        "ingest": {},
        "recording": {"mode": "off", "retention": "7d", "onDelete": "keep"},
    }


def test_kubectl_columns_short_name_and_category(
    kube: KubeCluster, camera_crd: Path, namespace: str
) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("door", GOOD))
    header = kube.kubectl("get", "cam", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "ROOM", "CODEC", "AGE"]
    listed = kube.kubectl("get", "camfleet", "-n", namespace, "-o", "name").stdout
    assert "camera.camfleet.io/door" in listed


def test_status_is_a_subresource(kube: KubeCluster, camera_crd: Path, namespace: str) -> None:
    """A spec write cannot smuggle status in: status only changes through /status."""
    body = yaml.safe_load(manifest("door", GOOD))
    body["status"] = {"phase": "Live"}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body))
    got = json.loads(kube.kubectl("get", "cam", "door", "-n", namespace, "-o", "json").stdout)
    assert "status" not in got


def test_example_camera_is_accepted(kube: KubeCluster, camera_crd: Path, namespace: str) -> None:
    docs = list(yaml.safe_load_all((repo_root() / "examples" / "camera.yaml").read_text()))
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    got = json.loads(kube.kubectl("get", "cam", "front-door", "-n", namespace, "-o", "json").stdout)
    assert CameraSpec.model_validate(got["spec"]).source.credentials_secret_ref is not None
