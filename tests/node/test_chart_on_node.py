"""charts/camfleet installed with `helm install` on the real node, and a Camera through it.

Everything here runs as a user runs it: the chart's Deployments from the images setup built
(pullPolicy Never), the operator's ingest pods from the ingest image, the pods' own
ServiceAccounts and the chart's Roles, Redis and livekit-server as pods, the camera on the host.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from typing import Any

import pytest
from livekit import api
from nodekit import (
    CAMERAS_NS,
    INFRA_NS,
    LIVEKIT_KEY,
    RELEASE_NS,
    Release,
    get_json,
    wait_for,
)

from camfleet_dev.testbed.node import NodeCluster
from camfleet_dev.testbed.tools import tool


def camera_manifest(name: str, url: str, namespace: str = CAMERAS_NS, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "camfleet.io/v1alpha1",
            "kind": "Camera",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"source": {"url": url}, **spec},
        }
    )


def phase(node: NodeCluster, name: str, namespace: str = CAMERAS_NS) -> str:
    out = node.kubectl(
        "get", "camera", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False
    )
    return out.stdout.strip()


def wait_live(node: NodeCluster, name: str, within: float = 120, ns: str = CAMERAS_NS) -> float:
    t0 = time.monotonic()
    wait_for(lambda: phase(node, name, ns) == "Live", within, f"Camera {ns}/{name} Live", 0.2)
    return time.monotonic() - t0


def ingest_pods(node: NodeCluster, name: str, namespace: str = CAMERAS_NS) -> list[dict[str, Any]]:
    return node.pods(namespace, f"camfleet.io/camera={name}")


def running_ingest_pod(node: NodeCluster, name: str, ns: str = CAMERAS_NS) -> dict[str, Any]:
    def one() -> dict[str, Any] | None:
        pods = [p for p in ingest_pods(node, name, ns) if p["status"].get("phase") == "Running"]
        return pods[0] if len(pods) == 1 else None

    pod: dict[str, Any] = wait_for(one, 90, f"one running ingest pod of {name}")
    return pod


def test_helm_install_brings_the_operator_and_gateway_up(node_release: Release) -> None:
    node = node_release.node
    assert "STATUS: deployed" in node_release.install_output
    for name, replicas in (("camfleet-operator", 1), ("camfleet-gateway", 2)):
        dep = get_json(node, "deployment", name, "-n", RELEASE_NS)
        assert dep["status"].get("readyReplicas") == replicas, dep["status"]
    pods = get_json(node, "pods", "-n", RELEASE_NS)["items"]
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert images == {
        f"{node.registry}/camfleet-operator:{node.release_tag}",
        f"{node.registry}/camfleet-gateway:{node.release_tag}",
    }
    for pod in pods:
        # The chart's own ServiceAccounts (and so its Roles), never the namespace default.
        assert pod["spec"]["serviceAccountName"] in ("camfleet-operator", "camfleet-gateway")
        for c in pod["spec"]["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert all(s["ready"] for s in pod["status"]["containerStatuses"])


def test_camera_goes_live_in_an_ingest_pod_from_the_ingest_image(node_release: Release) -> None:
    node, camera = node_release.node, node_release.camera
    node.apply(camera_manifest("lobby", camera.url("h264")))
    wait_live(node, "lobby")
    pod = running_ingest_pod(node, "lobby")
    container = pod["spec"]["containers"][0]
    assert container["image"] == f"{node.registry}/camfleet-ingest:{node.release_tag}"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Inside the container: a non-root user and a root filesystem that refuses writes.
    name = pod["metadata"]["name"]
    uid = node.kubectl("exec", "-n", CAMERAS_NS, name, "--", "id", "-u").stdout.strip()
    assert uid != "0"
    denied = node.kubectl("exec", "-n", CAMERAS_NS, name, "--", "touch", "/x", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    # One RTSP session at the camera: the ingest's.
    assert camera.sessions("h264") == 1
    status = get_json(node, "camera", "lobby", "-n", CAMERAS_NS)["status"]
    assert status["codec"].lower().startswith("h264")


def test_ingest_container_killed_is_restarted_and_live_again(node_release: Release) -> None:
    node, camera = node_release.node, node_release.camera
    node.apply(camera_manifest("killed", camera.url("h264")))
    wait_live(node, "killed")
    pod = running_ingest_pod(node, "killed")
    before = pod["status"]["containerStatuses"][0]["restartCount"]
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    node.crictl("stop", "--timeout", "0", cid)

    def restarted() -> bool:
        pods = ingest_pods(node, "killed")
        return bool(pods) and pods[0]["status"]["containerStatuses"][0]["restartCount"] > before

    wait_for(restarted, 60, "the kubelet restarts the ingest container")
    wait_live(node, "killed", 90)
    node.kubectl("delete", "camera", "killed", "-n", CAMERAS_NS, "--wait=true", timeout=120)


def test_operator_pod_deleted_is_recreated_without_duplicates(node_release: Release) -> None:
    node, camera = node_release.node, node_release.camera
    node.apply(camera_manifest("steady", camera.url("h264")))
    wait_live(node, "steady")
    old = node.pods(RELEASE_NS, "app.kubernetes.io/component=operator")
    assert len(old) == 1
    node.kubectl("delete", "pod", "-n", RELEASE_NS, old[0]["metadata"]["name"], "--wait=false")
    node.kubectl(
        "rollout", "status", "deployment/camfleet-operator", "-n", RELEASE_NS, "--timeout=120s"
    )

    def new_operator_ready() -> bool:
        pods = node.pods(RELEASE_NS, "app.kubernetes.io/component=operator")
        return (
            len(pods) == 1
            and pods[0]["metadata"]["uid"] != old[0]["metadata"]["uid"]
            and all(s["ready"] for s in pods[0]["status"].get("containerStatuses", []))
        )

    wait_for(new_operator_ready, 120, "a new operator pod, ready")
    # A Camera created after the restart is handled by the new pod...
    node.apply(camera_manifest("after", camera.url("h264")))
    wait_live(node, "after")
    # ...and the old one was not recreated: one Deployment, one pod, one RTSP session each.
    for name in ("steady", "after"):
        deps = get_json(node, "deployments", "-n", CAMERAS_NS, "-l", f"camfleet.io/camera={name}")
        assert len(deps["items"]) == 1
        assert len(ingest_pods(node, name)) == 1
    assert phase(node, "steady") == "Live"
    for name in ("steady", "after"):
        node.kubectl("delete", "camera", name, "-n", CAMERAS_NS, "--wait=true", timeout=120)


def test_kubelet_restart_keeps_pods_running_and_camera_live(
    node_release: Release, cluster: NodeCluster
) -> None:
    node = node_release.node
    wait_live(node, "lobby")
    before = running_ingest_pod(node, "lobby")
    cluster.restart_kubelet()
    time.sleep(5)
    after = running_ingest_pod(node, "lobby")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert (
        after["status"]["containerStatuses"][0]["restartCount"]
        == before["status"]["containerStatuses"][0]["restartCount"]
    )
    assert phase(node, "lobby") == "Live"


def test_camera_deleted_takes_its_pod_secret_and_room(node_release: Release) -> None:
    node, camera = node_release.node, node_release.camera
    node.apply(camera_manifest("gone", camera.url("h264")))
    wait_live(node, "gone")
    assert get_json(node, "secret", "gone-livekit-token", "-n", CAMERAS_NS)
    node.kubectl("delete", "camera", "gone", "-n", CAMERAS_NS, "--wait=true", timeout=120)
    wait_for(lambda: not ingest_pods(node, "gone"), 60, "the ingest pod gone")
    left = node.kubectl("get", "secret", "gone-livekit-token", "-n", CAMERAS_NS, check=False)
    assert left.returncode != 0
    assert "NotFound" in left.stderr
    # The operator deletes the room before the ingest pod has stopped; an ingest still in its
    # grace period can rejoin and re-create it, and then LiveKit closes it once it is empty
    # (departure_timeout, 20 s here). Either way it goes, with nobody doing anything.
    wait_for(lambda: f"{CAMERAS_NS}-gone" not in list_rooms(node_release), 45, "the room gone", 1)


def list_rooms(release: Release) -> list[str]:
    """The LiveKit rooms, asked of livekit-server's API from the host."""

    async def ask() -> list[str]:
        client = api.LiveKitAPI(
            release.infra.livekit_public_url.replace("ws://", "http://"),
            LIVEKIT_KEY,
            release.infra.livekit_secret,
        )
        try:
            rooms = await client.room.list_rooms(api.ListRoomsRequest())
            return [r.name for r in rooms.rooms]
        finally:
            await client.aclose()

    return asyncio.run(ask())


