"""The ``camfleet`` development command: the local stack, the test bed, the local pod runner.

Not shipped in any image; each program has its own entry point (``camfleet-operator``,
``camfleet-ingest``, ``camfleet-gateway``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

Command = Callable[[argparse.Namespace], int]


def _testbed(args: argparse.Namespace) -> int:
    """Start the real servers of the test bed on loopback and keep them up until Ctrl-C."""
    from camfleet_dev.testbed.stack import run_testbed

    return run_testbed(Path(args.state_dir))


def _localrunner(args: argparse.Namespace) -> int:
    """Play the kubelet for camfleet's ingest Pods on a cluster without nodes (dev/test only)."""
    import asyncio

    from camfleet.jsonlog import setup_logging
    from camfleet_dev.localrunner.runner import RunnerOptions, run_runner

    setup_logging(args.log_level)
    options = RunnerOptions(
        work_dir=Path(args.work_dir).resolve(),
        selector=args.selector,
        namespace=args.namespace,
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        extra_path=str(Path(sys.executable).parent),
    )
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_until_signal(run_runner(kubeconfig, options)))
    return 0


async def _until_signal(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` until SIGTERM/SIGINT, then cancel it so its cleanup runs."""
    import asyncio

    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _up(args: argparse.Namespace) -> int:
    if args.cluster:
        from camfleet_dev.up_cluster import run_up_cluster

        return run_up_cluster(Path(args.state_dir) / "cluster")
    from camfleet_dev.up import DEFAULT_PORTS, UpOptions, run_up

    ports = {name: getattr(args, f"{name}_port") or port for name, port in DEFAULT_PORTS.items()}
    return run_up(
        UpOptions(
            state_dir=Path(args.state_dir),
            ports=ports,
            demo=not args.no_demo,
            cameras=list(args.camera),
            ai_worker=not args.no_ai,
        )
    )


def _clip(args: argparse.Namespace) -> int:
    """A recorded range as one MP4 (remuxed; bytes from the store, not the gateway)."""
    import asyncio
    import os

    from camfleet_dev.clip import ClipError, export_clip
    from overlay_gateway.history import BadQuery, parse_time

    token = os.environ.get("CAMFLEET_TOKEN", "")
    if not token:
        print("camfleet clip: set CAMFLEET_TOKEN to a viewer token", file=sys.stderr)
        return 2
    try:
        start, end = parse_time("--from", args.start), parse_time("--to", args.end)
    except BadQuery as exc:
        print(f"camfleet clip: {exc}", file=sys.stderr)
        return 2
    start_us = int(start.timestamp()) * 1_000_000 + start.microsecond
    end_us = int(end.timestamp()) * 1_000_000 + end.microsecond
    try:
        frames = asyncio.run(
            export_clip(args.gateway, token, args.camera, start_us, end_us, Path(args.output))
        )
    except ClipError as exc:
        print(f"camfleet clip: {exc}", file=sys.stderr)
        return 1
    print(f"{args.output}: {frames} frames")
    return 0


def _down(args: argparse.Namespace) -> int:
    from camfleet_dev.up import run_down

    return run_down(Path(args.state_dir), keep_state=args.keep_state)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camfleet",
        description="RTSP cameras to WebRTC with AI overlays, on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up", help="run the whole system locally (servers, operator, gateway, demo cameras)"
    )
    up.add_argument("--state-dir", default=".camfleet", help="reused by the next start")
    up.add_argument("--no-demo", action="store_true", help="no demo cameras or AI worker")
    up.add_argument("--no-ai", action="store_true", help="demo cameras without the AI worker")
    up.add_argument(
        "--cluster",
        action="store_true",
        help="root only: the shipped form (helm install) on a real one-node cluster instead of "
        "the local pod runner",
    )
    up.add_argument(
        "--camera", action="append", default=[], metavar="RTSP_URL", help="add a real camera"
    )
    for name in ("gateway", "kube", "livekit", "postgres", "redis", "rtsp", "s3"):
        up.add_argument(f"--{name}-port", type=int, default=None)
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop a running `camfleet up` and remove its state")
    down.add_argument("--state-dir", default=".camfleet")
    down.add_argument("--keep-state", action="store_true", help="stop only; keep the Cameras")
    down.set_defaults(func=_down)

    clip = sub.add_parser(
        "clip", help="export a recorded time range as one MP4 (token in CAMFLEET_TOKEN)"
    )
    clip.add_argument("--gateway", required=True, help="the gateway's URL")
    clip.add_argument("--camera", required=True, metavar="NAMESPACE/NAME")
    clip.add_argument("--from", dest="start", required=True, help="ISO-8601 or epoch ms")
    clip.add_argument("--to", dest="end", required=True, help="ISO-8601 or epoch ms")
    clip.add_argument("-o", "--output", required=True)
    clip.set_defaults(func=_clip)

    testbed = sub.add_parser(
        "testbed",
        help="run the local servers (kube-apiserver+etcd, Redis, livekit-server, RTSP camera)",
    )
    testbed.add_argument("--state-dir", default=".camfleet/testbed")
    testbed.set_defaults(func=_testbed)

    runner = sub.add_parser(
        "localrunner",
        help="run ingest Pods as local processes on a cluster without kubelet (dev/test only)",
    )
    runner.add_argument("--kubeconfig", default=None)
    runner.add_argument("--namespace", default=None, help="only this namespace (default: all)")
    runner.add_argument("--selector", default="app.kubernetes.io/managed-by=camfleet-operator")
    runner.add_argument("--work-dir", default=".camfleet/pods")
    runner.add_argument("--backoff-base", type=float, default=1.0)
    runner.add_argument("--backoff-cap", type=float, default=30.0)
    runner.add_argument("--log-level", default="INFO")
    runner.set_defaults(func=_localrunner)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
