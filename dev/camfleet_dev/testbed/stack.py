"""The test bed's servers started together, for a person at a terminal (``camfleet testbed``)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.process import StartError
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.tools import MissingTool, tools_dir


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (the caller then stops what it started)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def run_testbed(state_dir: Path) -> int:
    state_dir = state_dir.resolve()
    with contextlib.ExitStack() as stack:
        try:
            print("starting kube-apiserver + etcd + kube-controller-manager ...", flush=True)
            kube = stack.enter_context(KubeCluster(state_dir / "kube"))
            print(f"  kube-apiserver  {kube.server}  (kubeconfig: {kube.kubeconfig})")
            redis = stack.enter_context(RedisServer(state_dir / "redis"))
            print(f"  redis           {redis.url}")
            postgres = stack.enter_context(PostgresServer(state_dir / "postgres"))
            print(f"  postgresql      {postgres.dsn}")
            livekit = stack.enter_context(LiveKitServer(state_dir / "livekit"))
            print(f"  livekit-server  {livekit.url}  (key {livekit.api_key})")
            camera = stack.enter_context(RtspCamera(state_dir / "rtsp", tools_dir() / "media"))
            print(f"  rtsp camera     {camera.url('h264')}  (also h264-bframes, h265)")
        except (MissingTool, StartError) as exc:
            print(f"camfleet: {exc}", file=sys.stderr)
            return 1
        print("up; Ctrl-C stops everything", flush=True)
        wait_for_signal()
        print("stopping ...", flush=True)
    return 0
