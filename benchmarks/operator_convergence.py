"""Operator convergence: N Cameras created at once until each has its Deployment, Secret, room
and a current observedGeneration, against a real kube-apiserver and livekit-server.

    .venv/bin/python benchmarks/operator_convergence.py                # N 100, 500, 1000; 3 runs
    .venv/bin/python benchmarks/operator_convergence.py --sizes 50 --repeats 1  # quick look

Each run: a fresh namespace, a freshly started operator (`python -m camfleet_operator`, default
settings except the ones printed), all Cameras POSTed concurrently, then polling with list calls
(not per object) until converged. Reported: the median over the runs of the convergence time,
plus the operator's peak RSS (VmHWM) and CPU seconds (user+system) for the whole run, and the
time for deleting them all (finalizers: rooms deleted in LiveKit). Results are also written as
JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from livekit import api

from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.process import ManagedProcess, free_port, http_ok
from camfleet_dev.testbed.tools import repo_root
from camfleet_operator import kube as paths
from camfleet_operator.kube import Conflict, Kube, KubeError

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, peak RSS in bytes) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def scrape(port: int) -> dict[str, float]:
    """Mean reconcile pass and LiveKit call latency from the operator's own metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        for metric in (
            "camfleet_reconcile_duration_seconds",
            "camfleet_livekit_api_duration_seconds",
        ):
            for suffix in ("_sum", "_count"):
                if name.startswith(metric + suffix):
                    sums[metric + suffix] = sums.get(metric + suffix, 0.0) + float(value)
    out = {}
    for metric, short in (
        ("camfleet_reconcile_duration_seconds", "reconcile"),
        ("camfleet_livekit_api_duration_seconds", "livekit_call"),
    ):
        count = sums.get(metric + "_count", 0.0)
        out[f"{short}_count"] = count
        out[f"{short}_mean_ms"] = (
            round(1000 * sums.get(metric + "_sum", 0.0) / count, 1) if count else 0.0
        )
    return out


def camera(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "camfleet.io/v1alpha1",
        "kind": "Camera",
        "metadata": {"name": f"cam-{i:05d}"},
        "spec": {"source": {"url": f"rtsp://10.{i // 250 % 250}.{i % 250}.7:554/stream1"}},
    }


async def count(client: Kube, collection: str) -> int:
    """Objects in a collection without transferring them: limit=1 + remainingItemCount."""
    page = await client.request("GET", collection, query={"limit": "1"}) or {}
    return len(page.get("items") or []) + int(
        (page.get("metadata") or {}).get("remainingItemCount") or 0
    )


async def count_converged(
    client: Kube, lk: api.LiveKitAPI, ns: str, n: int, *, full: bool
) -> dict[str, int]:
    """What exists so far. The poller must not load the API server it measures: counts come
    from one-item pages, and the full Camera list (for observedGeneration) is read from the
    watch cache only when the children are complete or `full` asks for it."""
    deps, secs, rooms = await asyncio.gather(
        count(client, paths.deployments(ns)),
        count(client, paths.secrets(ns)),
        lk.room.list_rooms(api.ListRoomsRequest()),
    )
    result = {
        "deployments": deps,
        "secrets": secs,
        "rooms": sum(1 for r in rooms.rooms if r.name.startswith(f"{ns}-")),
        "observed": 0,
    }
    if full or min(deps, secs, result["rooms"]) >= n:
        cams = await client.request("GET", paths.cameras(ns), query={"resourceVersion": "0"})
        result["observed"] = sum(
            1
            for c in (cams or {}).get("items") or []
            if (c.get("status") or {}).get("observedGeneration") == c["metadata"]["generation"]
        )
    return result


