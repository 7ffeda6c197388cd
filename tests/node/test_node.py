"""The test bed's node is a Kubernetes node: pods run from the local images, get addresses on
the node's bridge, resolve Service names through CoreDNS, reach ClusterIPs and the API server,
and cannot reach anything off the machine."""

from __future__ import annotations

import json
import secrets
import subprocess

from camfleet_dev.testbed.node import NodeCluster

PROBE = r"""
import json, os, socket, ssl, sys, urllib.request
out = {}
out["dns"] = socket.gethostbyname(sys.argv[1])
try:
    socket.gethostbyname("example.com")
    out["external_dns"] = True
except OSError:
    out["external_dns"] = False
with socket.create_connection((out["dns"], 6379), timeout=5) as s:
    s.sendall(b"PING\r\n")
    out["redis"] = s.recv(16).decode().strip()
token = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
req = urllib.request.Request("https://kubernetes.default.svc/version",
                             headers={"Authorization": "Bearer " + token})
out["api"] = json.load(urllib.request.urlopen(req, context=ctx, timeout=5))["gitVersion"]
off = []
for host in sys.argv[2:]:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        off.append(host)
    except OSError:
        pass
out["reached_off_machine"] = off
print(json.dumps(out))
"""

REDIS_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "redis", "labels": {"app": "redis"}},
    "spec": {
        "containers": [
            {
                "name": "redis",
                "imagePullPolicy": "Never",
                "args": ["--bind", "0.0.0.0", "--protected-mode", "no", "--save", ""],
                "ports": [{"containerPort": 6379}],
            }
        ]
    },
}


def uplink_addresses() -> list[str]:
    """The default gateway and a public address: what a pod must not reach."""
    route = subprocess.run(["ip", "-j", "route", "show", "default"], capture_output=True, text=True)
    gateways = [r["gateway"] for r in json.loads(route.stdout or "[]") if "gateway" in r]
    return [*gateways, "1.1.1.1"]


def test_pods_resolve_services_reach_the_api_and_nothing_off_the_machine(
    cluster: NodeCluster,
) -> None:
    ns = f"probe-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", ns)
    pod = json.loads(json.dumps(REDIS_POD))
    pod["spec"]["containers"][0]["image"] = cluster.images["redis"]
    cluster.apply(json.dumps(pod), ns)
    cluster.kubectl("expose", "pod", "redis", "-n", ns, "--port=6379")
    cluster.kubectl("wait", "--for=condition=Ready", "pod/redis", "-n", ns, "--timeout=60s")
    ip = json.loads(cluster.kubectl("get", "pod", "redis", "-n", ns, "-o", "json").stdout)[
        "status"
    ]["podIP"]
    assert ip.startswith(cluster.pod_cidr.rsplit(".", 2)[0])

    # A pod from the operator image (it has Python) probes from inside the cluster.
    probe = cluster.kubectl(
        "run",
        "probe",
        "-n",
        ns,
        "--rm",
        "-i",
        "--restart=Never",
        f"--image={cluster.images['operator']}",
        "--image-pull-policy=Never",
        "--command",
        "--",
        "python",
        "-c",
        PROBE,
        f"redis.{ns}.svc.cluster.local",
        *uplink_addresses(),
        timeout=120,
    )
    result = json.loads(next(x for x in probe.stdout.splitlines() if x.startswith("{")))
    svc = json.loads(cluster.kubectl("get", "svc", "redis", "-n", ns, "-o", "json").stdout)
    assert result["dns"] == svc["spec"]["clusterIP"]
    assert result["redis"] == "+PONG"
    assert result["api"] == "v1.35.4"
    assert result["reached_off_machine"] == []
    assert result["external_dns"] is False

    # kubectl logs and exec go through the kubelet (API server client certificate → x509 authn,
    # webhook authz).
    cluster.kubectl("exec", "-n", ns, "redis", "--", "redis-cli", "ping")
    assert cluster.kubectl("logs", "-n", ns, "redis").stdout
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
