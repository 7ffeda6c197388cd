"""The shipped form on the test bed's node: Redis and livekit-server as pods (from images built
the same way as camfleet's), and ``helm install`` of charts/camfleet with the local images.

Used by the real-node tests (tests/node) and by ``camfleet up --cluster``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from camfleet_dev.testbed.node import NodeCluster
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.tools import repo_root, tool

RELEASE_NS = "camfleet"
#: The RTSP test camera's port on the node address: one the chart's ingest policy allows.
CAMERA_PORT = 8554
INFRA_NS = "infra"
CAMERAS_NS = "cameras"  # watched by the release with RELEASE_NS (namespaced mode)
LIVEKIT_KEY = "camfleet-node"


def get_json(node: NodeCluster, *args: str) -> dict[str, Any]:
    out = node.kubectl("get", *args, "-o", "json")
    data: dict[str, Any] = json.loads(out.stdout)
    return data


@dataclass
class Infra:
    """Redis and livekit-server running as pods on the node."""

    redis_url: str  # as pods reach it (its Service name)
    livekit_url: str  # as pods reach it (its Service name)
    livekit_public_url: str  # as the host's browser reaches it (the node address)
    livekit_port: int
    livekit_secret: str


REDIS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis, namespace: %(ns)s, labels: {app.kubernetes.io/name: redis}}
spec:
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/name: redis}}
  template:
    metadata: {labels: {app.kubernetes.io/name: redis}}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 999, runAsGroup: 999}
      containers:
        - name: redis
          image: %(image)s
          imagePullPolicy: Never
          args: ["--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
                 "--appendonly", "yes", "--dir", "/data"]
          ports: [{name: redis, containerPort: 6379}]
          readinessProbe: {tcpSocket: {port: redis}, periodSeconds: 1}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: redis, namespace: %(ns)s}
spec:
  selector: {app.kubernetes.io/name: redis}
  ports: [{name: redis, port: 6379, targetPort: redis}]
"""

# livekit-server as LiveKit documents it for Kubernetes: host networking (ICE candidates carry
# the node's address), a ClusterIP Service in front of its signalling port for the pods.
LIVEKIT = """
apiVersion: v1
kind: Secret
metadata: {name: livekit-config, namespace: %(ns)s}
stringData:
  livekit.yaml: |
%(config)s
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: livekit-server, namespace: %(ns)s, labels: {app.kubernetes.io/name: livekit}}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app.kubernetes.io/name: livekit}}
  template:
    metadata: {labels: {app.kubernetes.io/name: livekit}}
    spec:
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 65534, runAsGroup: 65534}
      containers:
        - name: livekit-server
          image: %(image)s
          imagePullPolicy: Never
          args: ["--config", "/etc/livekit/livekit.yaml"]
          readinessProbe:
            httpGet: {host: "%(node_ip)s", port: %(port)d, path: /}
            periodSeconds: 1
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts: [{name: config, mountPath: /etc/livekit, readOnly: true}]
      volumes: [{name: config, secret: {secretName: livekit-config}}]
---
apiVersion: v1
kind: Service
metadata: {name: livekit-server, namespace: %(ns)s}
spec:
  selector: {app.kubernetes.io/name: livekit}
  ports: [{name: http, port: 80, targetPort: %(port)d}]
"""


def deploy_infra(node: NodeCluster) -> Infra:
    node.kubectl("create", "namespace", INFRA_NS)
    node.apply(REDIS % {"ns": INFRA_NS, "image": node.images["redis"]})
    # LiveKit's usual ports (the chart's NetworkPolicies allow those), on the node address only.
    port, tcp, udp = 7880, 7881, 7882
    secret = secrets.token_hex(24)
    config = {
        "port": port,
        "bind_addresses": [node.node_ip],
        "rtc": {
            "tcp_port": tcp,
            "udp_port": udp,
            "use_external_ip": False,
            "node_ip": node.node_ip,
        },
        "keys": {LIVEKIT_KEY: secret},
        "logging": {"json": True, "level": "info"},
        "room": {"empty_timeout": 300, "departure_timeout": 20},
        "webhook": {
            "api_key": LIVEKIT_KEY,
            "urls": [f"http://camfleet-operator-webhook.{RELEASE_NS}.svc:8088/livekit/webhook"],
        },
    }
    indented = "\n".join("    " + line for line in yaml.safe_dump(config).splitlines())
    node.apply(
        LIVEKIT
        % {
            "ns": INFRA_NS,
            "config": indented,
            "image": node.images["livekit-server"],
            "node_ip": node.node_ip,
            "port": port,
        }
    )
    for name in ("redis", "livekit-server"):
        node.kubectl(
            "rollout", "status", f"deployment/{name}", "-n", INFRA_NS, "--timeout=120s", timeout=130
        )
    return Infra(
        redis_url=f"redis://redis.{INFRA_NS}.svc.cluster.local:6379/0",
        livekit_url=f"ws://livekit-server.{INFRA_NS}.svc.cluster.local:80",
        livekit_public_url=f"ws://{node.node_ip}:{port}",
        livekit_port=port,
        livekit_secret=secret,
    )


def release_values(node: NodeCluster, infra: Infra, viewer_token: str) -> dict[str, Any]:
    return {
        "image": {"registry": node.registry, "tag": node.release_tag, "pullPolicy": "Never"},
        "livekit": {
            "url": infra.livekit_url,
            "publicUrl": infra.livekit_public_url,
            "secret": {"create": True, "apiKey": LIVEKIT_KEY, "apiSecret": infra.livekit_secret},
        },
        "redis": {"secret": {"create": True, "url": infra.redis_url}},
        # Cluster DNS is CoreDNS on the node address (a host process, not kube-system pods).
        "networkPolicy": {"dns": {"to": [{"ipBlock": {"cidr": f"{node.node_ip}/32"}}]}},
        "operator": {
            "ingest": {"imagePullPolicy": "Never"},
            # Namespaced mode: a Role per namespace, no Secret readable anywhere else.
            "watchNamespaces": [RELEASE_NS, CAMERAS_NS],
        },
        "gateway": {
            "replicas": 2,
            "authModes": ["static", "kubernetes"],
            "staticToken": {"value": viewer_token},
            "service": {"type": "NodePort"},
        },
    }


def helm(node: NodeCluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [tool("helm"), f"--kubeconfig={node.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Release:
    node: NodeCluster
    infra: Infra
    camera: RtspCamera
    values_file: Path
    install_output: str
    namespace: str = RELEASE_NS

    @property
    def gateway_url(self) -> str:
        svc = get_json(self.node, "service", "-n", self.namespace, "camfleet-gateway")
        port = svc["spec"]["ports"][0]["nodePort"]
        return f"http://{self.node.node_ip}:{port}"

    def upgrade(self, *extra: str) -> str:
        return helm(
            self.node,
            "upgrade",
            "camfleet",
            str(repo_root() / "charts" / "camfleet"),
            "-n",
            self.namespace,
            "-f",
            str(self.values_file),
            "--wait",
            "--timeout=240s",
            *extra,
        ).stdout


def install(node: NodeCluster, infra: Infra, values_file: Path) -> str:
    for ns in (RELEASE_NS, CAMERAS_NS):
        node.kubectl("create", "namespace", ns)
    result = helm(
        node,
        "install",
        "camfleet",
        str(repo_root() / "charts" / "camfleet"),
        "-n",
        RELEASE_NS,
        "-f",
        str(values_file),
        "--wait",
        "--timeout=240s",
    )
    return result.stdout