async def one_run(
    n: int, run: int, cluster: KubeCluster, livekit: LiveKitServer, workdir: Path, limit: float
) -> dict[str, Any]:
    ns = f"bench-{n}-{run}-{os.getpid()}"
    cluster.create_namespace(ns)
    secret_file = workdir / "livekit-secret"
    secret_file.write_text(livekit.api_secret)
    health, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "CAMFLEET_LIVEKIT_URL": livekit.url,
        "CAMFLEET_LIVEKIT_API_KEY": livekit.api_key,
        "CAMFLEET_LIVEKIT_API_SECRET_FILE": str(secret_file),
        "CAMFLEET_NAMESPACES": ns,
        "CAMFLEET_METRICS_PORT": str(metrics_port),
        "CAMFLEET_LIVENESS_ENDPOINT": f"http://127.0.0.1:{health}/healthz",
        "CAMFLEET_LOG_LEVEL": "WARNING",
    }
    op = ManagedProcess(
        f"operator-{n}-{run}", [sys.executable, "-m", "camfleet_operator"], log_dir=workdir, env=env
    )
    op.start()
    op.wait_until(lambda: http_ok(f"http://127.0.0.1:{health}/healthz"), 60, "liveness")
    cpu0, _ = proc_stats(op.pid)
    client = await Kube.connect(kubeconfig=str(cluster.kubeconfig), pool_size=64)
    lk = api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret, failover=False)
    try:
        gate = asyncio.Semaphore(64)

        async def create(i: int) -> None:
            async with gate:
                for attempt in range(5):  # an overloaded API server may time a POST out
                    try:
                        await client.create(paths.cameras(ns), camera(i))
                        return
                    except Conflict:
                        return  # the timed-out attempt did land
                    except KubeError:
                        if attempt == 4:
                            raise
                        await asyncio.sleep(1)

        started = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(n)))
        created = time.monotonic() - started
        last: dict[str, int] = {}
        stages: dict[str, float] = {}  # when each kind of result was complete
        polls = 0
        while time.monotonic() - started < limit:
            try:
                last = await count_converged(client, lk, ns, n, full=polls % 10 == 9)
            except (KubeError, api.TwirpError, aiohttp.ClientError, TimeoutError) as exc:
                print(f"poll failed (retrying): {exc}", file=sys.stderr, flush=True)
            polls += 1
            for key, value in last.items():
                if value >= n and key not in stages:
                    stages[key] = round(time.monotonic() - started, 2)
            if all(v >= n for v in last.values()):
                break
            await asyncio.sleep(0.5)
        converged = time.monotonic() - started
        ok = all(v >= n for v in last.values())
        cpu1, peak = proc_stats(op.pid)
        scraped = scrape(metrics_port)
        print(
            json.dumps(
                {
                    "n": n,
                    "run": run,
                    "converge_seconds": round(converged, 2),
                    "stages": stages,
                    "cpu": round(cpu1 - cpu0, 2),
                    "peak_rss_mb": round(peak / 2**20, 1),
                }
            ),
            file=sys.stderr,
            flush=True,
        )

        # Deleting them all: finalizers delete the rooms, then the API server lets go.
        started = time.monotonic()

        async def delete(i: int) -> None:
            async with gate:
                await client.delete(paths.camera(ns, f"cam-{i:05d}"))

        await asyncio.gather(*(delete(i) for i in range(n)))
        while time.monotonic() - started < limit:
            with contextlib.suppress(KubeError):
                if await count(client, paths.cameras(ns)) == 0:
                    break
            await asyncio.sleep(0.5)
        deleted = time.monotonic() - started
        cpu2, peak = proc_stats(op.pid)
    finally:
        await lk.aclose()
        await client.close()
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    result = {
        "n": n,
        "run": run,
        "converged": ok,
        "create_seconds": round(created, 2),
        "converge_seconds": round(converged, 2),
        "delete_seconds": round(deleted, 2),
        "cpu_seconds_converge": round(cpu1 - cpu0, 2),
        "cpu_seconds_total": round(cpu2 - cpu0, 2),
        "peak_rss_mb": round(peak / 2**20, 1),
        "stages": stages,
        "operator_metrics": scraped,
        "last": last,
    }
    print(json.dumps(result), flush=True)
    return result


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="camfleet-bench-"))
    results: list[dict[str, Any]] = []
    with KubeCluster(workdir / "kube") as cluster, LiveKitServer(workdir / "livekit") as livekit:
        cluster.kubectl("apply", "--server-side", "-f", str(repo_root() / "crds" / "camera.yaml"))
        cluster.wait_established("cameras.camfleet.io")
        for n in args.sizes:
            for run in range(args.repeats):
                results.append(await one_run(n, run, cluster, livekit, workdir, args.timeout))

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"{'N':>6} {'converge s (median)':>20} {'delete s':>9} {'CPU s':>7} {'peak RSS MB':>12}")
    summary = []
    for n in args.sizes:
        runs = [r for r in results if r["n"] == n]
        row = {
            "n": n,
            "runs": len(runs),
            "all_converged": all(r["converged"] for r in runs),
            "converge_seconds_median": statistics.median(r["converge_seconds"] for r in runs),
            "delete_seconds_median": statistics.median(r["delete_seconds"] for r in runs),
            "cpu_seconds_median": statistics.median(r["cpu_seconds_converge"] for r in runs),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
        }
        summary.append(row)
        print(
            f"{n:>6} {row['converge_seconds_median']:>20} {row['delete_seconds_median']:>9} "
            f"{row['cpu_seconds_median']:>7} {row['peak_rss_mb_max']:>12}"
            + ("" if row["all_converged"] else "  (NOT all converged)")
        )
    out = repo_root() / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"operator_convergence-{stamp}.json").write_text(
        json.dumps({"runs": results, "summary": summary}, indent=2)
    )
    return 0 if all(r["all_converged"] for r in summary) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
