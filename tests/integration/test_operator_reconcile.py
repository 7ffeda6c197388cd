"""The operator against the real kube-apiserver (+ controller-manager) and a real livekit-server.

The operator runs as a subprocess (`python -m camfleet_operator`) exactly as in a cluster,
configured through `CAMFLEET_*` env. Each operator serves only Cameras carrying its shard label,
so several can share the session's cluster. No kubelet runs: ingest pods are created by the
ReplicaSet controller but never start, so the honest phase here is Pending.
"""

import asyncio
import base64
import json
import os
import secrets
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import yaml
from livekit import api, rtc

from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.process import ManagedProcess, free_port, http_ok
from camfleet_operator import kube as paths
from camfleet_operator.kube import Kube, KubeError

INTERVAL = 2.0  # the operator's reconcile interval in these tests
T = TypeVar("T")


class Operator:
    """One `python -m camfleet_operator` process serving the Cameras labelled with its shard."""

    def __init__(
        self, kube: KubeCluster, livekit: LiveKitServer, workdir: Path, **overrides: str
    ) -> None:
        self.shard = f"s{secrets.token_hex(3)}"
        self.health_port = free_port()
        self.metrics_port = free_port()
        secret_file = workdir / "livekit-secret"
        secret_file.write_text(livekit.api_secret + "\n")
        env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "CAMFLEET_LIVEKIT_URL": livekit.url,
            "CAMFLEET_LIVEKIT_API_KEY": livekit.api_key,
            "CAMFLEET_LIVEKIT_API_SECRET_FILE": str(secret_file),
            "CAMFLEET_LIVEKIT_TIMEOUT_SECONDS": "5",
            "CAMFLEET_SHARD_SELECTOR": f"camfleet.io/shard={self.shard}",
            "CAMFLEET_RECONCILE_INTERVAL_SECONDS": str(INTERVAL),
            "CAMFLEET_TRANSIENT_RETRY_DELAY_SECONDS": "1",
            "CAMFLEET_DELETE_RETRIES": "2",
            "CAMFLEET_DELETE_RETRY_DELAY_SECONDS": "0.5",
            "CAMFLEET_INGEST_IMAGE": "camfleet/ingest:test",
            "CAMFLEET_METRICS_PORT": str(self.metrics_port),
            "CAMFLEET_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.health_port}/healthz",
            **overrides,
        }
        self.proc = ManagedProcess(
            f"operator-{self.shard}",
            [sys.executable, "-m", "camfleet_operator"],
            log_dir=workdir,
            env=env,
        )

    def start(self) -> None:
        self.proc.start()
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        self.proc.wait_until(lambda: http_ok(url), 30, "liveness endpoint")

    def stop(self) -> None:
        self.proc.stop()

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 20.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail with what was last seen."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached in {within}s (last: {last!r})")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(kube: KubeCluster) -> AsyncIterator[Kube]:
    k = await Kube.connect(kubeconfig=str(kube.kubeconfig))
    yield k
    await k.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lk(livekit_server: LiveKitServer) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret, failover=False
    )
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def operator(
    kube: KubeCluster,
    camera_crd: Path,
    livekit_server: LiveKitServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    # TTL 120 s with a 110 s margin: tokens rotate about 10 s after minting, observable here.
    op = Operator(
        kube,
        livekit_server,
        tmp_path_factory.mktemp("operator"),
        CAMFLEET_TOKEN_TTL_SECONDS="120",
        CAMFLEET_TOKEN_ROTATION_MARGIN_SECONDS="110",
    )
    op.start()
    yield op
    op.stop()


def camera_body(name: str, shard: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "camfleet.io/v1alpha1",
        "kind": "Camera",
        "metadata": {"name": name, "labels": {"camfleet.io/shard": shard}},
        "spec": {"source": {"url": "rtsp://10.0.0.7:554/stream1"}, **spec},
    }


def cameras(ns: str, name: str | None = None) -> str:
    base = f"/apis/camfleet.io/v1alpha1/namespaces/{ns}/cameras"
    return f"{base}/{name}" if name else base


async def room_names(lk: api.LiveKitAPI) -> list[str]:
    return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]


