"""``camfleet up --cluster``: the shipped form on the test bed's real node, for a person to look at.

Root only. Starts the one-node cluster (camfleet_dev.testbed.node), Redis and livekit-server as
pods, ``helm install`` of charts/camfleet with the images scripts/setup built, the RTSP test
camera on the node's bridge address, two demo Cameras and the example AI worker as a pod; prints
the viewer URL (the gateway's NodePort) and the kubeconfig; Ctrl-C stops everything and leaves
nothing behind. State is fresh on every start (unlike ``camfleet up``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path

import yaml

from camfleet_dev.testbed.node import NodeCluster, NodeError
from camfleet_dev.testbed.process import StartError
from camfleet_dev.testbed.release import (
    CAMERA_PORT,
    CAMERAS_NS,
    LIVEKIT_KEY,
    Infra,
    deploy_infra,
    install,
    release_values,
)
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.stack import wait_for_signal
from camfleet_dev.testbed.tools import MissingTool, tools_dir

DEMO = ("lobby", "loading-dock")


def ai_worker_manifest(node: NodeCluster, infra: Infra, camera: str) -> str:
    labels = {"app": f"ai-worker-{camera}"}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"ai-worker-{camera}", "namespace": CAMERAS_NS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": "worker",
                                "image": f"{node.registry}/camfleet-ai-worker:{node.release_tag}",
                                "imagePullPolicy": "Never",
                                "args": [
                                    *("--camera", f"{CAMERAS_NS}/{camera}"),
                                    *("--livekit-url", infra.livekit_url),
                                    *("--redis-url", infra.redis_url),
                                ],
                                "envFrom": [{"secretRef": {"name": "ai-worker-livekit"}}],
                            }
                        ],
                    },
                },
            },
        }
    )


def run_up_cluster(state_dir: Path) -> int:
    if os.geteuid() != 0:
        print("camfleet: --cluster needs root (kubelet, containerd, a bridge)", file=sys.stderr)
        return 1
    state_dir = state_dir.resolve()
    shutil.rmtree(state_dir, ignore_errors=True)
    token = secrets.token_urlsafe(18)
    try:
        node = NodeCluster(state_dir / "node")
    except NodeError as exc:
        print(f"camfleet: {exc}", file=sys.stderr)
        return 1
    camera: RtspCamera | None = None
    try:
        print("starting the node (control plane, containerd, kubelet, kube-proxy, CoreDNS) ...")
        node.start()
        print(f"  node Ready in {node.timings['ready']:.1f}s at {node.node_ip}", flush=True)
        infra = deploy_infra(node)
        print(f"  redis and livekit-server pods up (LiveKit at {infra.livekit_public_url})")
        camera = RtspCamera(
            state_dir / "rtsp", tools_dir() / "media", host=node.node_ip, port=CAMERA_PORT
        )
        camera.start()
        values = state_dir / "values.yaml"
        values.write_text(yaml.safe_dump(release_values(node, infra, token)))
        print("helm install camfleet charts/camfleet ...", flush=True)
        print(install(node, infra, values))
        node.kubectl(
            "create",
            "secret",
            "generic",
            "ai-worker-livekit",
            "-n",
            CAMERAS_NS,
            f"--from-literal=LIVEKIT_API_KEY={LIVEKIT_KEY}",
            f"--from-literal=LIVEKIT_API_SECRET={infra.livekit_secret}",
        )
        for name in DEMO:
            manifest = {
                "apiVersion": "camfleet.io/v1alpha1",
                "kind": "Camera",
                "metadata": {"name": name, "namespace": CAMERAS_NS},
                "spec": {"source": {"url": camera.url("h264")}},
            }
            node.apply(json.dumps(manifest))
            node.apply(ai_worker_manifest(node, infra, name))
        svc = json.loads(
            node.kubectl("get", "svc", "camfleet-gateway", "-n", "camfleet", "-o", "json").stdout
        )
        viewer = f"http://{node.node_ip}:{svc['spec']['ports'][0]['nodePort']}/"
    except (MissingTool, StartError, NodeError, RuntimeError) as exc:
        print(f"camfleet: {exc}", file=sys.stderr)
        if camera is not None:
            camera.stop()
        node.stop()
        return 1
    print()
    print(f"Viewer:      {viewer}  (sign in with the token {token})")
    print(f"Kubeconfig:  {node.kubeconfig}")
    print(f"Try:         kubectl --kubeconfig {node.kubeconfig} get cam,pods -A")
    print(f"Logs:        {node.log_dir}")
    print("camfleet is up on a real node; Ctrl-C stops everything.", flush=True)
    try:
        wait_for_signal()
    finally:
        print("stopping ...", flush=True)
        camera.stop()
        node.stop()
        print("stopped.", flush=True)
    return 0