def test_operator_cannot_read_secrets_outside_its_namespaces(node_release: Release) -> None:
    node = node_release.node
    token = node.kubectl(
        "create", "token", "camfleet-operator", "-n", RELEASE_NS, "--duration=10m"
    ).stdout.strip()

    def as_operator(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                tool("kubectl"),
                f"--server={node.kube.server if node.kube else ''}",
                f"--certificate-authority={node.kube.ca_file if node.kube else ''}",
                f"--token={token}",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    node.kubectl("create", "secret", "generic", "elsewhere", "-n", INFRA_NS, "--from-literal=a=b")
    refused = as_operator("get", "secret", "elsewhere", "-n", INFRA_NS)
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()
    assert as_operator("list", "secrets", "-n", CAMERAS_NS).returncode != 0  # no bulk reads
    wait_live(node, "lobby")
    allowed = as_operator("get", "secret", "lobby-livekit-token", "-n", CAMERAS_NS)
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("key", ["operator.logLevel"])
def test_helm_upgrade_rolls_only_what_changed(node_release: Release, key: str) -> None:
    node = node_release.node
    wait_live(node, "lobby")

    def uids(selector: str, ns: str) -> set[str]:
        return {p["metadata"]["uid"] for p in node.pods(ns, selector)}

    operator_before = uids("app.kubernetes.io/component=operator", RELEASE_NS)
    gateway_before = uids("app.kubernetes.io/component=gateway", RELEASE_NS)
    ingest_before = uids("camfleet.io/camera=lobby", CAMERAS_NS)
    node_release.upgrade("--set", f"{key}=DEBUG")
    node.kubectl(
        "rollout", "status", "deployment/camfleet-operator", "-n", RELEASE_NS, "--timeout=120s"
    )
    wait_for(
        lambda: (
            uids("app.kubernetes.io/component=operator", RELEASE_NS) - operator_before
            and len(uids("app.kubernetes.io/component=operator", RELEASE_NS)) == 1
        ),
        120,
        "the operator rolled",
    )
    assert uids("app.kubernetes.io/component=gateway", RELEASE_NS) == gateway_before
    time.sleep(5)
    assert uids("camfleet.io/camera=lobby", CAMERAS_NS) == ingest_before
    assert phase(node, "lobby") == "Live"