def conditions(cam: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        c["type"]: (c["status"], c["reason"])
        for c in (cam.get("status") or {}).get("conditions") or []
    }


def events(kube: KubeCluster, ns: str, reason: str) -> list[dict[str, Any]]:
    out = kube.kubectl(
        "get", "events", "-n", ns, "--field-selector", f"reason={reason}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


async def test_camera_gets_deployment_secret_room_and_honest_status(
    operator: Operator,
    client: Kube,
    lk: api.LiveKitAPI,
    livekit_server: LiveKitServer,
    kube: KubeCluster,
    namespace: str,
) -> None:
    ns = namespace
    spec = {"source": {"url": "rtsp://10.0.0.7/s", "credentialsSecretRef": {"name": "creds"}}}
    await client.create(cameras(ns), camera_body("door", operator.shard, **spec))

    dep = await eventually(
        lambda: client.get(paths.deployments(ns, "door-ingest")), what="Deployment"
    )
    secret = await eventually(
        lambda: client.get(paths.secrets(ns, "door-livekit-token")), what="Secret"
    )
    cam = await client.get(cameras(ns, "door"))
    assert cam is not None
    uid = cam["metadata"]["uid"]
    for child in (dep, secret):
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("Camera", uid, True)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CAMFLEET_INGEST_ROOM"] == f"{ns}-door"
    assert env["CAMFLEET_INGEST_LIVEKIT_URL"] == livekit_server.url
    assert env["CAMFLEET_INGEST_CAMERA"] == f"{ns}/door"

    # The token is one livekit-server's own verifier accepts, for this room and identity only.
    token = base64.b64decode(secret["data"]["token"]).decode()
    claims = api.TokenVerifier(livekit_server.api_key, livekit_server.api_secret).verify(token)
    assert claims.identity == f"ingest-{ns}-door"
    assert claims.video is not None
    assert claims.video.room == f"{ns}-door"
    assert claims.video.room_join
    assert claims.video.can_publish
    assert not claims.video.can_subscribe
    assert f"{ns}-door" in await room_names(lk)

    async def pending() -> dict[str, Any] | None:
        got = await client.get(cameras(ns, "door"))
        return got if got and (got.get("status") or {}).get("phase") == "Pending" else None

    cam = await eventually(pending, what="phase Pending")
    status = cam["status"]
    assert status["observedGeneration"] == cam["metadata"]["generation"]
    assert status["room"] == f"{ns}-door"
    assert conditions(cam) == {
        "SourceReachable": ("Unknown", "IngestPending"),
        "Publishing": ("False", "NotPublishing"),
        "Ready": ("False", "IngestPending"),
    }
    assert "kopf" not in status  # status holds only the Camera's API contract
    assert "creds" not in json.dumps(status)
    # The ReplicaSet controller made a pod; without a kubelet it never runs, and we do not lie.
    pods = await client.list(paths.pods(ns), label_selector="camfleet.io/camera=door")
    assert pods
    assert all(p["status"].get("phase") == "Pending" for p in pods)
    changes = [e for e in events(kube, ns, "PhaseChanged") if e["involvedObject"]["name"] == "door"]
    assert [e["message"].split(":")[0] for e in changes] == ["New -> Pending"]
    assert [e.get("count", 1) for e in changes] == [1], "each transition is posted once"
    assert {e["type"] for e in changes} == {"Normal"}
    described = kube.kubectl("describe", "cam", "door", "-n", ns).stdout
    assert "IngestPending" in described
    assert "PhaseChanged" in described

    # Status is written only when it changes: timer passes over an unchanged world write nothing.
    version = cam["metadata"]["resourceVersion"]
    await asyncio.sleep(2.5 * INTERVAL)
    again = await client.get(cameras(ns, "door"))
    assert again is not None
    assert again["metadata"]["resourceVersion"] == version, {
        key: (cam.get(key), again.get(key))
        for key in ("status", "spec")
        if cam.get(key) != again.get(key)
    } or [f["manager"] for f in again["metadata"].get("managedFields", [])]

    metrics = await asyncio.to_thread(
        urllib.request.urlopen, f"http://127.0.0.1:{operator.metrics_port}/metrics"
    )
    text = metrics.read().decode()
    assert 'camfleet_cameras{phase="Pending"}' in text
    assert "camfleet_reconcile_duration_seconds_count" in text
    assert 'camfleet_livekit_api_duration_seconds_count{method="CreateRoom",outcome="ok"}' in text


async def test_spec_update_rolls_the_ingest_and_is_observed(
    operator: Operator, client: Kube, namespace: str
) -> None:
    ns = namespace
    await client.create(cameras(ns), camera_body("door", operator.shard))
    first = await eventually(lambda: client.get(paths.deployments(ns, "door-ingest")))
    old_hash = first["spec"]["template"]["metadata"]["annotations"]["camfleet.io/spec-hash"]

    await client.merge_patch(
        cameras(ns, "door"),
        {"spec": {"source": {"url": "rtsp://10.0.0.9/other"}, "stream": {"mode": "transcode"}}},
    )

    async def rolled() -> dict[str, Any] | None:
        dep = await client.get(paths.deployments(ns, "door-ingest"))
        annotations = dep["spec"]["template"]["metadata"]["annotations"] if dep else {}
        return dep if dep and annotations["camfleet.io/spec-hash"] != old_hash else None

    dep = await eventually(rolled, what="new pod template")
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["CAMFLEET_INGEST_SOURCE_URL"] == "rtsp://10.0.0.9/other"
    assert env["CAMFLEET_INGEST_MODE"] == "transcode"
    assert dep["metadata"]["uid"] == first["metadata"]["uid"]  # patched, not replaced

    async def observed() -> bool:
        cam = await client.get(cameras(ns, "door"))
        assert cam is not None
        return bool(
            (cam.get("status") or {}).get("observedGeneration")
            == cam["metadata"]["generation"]
            == 2
        )

    await eventually(observed, what="observedGeneration 2")


async def test_hand_deleted_children_are_recreated(
    operator: Operator, client: Kube, namespace: str
) -> None:
    ns = namespace
    await client.create(cameras(ns), camera_body("door", operator.shard))
    dep = await eventually(lambda: client.get(paths.deployments(ns, "door-ingest")))
    sec = await eventually(lambda: client.get(paths.secrets(ns, "door-livekit-token")))
    await client.delete(paths.deployments(ns, "door-ingest"))
    await client.delete(paths.secrets(ns, "door-livekit-token"))

    async def recreated(path: str, old_uid: str) -> dict[str, Any] | None:
        got = await client.get(path)
        return got if got and got["metadata"]["uid"] != old_uid else None

    # Within one reconcile interval, plus the pass itself on a busy 2-core machine.
    path_d, path_s = paths.deployments(ns, "door-ingest"), paths.secrets(ns, "door-livekit-token")
    await eventually(lambda: recreated(path_d, dep["metadata"]["uid"]), within=2 * INTERVAL + 4)
    await eventually(lambda: recreated(path_s, sec["metadata"]["uid"]), within=2 * INTERVAL + 4)


async def test_hand_scaling_is_reverted(operator: Operator, client: Kube, namespace: str) -> None:
    """Never two RTSP sessions on one camera: a `kubectl scale --replicas=3` is undone."""
    ns = namespace
    await client.create(cameras(ns), camera_body("door", operator.shard))
    await eventually(lambda: client.get(paths.deployments(ns, "door-ingest")))
    await client.merge_patch(paths.deployments(ns, "door-ingest"), {"spec": {"replicas": 3}})

    async def back_to_one() -> bool:
        dep = await client.get(paths.deployments(ns, "door-ingest"))
        return bool(dep and dep["spec"]["replicas"] == 1)

    await eventually(back_to_one, within=3 * INTERVAL + 5, what="replicas back to 1")


async def test_enabled_false_scales_to_zero_and_stops(
    operator: Operator, client: Kube, namespace: str
) -> None:
    ns = namespace
    await client.create(cameras(ns), camera_body("door", operator.shard))
    await eventually(lambda: client.get(paths.deployments(ns, "door-ingest")))
    await client.merge_patch(cameras(ns, "door"), {"spec": {"enabled": False}})

    async def scaled() -> bool:
        dep = await client.get(paths.deployments(ns, "door-ingest"))
        return bool(dep and dep["spec"]["replicas"] == 0)

    await eventually(scaled, what="replicas 0")

    async def stopped() -> dict[str, Any] | None:
        cam = await client.get(cameras(ns, "door"))
        return cam if cam and (cam.get("status") or {}).get("phase") == "Stopped" else None

    cam = await eventually(stopped, what="phase Stopped")
    assert conditions(cam)["Ready"] == ("False", "Paused")


async def test_on_demand_runs_only_while_someone_watches(
    operator: Operator, client: Kube, livekit_server: LiveKitServer, namespace: str
) -> None:
    ns = namespace
    await client.create(cameras(ns), camera_body("door", operator.shard, onDemand=True))

    async def replicas(n: int) -> dict[str, Any] | None:
        dep = await client.get(paths.deployments(ns, "door-ingest"))
        return dep if dep and dep["spec"]["replicas"] == n else None

    async def ready_reason(reason: str) -> dict[str, Any] | None:
        cam = await client.get(cameras(ns, "door"))
        return cam if cam and conditions(cam).get("Ready", ("", ""))[1] == reason else None

    await eventually(lambda: replicas(0), what="idle on-demand ingest at 0 replicas")
    cam = await eventually(lambda: ready_reason("WaitingForViewer"), what="WaitingForViewer")
    assert cam["status"]["phase"] == "Stopped"

    # A real viewer joins the room through livekit-server's signalling.
    token = livekit_server.token(f"{ns}-door", "viewer-1")
    viewer = rtc.Room()
    await viewer.connect(livekit_server.url, token)
    try:
        await eventually(lambda: replicas(1), within=3 * INTERVAL + 5, what="ingest started")
        await eventually(lambda: ready_reason("IngestPending"), what="phase back to Pending")
    finally:
        await viewer.disconnect()
    await eventually(lambda: replicas(0), within=3 * INTERVAL + 5, what="ingest stopped again")


async def test_token_is_rotated_before_expiry(
    operator: Operator, client: Kube, namespace: str
) -> None:
    ns = namespace
    await client.create(cameras(ns), camera_body("door", operator.shard))
    first = await eventually(lambda: client.get(paths.secrets(ns, "door-livekit-token")))
    expires = int(first["metadata"]["annotations"]["camfleet.io/token-expires-at"])
    assert expires - time.time() > 100

    async def rotated() -> dict[str, Any] | None:
        got = await client.get(paths.secrets(ns, "door-livekit-token"))
        later = int(got["metadata"]["annotations"]["camfleet.io/token-expires-at"]) if got else 0
        return got if got and later > expires else None

    second = await eventually(rotated, within=25, what="token rotation")
    assert second["data"]["token"] != first["data"]["token"]
    assert second["metadata"]["uid"] == first["metadata"]["uid"]  # updated in place


async def test_child_conflict_is_reported_never_adopted(
    operator: Operator, client: Kube, kube: KubeCluster, namespace: str
) -> None:
    ns = namespace
    foreign = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "door-livekit-token", "namespace": ns},
        "stringData": {"token": "someone else's"},
    }
    await client.create(paths.secrets(ns), foreign)
    await client.create(cameras(ns), camera_body("door", operator.shard))

    async def conflicted() -> dict[str, Any] | None:
        cam = await client.get(cameras(ns, "door"))
        return cam if cam and conditions(cam).get("Ready") == ("False", "ChildConflict") else None

    cam = await eventually(conflicted, what="ChildConflict")
    assert "door-livekit-token" in cam["status"]["lastError"]
    secret = await client.get(paths.secrets(ns, "door-livekit-token"))
    assert secret is not None
    assert not secret["metadata"].get("ownerReferences")
    assert await client.get(paths.deployments(ns, "door-ingest")) is None
    warnings = await eventually(lambda: asyncio.to_thread(events, kube, ns, "ChildConflict"))
    assert warnings[0]["type"] == "Warning"


