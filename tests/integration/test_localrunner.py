"""The local pod runner plays the kubelet for real Deployments on the real kube-apiserver."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.process import ManagedProcess

# A stand-in container: serves /healthz, shows it got the Secret (env and mounted file), and
# exits with a termination message when /crash is requested.
APP = r"""
import http.server, os, pathlib, sys
token = pathlib.Path(os.environ["TOKEN_FILE"]).read_text()
assert os.environ["PASSWORD"] == "hunter2-pw"
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            pathlib.Path(os.environ["TERMINATION_LOG"]).write_text("AuthFailed: camera said 401")
            os._exit(3)
        body = token.encode() if self.path == "/token" else b"ok"
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def deployment(name: str, replicas: int = 1) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {
                        "labels": {
                            "app": name,
                            "app.kubernetes.io/managed-by": "camfleet-operator",
                        }
                    },
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "app",
                                "image": "example.invalid/app:1",
                                "command": [sys.executable, "-c", APP],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "env": [
                                    {"name": "PORT", "value": "8080"},
                                    {"name": "TOKEN_FILE", "value": "/var/run/app/token"},
                                    {"name": "TERMINATION_LOG", "value": "/dev/termination-log"},
                                    {
                                        "name": "PASSWORD",
                                        "valueFrom": {
                                            "secretKeyRef": {"name": "creds", "key": "password"}
                                        },
                                    },
                                ],
                                "volumeMounts": [{"name": "tok", "mountPath": "/var/run/app"}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/healthz", "port": "http"},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                        "volumes": [{"name": "tok", "secret": {"secretName": "tok"}}],
                    },
                },
            },
        }
    )


@pytest.fixture
def runner(kube: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[ManagedProcess]:
    proc = ManagedProcess(
        "localrunner",
        [
            *(sys.executable, "-m", "camfleet_dev.cli", "localrunner"),
            *("--kubeconfig", str(kube.kubeconfig), "--namespace", namespace),
            *("--work-dir", str(tmp_path / "pods"), "--backoff-base", "0.5"),
        ],
        log_dir=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    proc.start()
    yield proc
    proc.stop()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def get(kube: KubeCluster, namespace: str, *args: str) -> dict[str, Any]:
    out = kube.kubectl("get", "-n", namespace, "-o", "json", *args, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def pods(kube: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    return list(get(kube, namespace, "pods").get("items", []))


def test_runner_runs_probes_restarts_and_stops_a_deployment(
    kube: KubeCluster, namespace: str, runner: ManagedProcess, tmp_path: Path
) -> None:
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        namespace,
        "--from-literal=password=hunter2-pw",
    )
    kube.kubectl("create", "secret", "generic", "tok", "-n", namespace, "--from-literal=token=T1")
    kube.apply(deployment("app"), namespace=namespace)

    # Readiness flows back through the real ReplicaSet and Deployment controllers.
    wait_for(
        lambda: get(kube, namespace, "deployment", "app").get("status", {}).get("readyReplicas"),
        60,
        "the Deployment to report a ready replica",
    )
    pod = pods(kube, namespace)[0]
    assert pod["spec"]["nodeName"] == "camfleet-local"
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True
    assert status["restartCount"] == 0

    # The process got the Secret file under the pod's own directory, not at /var/run.
    pod_dir = tmp_path / "pods" / namespace / pod["metadata"]["name"]
    assert (pod_dir / "var/run/app/token").read_text() == "T1"

    # A crash: the termination message lands in lastState, the restart count rises.
    port = _host_port(pod_dir)
    with contextlib.suppress(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/crash", timeout=5)

    def restarted() -> dict[str, Any] | None:
        items = pods(kube, namespace)
        if not items:
            return None
        cs = items[0]["status"]["containerStatuses"][0]
        return cs if cs["restartCount"] >= 1 and cs.get("lastState") else None

    cs = wait_for(restarted, 30, "a restart with a termination message")
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["message"] == "AuthFailed: camera said 401"
    wait_for(
        lambda: pods(kube, namespace)[0]["status"]["containerStatuses"][0]["ready"],
        30,
        "ready again after the restart",
    )

    # Scale to zero: the process is stopped and the pod goes away.
    kube.kubectl("scale", "deployment", "app", "-n", namespace, "--replicas=0")
    wait_for(lambda: not pods(kube, namespace), 30, "the pod to be deleted")
    wait_for(lambda: not pod_dir.exists(), 10, "the pod's directory to be removed")


def _host_port(pod_dir: Path) -> int:
    """The host port the runner gave container port 8080."""
    info = json.loads((pod_dir / "runner.json").read_text())
    return int(info["ports"]["8080"])
