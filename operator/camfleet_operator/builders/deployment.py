"""The ingest Deployment: one pod per camera pulling RTSP and publishing into LiveKit."""

from typing import Any

from camfleet import ingest_contract as ic
from camfleet.camera import Camera, Resources
from camfleet_operator import constants as c
from camfleet_operator.builders.meta import (
    content_hash,
    labels,
    owner_reference,
    selector_labels,
    stamp,
)
from camfleet_operator.model import IngestDefaults

# The ingest image's non-root user; fsGroup lets it read the 0440 token file.
INGEST_UID = 10001  # the user the camfleet images run as (images/*/Dockerfile)
TOKEN_FILE_MODE = 0o440
RECORDING_VOLUME = "recordings"


def records(camera: Camera, defaults: IngestDefaults) -> bool:
    """The Camera asks for recording and the operator has a store to record into.

    Only `continuous` so far: `events` is in the contract but not implemented (the Camera's
    Recording condition says so), so it records nothing and leaves the ingest on demand.
    """
    return camera.spec.recording.mode == "continuous" and defaults.recording is not None


def desired_replicas(
    camera: Camera, *, has_viewer: bool, defaults: IngestDefaults | None = None
) -> int:
    """1 while the ingest should run; 0 when disabled, or on-demand with nobody watching.

    A Camera that records runs continuously even when on-demand: the recording needs the pull
    whether anyone watches or not.
    """
    if not camera.spec.enabled:
        return 0
    if camera.spec.on_demand and not has_viewer:
        return 1 if defaults is not None and records(camera, defaults) else 0
    return 1


def spec_hash(camera: Camera, defaults: IngestDefaults) -> str:
    """Digest of everything the pod is built from; a change rolls the ingest."""
    spec = camera.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    base = defaults.model_dump(mode="json")
    # Fields added later leave the hash of a Camera that does not use them as it was, so an
    # upgrade of the operator does not roll every ingest.
    if not records(camera, defaults):
        spec.pop("recording", None)
        base.pop("recording", None)
    return content_hash({"spec": spec, "defaults": base})


def _quantities(values: dict[str, int | str] | None) -> dict[str, str] | None:
    return {k: str(v) for k, v in sorted(values.items())} if values else None


def _resources(camera: Camera, defaults: IngestDefaults) -> dict[str, Any]:
    chosen: Resources = camera.spec.ingest.resources or defaults.resources
    out: dict[str, Any] = {}
    if requests := _quantities(chosen.requests):
        out["requests"] = requests
    if limits := _quantities(chosen.limits):
        out["limits"] = limits
    return out


def _env(camera: Camera, defaults: IngestDefaults) -> list[dict[str, Any]]:
    p = ic.ENV_PREFIX
    spec = camera.spec
    env: list[dict[str, Any]] = [
        {"name": f"{p}CAMERA", "value": camera.ref},
        {"name": f"{p}SOURCE_URL", "value": spec.source.url},
    ]
    if ref := spec.source.credentials_secret_ref:
        # secretKeyRef keeps credentials out of the pod spec, process arguments and logs.
        for var, key in (("USERNAME", ref.username_key), ("PASSWORD", ref.password_key)):
            env.append(
                {
                    "name": f"{p}SOURCE_{var}",
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}},
                }
            )
    env += [
        {"name": f"{p}TRANSPORT", "value": spec.source.transport},
        {"name": f"{p}MODE", "value": spec.stream.mode},
        {"name": f"{p}AUDIO", "value": spec.stream.audio_choice},
    ]
    if spec.stream.max_bitrate_kbps is not None:
        env.append({"name": f"{p}MAX_BITRATE_KBPS", "value": str(spec.stream.max_bitrate_kbps)})
    env += _recording_env(camera, defaults)
    env += [
        {"name": f"{p}LIVEKIT_URL", "value": defaults.livekit_url},
        {"name": f"{p}ROOM", "value": camera.room},
        # A file, not an env var: the operator rotates the token in place and the ingest re-reads
        # it at every (re)connect without a restart.
        {"name": f"{p}TOKEN_FILE", "value": ic.TOKEN_FILE},
        # Spelled out although they are the ingest's defaults: the probes and the termination
        # message depend on them, and a node-less runner (camfleet up) remaps both per pod.
        {"name": f"{p}HTTP_PORT", "value": str(ic.PORT)},
        # Announced with the snapshot address, so the gateway can fetch the camera's still.
        {"name": f"{p}ADVERTISE_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": f"{p}TERMINATION_LOG", "value": ic.TERMINATION_LOG},
    ]
    return env


