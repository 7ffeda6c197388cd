"""The real node: warm start to Ready, Camera apply → Live (node vs the local pod runner, same
run), and N Cameras on the node with the ingest pods' CPU and memory from the kubelet's cgroups.

    .venv/bin/python benchmarks/node_bench.py [--repeats 5] [--cameras 20] [--seconds 20]

Root only (the node). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from camfleet_dev.testbed.node import NodeCluster
from camfleet_dev.testbed.process import free_port
from camfleet_dev.testbed.release import (
    CAMERA_PORT,
    CAMERAS_NS,
    deploy_infra,
    install,
    release_values,
)
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.tools import tools_dir
from camfleet_dev.up import DEFAULT_PORTS, Stack, UpOptions


def camera(name: str, ns: str, url: str) -> str:
    return json.dumps(
        {
            "apiVersion": "camfleet.io/v1alpha1",
            "kind": "Camera",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"source": {"url": url}},
        }
    )


def phases(kubectl: Any, ns: str) -> dict[str, str]:
    out = kubectl("get", "cameras", "-n", ns, "-o", "json", check=False)
    if out.returncode != 0:
        return {}
    return {
        c["metadata"]["name"]: c.get("status", {}).get("phase", "")
        for c in json.loads(out.stdout)["items"]
    }


def apply_to_live(kubectl: Any, apply: Any, ns: str, url: str, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        name = f"bench-{i}"
        t0 = time.monotonic()
        apply(camera(name, ns, url))
        while phases(kubectl, ns).get(name) != "Live":
            if time.monotonic() - t0 > 180:
                raise RuntimeError(f"{name} not Live in 180 s")
            time.sleep(0.1)
        times.append(time.monotonic() - t0)
        kubectl("delete", "camera", name, "-n", ns, "--wait=true", timeout=120)
    return times


def cgroup_file(controller: str, uid: str, name: str) -> Path:
    found = list(Path("/sys/fs/cgroup", controller, "kubepods").rglob(f"pod{uid}/{name}"))
    if not found:
        raise RuntimeError(f"no {controller} cgroup for pod {uid}")
    return found[0]


def pod_usage(node: NodeCluster, uids: list[str], seconds: float) -> tuple[float, float]:
    """(cores used by all the pods over ``seconds``, their total RSS in MB)."""

    def cpu() -> int:
        return sum(int(cgroup_file("cpuacct", u, "cpuacct.usage").read_text()) for u in uids)

    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu(), time.monotonic()
    rss = 0
    for u in uids:
        stat = cgroup_file("memory", u, "memory.stat").read_text().split()
        fields = dict(zip(stat[::2], stat[1::2], strict=True))
        rss += int(fields["total_rss"])
    return (c1 - c0) / 1e9 / (t1 - t0), rss / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="camfleet-node-bench-"))
    rows: list[tuple[str, str]] = []

    # The local pod runner (`camfleet up --no-demo`), loopback.
    ports = {name: free_port() for name in DEFAULT_PORTS}
    local = Stack(UpOptions(state_dir=work / "local", ports=ports, demo=False))
    with RtspCamera(work / "local-rtsp", tools_dir() / "media") as cam:
        try:
            local.start()
            assert local.kube is not None
            local.kube.create_namespace("bench")
            local_times = apply_to_live(
                local.kube.kubectl, local.kube.apply, "bench", cam.url("h264"), args.repeats
            )
        finally:
            local.stop()

    node = NodeCluster(work / "node")
    try:
        node.start()
        rows.append(("node start → Ready (warm, images present)", f"{node.timings['ready']:.1f} s"))
        infra = deploy_infra(node)
        values = release_values(node, infra, "bench")
        # 20 ingest pods on 2 cores: the default 250m request would not schedule them all.
        values["operator"]["ingest"]["cpuRequest"] = "50m"
        path = work / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        t0 = time.monotonic()
        install(node, infra, path)
        rows.append(("helm install → operator and gateway Ready", f"{time.monotonic() - t0:.1f} s"))
        with RtspCamera(
            work / "node-rtsp", tools_dir() / "media", host=node.node_ip, port=CAMERA_PORT
        ) as cam:
            node_times = apply_to_live(
                node.kubectl, node.apply, CAMERAS_NS, cam.url("h264"), args.repeats
            )
            for label, times in (("real node", node_times), ("local pod runner", local_times)):
                rows.append(
                    (
                        f"Camera apply → Live, {label} (median of {args.repeats})",
                        f"{statistics.median(times):.1f} s "
                        f"(min {min(times):.1f}, max {max(times):.1f})",
                    )
                )
            t0 = time.monotonic()
            for i in range(args.cameras):
                node.apply(camera(f"many-{i}", CAMERAS_NS, cam.url("h264")))
            while True:
                live = [p for p in phases(node.kubectl, CAMERAS_NS).values() if p == "Live"]
                if len(live) == args.cameras:
                    break
                if time.monotonic() - t0 > 600:
                    raise RuntimeError(f"only {len(live)} of {args.cameras} Live after 600 s")
                time.sleep(1)
            rows.append(
                (f"{args.cameras} Cameras applied → all Live", f"{time.monotonic() - t0:.1f} s")
            )
            time.sleep(10)  # past the start-up
            pods = node.pods(CAMERAS_NS, "app.kubernetes.io/managed-by=camfleet-operator")
            uids = [p["metadata"]["uid"] for p in pods if p["status"].get("phase") == "Running"]
            cores, rss = pod_usage(node, uids, args.seconds)
            rows.append(
                (
                    f"{len(uids)} ingest pods, kubelet cgroups over {args.seconds:.0f} s",
                    f"CPU {cores:.2f} cores ({cores / len(uids) * 1000:.0f} m each), "
                    f"RSS {rss:.0f} MB ({rss / len(uids):.0f} MB each)",
                )
            )
    finally:
        t0 = time.monotonic()
        node.stop()
        rows.append(("node stop, everything cleaned", f"{time.monotonic() - t0:.1f} s"))
    print("| measurement | result |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