async def test_delete_removes_children_and_room(
    operator: Operator, client: Kube, lk: api.LiveKitAPI, namespace: str
) -> None:
    ns = namespace
    await client.create(cameras(ns), camera_body("door", operator.shard, room=f"{ns}-lobby"))
    await eventually(lambda: client.get(paths.secrets(ns, "door-livekit-token")))
    await eventually(lambda: client.get(paths.deployments(ns, "door-ingest")))
    assert f"{ns}-lobby" in await room_names(lk)

    await client.delete(cameras(ns, "door"))

    async def gone() -> bool:
        return all(
            [
                await client.get(cameras(ns, "door")) is None,
                await client.get(paths.deployments(ns, "door-ingest")) is None,
                await client.get(paths.secrets(ns, "door-livekit-token")) is None,
                f"{ns}-lobby" not in await room_names(lk),
            ]
        )

    await eventually(gone, what="Camera, children and room gone")


async def test_operator_restart_converges_without_duplicates(
    kube: KubeCluster,
    camera_crd: Path,
    livekit_server: LiveKitServer,
    client: Kube,
    lk: api.LiveKitAPI,
    namespace: str,
    tmp_path: Path,
) -> None:
    ns = namespace
    op = Operator(kube, livekit_server, tmp_path)
    op.start()
    try:
        names = [f"cam{i}" for i in range(6)]
        for name in names[:4]:
            await client.create(cameras(ns), camera_body(name, op.shard))
        await eventually(lambda: client.get(paths.deployments(ns, "cam0-ingest")))
        op.proc.kill()  # a crash, mid-way through the batch
        for name in names[4:]:
            await client.create(cameras(ns), camera_body(name, op.shard))
        await client.delete(cameras(ns, "cam1"))  # deleted while nobody serves it
        op.start()

        async def converged() -> bool:
            for name in names:
                cam = await client.get(cameras(ns, name))
                if name == "cam1":
                    if cam is not None:
                        return False
                    continue
                status = (cam or {}).get("status") or {}
                if status.get("observedGeneration") != 1 or status.get("phase") != "Pending":
                    return False
                if await client.get(paths.deployments(ns, f"{name}-ingest")) is None:
                    return False
            return True

        await eventually(converged, within=30, what="all Cameras converged")
        rooms = [r for r in await room_names(lk) if r.startswith(f"{ns}-")]
        assert sorted(rooms) == sorted(f"{ns}-{n}" for n in names if n != "cam1")
        deployments = await client.list(
            paths.deployments(ns), label_selector="app.kubernetes.io/name=camfleet-ingest"
        )
        assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
            f"{n}-ingest" for n in names if n != "cam1"
        )
        for name in names:
            if name != "cam1":
                await client.delete(cameras(ns, name))
        await eventually(lambda: _none_left(client, ns), what="cleanup")
    finally:
        op.stop()