def _recording_env(camera: Camera, defaults: IngestDefaults) -> list[dict[str, Any]]:
    store = defaults.recording
    if store is None or not records(camera, defaults):
        return []
    p = ic.ENV_PREFIX
    spec = camera.spec.recording
    env: list[dict[str, Any]] = [
        {"name": p + ic.ENV_RECORDING_MODE, "value": spec.mode},
        {"name": p + ic.ENV_RECORDING_RETENTION, "value": spec.retention},
    ]
    if spec.pre_roll is not None:
        env.append({"name": p + ic.ENV_RECORDING_PRE_ROLL_S, "value": spec.pre_roll[:-1]})
    if spec.post_roll is not None:
        env.append({"name": p + ic.ENV_RECORDING_POST_ROLL_S, "value": spec.post_roll[:-1]})
    env.append({"name": p + ic.ENV_RECORDING_STORE_URL, "value": store.store_url})
    secret_keys = [(ic.ENV_RECORDING_INDEX_DSN, ic.SECRET_INDEX_DSN)]
    if store.store_url.startswith("s3:"):
        if store.s3_endpoint:
            env.append({"name": p + ic.ENV_RECORDING_S3_ENDPOINT, "value": store.s3_endpoint})
        env.append({"name": p + ic.ENV_RECORDING_S3_REGION, "value": store.s3_region})
        secret_keys += [
            (ic.ENV_RECORDING_S3_ACCESS_KEY_ID, ic.SECRET_S3_ACCESS_KEY_ID),
            (ic.ENV_RECORDING_S3_SECRET_ACCESS_KEY, ic.SECRET_S3_SECRET_ACCESS_KEY),
        ]
    # Credentials by secretKeyRef from the camera's own Secret (the operator copies them there:
    # a pod can only mount Secrets of its namespace).
    env += [
        {"name": p + var, "valueFrom": {"secretKeyRef": {"name": camera.secret_name, "key": key}}}
        for var, key in secret_keys
    ]
    return env


def _probe(*, initial_delay: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": ic.HEALTH_PATH, "port": ic.PORT_NAME},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(camera: Camera, defaults: IngestDefaults) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": c.INGEST_CONTAINER,
        "image": camera.spec.ingest.image or defaults.image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": list(ic.COMMAND),
        "env": _env(camera, defaults),
        "ports": [{"name": ic.PORT_NAME, "containerPort": ic.PORT, "protocol": "TCP"}],
        # Readiness follows frames flowing, within seconds: its changes wake the Camera's status
        # pass (the ingest turns unready at once on a failure; two probes guard against one
        # slow answer). Liveness is lenient so a camera blip (which the ingest handles with its
        # own backoff) does not become a pod restart.
        "readinessProbe": _probe(initial_delay=1, period=2, failures=2),
        "livenessProbe": _probe(initial_delay=20, period=10, failures=6),
        "terminationMessagePath": ic.TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": c.TOKEN_VOLUME, "mountPath": ic.TOKEN_MOUNT_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if resources := _resources(camera, defaults):
        container["resources"] = resources
    if (claim := _recording_claim(camera, defaults)) is not None:
        container["volumeMounts"].append({"name": RECORDING_VOLUME, "mountPath": claim[1]})
    return container


def _recording_claim(camera: Camera, defaults: IngestDefaults) -> tuple[str, str] | None:
    """(claim, mount path) of a file:// store on a PersistentVolumeClaim, when recording."""
    store = defaults.recording
    if store is None or not records(camera, defaults) or store.volume_claim is None:
        return None
    if not store.store_url.startswith("file://"):
        return None
    return store.volume_claim, store.store_url.removeprefix("file://")


def build_deployment(camera: Camera, defaults: IngestDefaults, *, replicas: int) -> dict[str, Any]:
    """The desired ingest Deployment for `camera`, scaled to `replicas` (see desired_replicas)."""
    pod_spec: dict[str, Any] = {
        "containers": [_container(camera, defaults)],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 15,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": INGEST_UID,
            "runAsGroup": INGEST_UID,
            "fsGroup": INGEST_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {
                "name": c.TOKEN_VOLUME,
                "secret": {
                    "secretName": camera.secret_name,
                    "items": [{"key": ic.TOKEN_KEY, "path": ic.TOKEN_KEY}],
                    "defaultMode": TOKEN_FILE_MODE,
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if (claim := _recording_claim(camera, defaults)) is not None:
        pod_spec["volumes"].append(
            {"name": RECORDING_VOLUME, "persistentVolumeClaim": {"claimName": claim[0]}}
        )
    if camera.spec.ingest.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(camera.spec.ingest.node_selector.items()))
    if camera.spec.ingest.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in camera.spec.ingest.tolerations
        ]
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": camera.deployment_name,
            "namespace": camera.namespace,
            "labels": labels(camera),
            "ownerReferences": [owner_reference(camera)],
        },
        "spec": {
            "replicas": replicas,
            # Recreate: a camera must never see two RTSP pulls, not even during a rollout.
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector_labels(camera)},
            "template": {
                "metadata": {
                    "labels": labels(camera),
                    "annotations": {c.ANN_SPEC_HASH: spec_hash(camera, defaults)},
                },
                "spec": pod_spec,
            },
        },
    }
    return stamp(deployment)
