"""Where a process's CPU goes, from py-spy's raw stacks: the gateway's
(`gateway_fanout.py --profile DIR`) or the ingest's Python threads
(`ingest_media.py cpu --profile DIR`, then `--categories ingest`).

Each sample is put in the first category whose marker appears in its stack (most specific
first); samples waiting in epoll/poll are idle and left out of the shares.

    .venv/bin/python benchmarks/profile_summary.py DIR/shared-100.txt [--events N]
    .venv/bin/python benchmarks/profile_summary.py DIR/ingest-1.txt --categories ingest

With --events (events read from Redis during the profiled window) it also prints the CPU
per incoming event of each category, from the sampling rate.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# (category, markers): a sample counts for the first category with a marker in its stack.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("idle (epoll wait)", ("epoll_pwait", "epoll_wait")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("logging", ("logging/", "logs.py", "jsonlog")),
    ("GC", ("gc_collect", "collect_with_callback", "gc_collect_main")),
    (
        "validation",
        (
            "model_validate_json",
            "classify_entry",
            "fast_event_json",
            "_check_attributes_size",
            "Event.to_json",
            "events.py",
        ),
    ),
    ("building the message/frame", ("event_message", "text_frame", "protocol.py")),
    ("socket writes (send syscall)", ("UVStream_write", "uv_try_write", "uv__write", "sendmsg")),
    ("fan-out loop (hub)", ("Hub.publish", "Connection.send", "hub.py")),
    (
        "XREAD: send, receive, parse",
        (
            "read_response",
            "RESP3Parser",
            "RESP2Parser",
            "hiredis",
            "_send_packed_command",
            "_xread_command",
            "StreamReader",
            "redis/",
            "_Shard",
        ),
    ),
    ("WebSocket reading, pings (aiohttp)", ("aiohttp/",)),
    (
        "asyncio scheduling (task wake-ups)",
        ("task_step", "Handle__run", "uv__run_idle", "call_soon", "loop.c"),
    ),
]


# The ingest's Python threads (the asyncio loop, the RTSP reader, the SDK's FFI callbacks);
# libwebrtc's and tokio's threads run no Python and are split by /proc (`threads_pct`).
INGEST_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "idle (waiting in epoll/poll/locks)",
        ("epoll_wait", "epoll_pwait", "ff_network_wait_fd", "__poll", "poll (", "_wait_for_tstate"),
    ),
    # take_gil waits on a condition variable: off the CPU, but a thread hand-off each time.
    ("idle (waiting for the GIL)", ("pthread_cond_timedwait",)),
    ("metrics (prometheus_client)", ("prometheus_client", "health.py")),
    ("logging", ("logging/", "logs.py", "jsonlog")),
    ("GC", ("gc_collect", "collect_with_callback", "gc_collect_main")),
    (
        "SDK FFI calls (capture_frame, feedback; protobuf + the native call)",
        ("capture_frame", "take_feedback", "_ffi_client", "livekit_ffi_request", "protobuf"),
    ),
    ("SDK event callbacks (native thread into Python)", ("ffi_event_callback", "FfiQueue")),
    (
        "FFmpeg RTSP demux (PyAV)",
        ("av_read_frame", "rtsp_read", "ff_rtsp", "rtp_parse", "libavformat", "demux"),
    ),
    ("Annex B and stamping (annexb, source, reader)", ("annexb.py", "source.py", "reader.py")),
    ("supervisor hot path (main, publisher, warm-up)", ("main.py", "publisher.py", "warmup.py")),
    (
        "asyncio scheduling (wake-ups, queue)",
        ("call_soon", "_run_once", "base_events.py", "queues.py", "selector_events", "events.py"),
    ),
]

CATEGORY_SETS = {"gateway": CATEGORIES, "ingest": INGEST_CATEGORIES}


def summarise(
    path: Path, categories: list[tuple[str, tuple[str, ...]]] = CATEGORIES
) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        for name, markers in categories:
            if any(m in stack for m in markers):
                counts[name] += int(n)
                break
        else:
            counts["other"] += int(n)
    busy = sum(c for k, c in counts.items() if not k.startswith("idle"))
    return counts, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path, nargs="+")
    parser.add_argument("--rate", type=float, default=100, help="py-spy samples per second")
    parser.add_argument("--events", type=float, default=0, help="events read while profiled")
    parser.add_argument("--categories", choices=sorted(CATEGORY_SETS), default="gateway")
    parser.add_argument(
        "--seconds", type=float, default=0, help="profiled window: also print % of one core"
    )
    args = parser.parse_args()
    for path in args.profile:
        counts, busy = summarise(path, CATEGORY_SETS[args.categories])
        print(f"## {path.name}: {busy} busy samples of {sum(counts.values())}")
        cores = " % of one core |" if args.seconds else ""
        events = " µs per event |" if args.events else ""
        print("| where | share of busy CPU |" + cores + events)
        print("|---|---:|" + ("---:|" if args.seconds else "") + ("---:|" if args.events else ""))
        for name, n in counts.most_common():
            if name.startswith("idle"):
                continue
            row = f"| {name} | {100 * n / busy:.0f} % |"
            if args.seconds:
                row += f" {100 * n / args.rate / args.seconds:.2f} |"
            if args.events:
                row += f" {n / args.rate / args.events * 1e6:.0f} |"
            print(row)
        print()


if __name__ == "__main__":
    main()