async def _none_left(client: Kube, ns: str) -> bool:
    return not await client.list(cameras(ns), label_selector="camfleet.io/shard")


async def test_livekit_down_during_delete_still_deletes_with_warning(
    operator: Operator,
    client: Kube,
    kube: KubeCluster,
    livekit_server: LiveKitServer,
    lk: api.LiveKitAPI,
    namespace: str,
) -> None:
    ns = namespace
    await client.create(cameras(ns), camera_body("door", operator.shard))
    await eventually(lambda: client.get(paths.deployments(ns, "door-ingest")))
    assert f"{ns}-door" in await room_names(lk)
    livekit_server.stop()
    try:
        await client.delete(cameras(ns, "door"))

        async def gone() -> bool:
            return await client.get(cameras(ns, "door")) is None

        await eventually(gone, within=30, what="Camera deleted despite LiveKit down")
        warning = await eventually(
            lambda: asyncio.to_thread(events, kube, ns, "CleanupIncomplete"), what="Warning Event"
        )
        assert warning[0]["type"] == "Warning"
        assert f"{ns}-door" in warning[0]["message"]
        assert await client.get(paths.deployments(ns, "door-ingest")) is None
    finally:
        livekit_server.start()
    # JSON logs, each line naming its Camera when it is about one; no secret anywhere.
    lines = [json.loads(line) for line in operator.log().splitlines() if line.strip()]
    about_door = [x for x in lines if (x.get("object") or {}).get("name") == "door"]
    assert about_door
    assert livekit_server.api_secret not in operator.log()


