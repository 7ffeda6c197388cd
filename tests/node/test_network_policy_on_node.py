"""The chart's NetworkPolicies, enforced on the node by kube-router's policy controller.

Everything else in tests/node runs with them enforced, which shows what they admit (DNS, the API
server, LiveKit, Redis, the camera, the webhooks); this module shows what they refuse.
"""

from __future__ import annotations

import json
import secrets

from nodekit import CAMERAS_NS, INFRA_NS, RELEASE_NS, Release, get_json
from test_chart_on_node import camera_manifest, running_ingest_pod, wait_live

CONNECT = """
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
for attempt in range(6):  # the enforcer learns a new pod's address within a second or two
    try:
        socket.create_connection((host, port), timeout=2).close()
        print("OPEN")
        break
    except OSError:
        time.sleep(1)
else:
    print("BLOCKED")
"""


def connect_from_new_pod(release: Release, ns: str, host: str, port: int) -> str:
    """Run the probe in a fresh pod and read its log (attaching to a pod this short-lived
    sometimes misses its output)."""
    node = release.node
    name = f"probe-{secrets.token_hex(3)}"
    node.kubectl(
        "run", name, "-n", ns, "--restart=Never",
        f"--image={node.images_alias('operator')}", "--image-pull-policy=Never",
        "--command", "--", "python", "-c", CONNECT, host, str(port),
    )  # fmt: skip
    node.kubectl(
        "wait", f"pod/{name}", "-n", ns, "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=90s", timeout=100,
    )  # fmt: skip
    out = node.kubectl("logs", name, "-n", ns).stdout.split()
    node.kubectl("delete", "pod", name, "-n", ns, "--wait=false")
    return out[-1]


def test_policies_refuse_what_the_chart_does_not_allow(node_release: Release) -> None:
    node, camera = node_release.node, node_release.camera
    node.apply(camera_manifest("lobby", camera.url("h264")))
    wait_live(node, "lobby")  # camera, LiveKit, DNS and the API: admitted
    ingest = running_ingest_pod(node, "lobby")
    ingest_ip = ingest["status"]["podIP"]
    gateway_ip = node.pods(RELEASE_NS, "app.kubernetes.io/component=gateway")[0]["status"]["podIP"]

    # Ingress: anyone may reach the gateway; nobody the ingest pods' metrics (no scraper listed).
    assert connect_from_new_pod(node_release, INFRA_NS, gateway_ip, 8080) == "OPEN"
    assert connect_from_new_pod(node_release, INFRA_NS, ingest_ip, 8080) == "BLOCKED"

    # ... but the gateway may, for the camera's snapshot (the only ingress an ingest allows).
    gateway = node.pods(RELEASE_NS, "app.kubernetes.io/component=gateway")[0]
    out = node.kubectl(
        "exec", "-n", RELEASE_NS, gateway["metadata"]["name"], "--",
        "python", "-c", CONNECT, ingest_ip, "8080",
        timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == "OPEN"

    # Egress: an ingest pod talks to cameras and LiveKit only, not to Redis.
    redis_ip = get_json(node, "service", "redis", "-n", INFRA_NS)["spec"]["clusterIP"]
    out = node.kubectl(
        "exec", "-n", CAMERAS_NS, ingest["metadata"]["name"], "--",
        "python", "-c", CONNECT, redis_ip, "6379",
        timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == "BLOCKED"
    # The same from a pod without a policy: open (the refusal above is the policy's).
    assert connect_from_new_pod(node_release, INFRA_NS, redis_ip, 6379) == "OPEN"
    policies = json.loads(node.kubectl("get", "networkpolicy", "-A", "-o", "json").stdout)
    assert {p["metadata"]["name"] for p in policies["items"]} >= {
        "camfleet-operator",
        "camfleet-gateway",
        "camfleet-ingest",
    }
