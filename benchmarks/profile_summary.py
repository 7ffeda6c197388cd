"""Where the gateway's CPU goes, from py-spy's raw stacks (`gateway_fanout.py --profile DIR`).

Each sample is put in the first category whose marker appears in its stack (most specific
first); samples waiting in epoll are idle and left out of the shares.

    .venv/bin/python benchmarks/profile_summary.py DIR/shared-100.txt [--events N]

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


def summarise(path: Path) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        for name, markers in CATEGORIES:
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
    args = parser.parse_args()
    for path in args.profile:
        counts, busy = summarise(path)
        print(f"## {path.name}: {busy} busy samples of {sum(counts.values())}")
        print("| where | share of busy CPU |" + (" µs per event |" if args.events else ""))
        print("|---|---:|" + ("---:|" if args.events else ""))
        for name, n in counts.most_common():
            if name.startswith("idle"):
                continue
            row = f"| {name} | {100 * n / busy:.0f} % |"
            if args.events:
                row += f" {n / args.rate / args.events * 1e6:.0f} |"
            print(row)
        print()


if __name__ == "__main__":
    main()
