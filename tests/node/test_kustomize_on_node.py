"""The kustomize base (`deploy/`) applied with `kubectl apply -k`, next to the helm release.

The overlay a user would write for this cluster: its own namespace and name prefix, the local
images, the LiveKit URL, and a shard selector so that this operator and the helm release's never
reconcile the same Camera (the helm release watches its own namespaces only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from nodekit import Release, get_json, wait_for
from test_chart_on_node import phase

from camfleet_dev.testbed.release import LIVEKIT_KEY
from camfleet_dev.testbed.tools import repo_root

NS = "camfleet-kustomize"
SHARD = "camfleet.io/installed-by=kustomize"


def overlay(dir: Path, release: Release) -> Path:
    node, infra = release.node, release.infra
    dir.mkdir(parents=True, exist_ok=True)
    env = [
        {"name": "CAMFLEET_LIVEKIT_URL", "value": infra.livekit_url},
        {"name": "CAMFLEET_INGEST_IMAGE", "value": node.images_alias("ingest")},
        {"name": "CAMFLEET_INGEST_IMAGE_PULL_POLICY", "value": "Never"},
        {"name": "CAMFLEET_SHARD_SELECTOR", "value": SHARD},
        {"name": "CAMFLEET_PEERING_NAME", "value": "kz-camfleet"},
    ]
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "camfleet-operator", "namespace": "camfleet"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "operator", "imagePullPolicy": "Never", "env": env}]
                }
            }
        },
    }
    gateway_patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "camfleet-gateway", "namespace": "camfleet"},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "gateway", "imagePullPolicy": "Never"}]}},
        },
    }
    (dir / "operator.yaml").write_text(yaml.safe_dump(patch))
    (dir / "gateway.yaml").write_text(yaml.safe_dump(gateway_patch))
    images = [
        {
            "name": f"ghcr.io/camfleet/camfleet-{c}",
            "newName": f"{node.registry}/camfleet-{c}",
            "newTag": node.release_tag,
        }
        for c in ("operator", "gateway")
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NS,
        "namePrefix": "kz-",
        # kustomize takes bases by relative path only.
        "resources": [os.path.relpath(repo_root() / "deploy", dir)],
        "images": images,
        "patches": [
            {"path": "operator.yaml"},
            {"path": "gateway.yaml"},
            # The base's DNS egress names kube-dns pods; this node's DNS is on its address.
            *(
                {
                    "target": {"kind": "NetworkPolicy", "name": f"camfleet-{c}"},
                    "patch": json.dumps(
                        [
                            {
                                "op": "replace",
                                "path": "/spec/egress/0/to",
                                "value": [{"ipBlock": {"cidr": f"{node.node_ip}/32"}}],
                            }
                        ]
                    ),
                }
                for c in ("operator", "gateway", "ingest")
            ),
        ],
    }
    (dir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return dir


def test_kubectl_apply_k_runs_the_base_in_its_own_namespace(
    node_release: Release, tmp_path: Path
) -> None:
    node, camera, infra = node_release.node, node_release.camera, node_release.infra
    # CRDs first (already there from the helm install: apply takes them over, as documented).
    node.kubectl(
        "apply", "--server-side", "--force-conflicts", "-k", str(repo_root() / "deploy" / "crds")
    )
    rendered = node.kubectl("kustomize", str(overlay(tmp_path / "overlay", node_release))).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    namespaced = [o for o in objects if o["kind"] not in ("Namespace", "ClusterRole")]
    assert all(o["metadata"].get("namespace") in (NS, None) for o in namespaced)
    node.kubectl("create", "namespace", NS, check=False)
    secret = ("create", "secret", "generic", "-n", NS)
    node.kubectl(
        *secret,
        "camfleet-livekit",
        f"--from-literal=api-key={LIVEKIT_KEY}",
        f"--from-literal=api-secret={infra.livekit_secret}",
    )
    node.kubectl(*secret, "camfleet-redis", f"--from-literal=url={infra.redis_url}")
    node.kubectl("apply", "--server-side", "-k", str(tmp_path / "overlay"))
    for name in ("kz-camfleet-operator", "kz-camfleet-gateway"):
        node.kubectl(
            "rollout", "status", f"deployment/{name}", "-n", NS, "--timeout=180s", timeout=190
        )
    cam = {
        "apiVersion": "camfleet.io/v1alpha1",
        "kind": "Camera",
        "metadata": {
            "name": "yard",
            "namespace": NS,
            "labels": {SHARD.split("=")[0]: SHARD.split("=")[1]},
        },
        "spec": {"source": {"url": camera.url("h264")}},
    }
    node.apply(json.dumps(cam))
    wait_for(lambda: phase(node, "yard", NS) == "Live", 150, "kustomize Camera Live")
    pods = get_json(node, "pods", "-n", NS, "-l", "camfleet.io/camera=yard")["items"]
    assert pods[0]["spec"]["containers"][0]["image"] == node.images_alias("ingest")
    node.kubectl("delete", "camera", "yard", "-n", NS, "--wait=true", timeout=120)
    node.kubectl("delete", "-k", str(tmp_path / "overlay"), "--wait=false")
