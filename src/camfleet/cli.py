"""The ``camfleet`` command: one entry point for the local stack and the ingest process."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

Command = Callable[[argparse.Namespace], int]


def _testbed(args: argparse.Namespace) -> int:
    """Start the real servers of the test bed on loopback and keep them up until Ctrl-C."""
    from camfleet.testbed.stack import run_testbed  # noqa: PLC0415 - keeps `--help` fast

    return run_testbed(Path(args.state_dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camfleet",
        description="RTSP cameras to WebRTC with AI overlays, on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    testbed = sub.add_parser(
        "testbed",
        help="run the local servers (kube-apiserver+etcd, Redis, livekit-server, RTSP camera)",
    )
    testbed.add_argument("--state-dir", default=".camfleet/testbed")
    testbed.set_defaults(func=_testbed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (the caller then stops what it started)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    sys.exit(main())