async def test_camera_stored_before_the_url_rules_is_failed_malformed_url(
    operator: Operator, client: Kube, kube: KubeCluster, camera_crd: Path, namespace: str
) -> None:
    """A Camera that slipped in before the CRD refused control characters (an older CRD) is
    Failed/MalformedURL with the field named, never Degraded/Unreachable as if the network
    were down; no ingest is left running for it; a fixed spec recovers."""
    crd = yaml.safe_load(await asyncio.to_thread(camera_crd.read_text))
    url = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["source"]["properties"]["url"]
    url["x-kubernetes-validations"] = [
        rule for rule in url["x-kubernetes-validations"] if "Cc" not in rule["rule"]
    ]
    kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(crd)
    )
    try:
        body = camera_body("gate", operator.shard)
        body["spec"]["source"]["url"] = "rtsp://10.0.0.7/s\nX-Injected: 1"
        created = await eventually(
            lambda: _try_create(client, cameras(namespace), body), what="lax CRD in force"
        )
        assert created
    finally:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(camera_crd))

    async def failed() -> dict[str, Any] | None:
        got = await client.get(cameras(namespace, "gate"))
        return got if got and (got.get("status") or {}).get("phase") == "Failed" else None

    cam = await eventually(failed, what="phase Failed")
    assert conditions(cam)["Ready"] == ("False", "MalformedURL")
    assert cam["status"]["lastError"].startswith("MalformedURL: spec.source.url: must not contain")
    assert "X-Injected" not in json.dumps(cam["status"])  # the value itself is not echoed
    assert await client.get(paths.deployments(namespace, "gate-ingest")) is None
    warnings = events(kube, namespace, "MalformedURL")
    assert [e["type"] for e in warnings] == ["Warning"]

    # The owner fixes it: the Camera is reconciled normally (Pending: no kubelet here).
    await client.merge_patch(
        cameras(namespace, "gate"), {"spec": {"source": {"url": "rtsp://10.0.0.7/s"}}}
    )

    async def pending() -> dict[str, Any] | None:
        got = await client.get(cameras(namespace, "gate"))
        return got if got and (got.get("status") or {}).get("phase") == "Pending" else None

    await eventually(pending, what="phase Pending after the fix")
    assert await client.get(paths.deployments(namespace, "gate-ingest")) is not None


async def _try_create(client: Kube, path: str, body: dict[str, Any]) -> bool | None:
    """Create, or None while the API server still applies the previous CRD's rules."""
    try:
        await client.create(path, body)
    except KubeError as exc:
        if "control characters" in str(exc):
            return None
        raise
    return True
