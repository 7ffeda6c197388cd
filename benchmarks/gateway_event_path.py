"""CPU of the per-event steps of the gateway, in-process (µs per event, best of 5 repeats).

The old and the new way of each step side by side: validation (the pydantic model, then its
JSON again, against the orjson fast path), metrics (prometheus_client's counter and histogram
against plain integers and `HotHistogram`).

    .venv/bin/python benchmarks/gateway_event_path.py
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from camfleet.events import Event, fast_event_json
from overlay_gateway.metrics import HotHistogram, Metrics

EVENT = (
    b'{"v":1,"camera":"bench/cam00","ts":1764000000000,"frame":1,"source":"bench",'
    b'"objects":[{"id":"t1","label":"person","score":0.87,"box":[0.112,0.084,0.301,0.277]}],'
    b'"attributes":{"zone":"entrance-north","pad":"' + b"x" * 150 + b'"}}'
)


def best(step: Callable[[], object], number: int = 20000) -> float:
    return min(timeit.repeat(step, number=number, repeat=5)) / number * 1e6


def main() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", registry=registry)
    histogram = Histogram("h", "h", registry=registry)
    metrics = Metrics()
    hot = HotHistogram((0.001, 0.01, 0.1, 1.0))

    def prometheus() -> None:  # per batch before: events_in, events_out, two observations
        counter.inc(1)
        counter.inc(2)
        histogram.observe(0.002)
        histogram.observe(0.004)

    def plain() -> None:
        metrics.events_in += 1
        metrics.events_out += 2
        hot.observe(0.002)
        hot.observe(0.004)

    rows = [
        (
            "validation: Event.model_validate_json + to_json",
            best(lambda: Event.model_validate_json(EVENT).to_json()),
        ),
        ("validation: fast_event_json", best(lambda: fast_event_json(EVENT))),
        ("metrics: prometheus_client (2 inc, 2 observe)", best(prometheus)),
        ("metrics: plain ints + HotHistogram", best(plain)),
    ]
    print("| step | µs per event |")
    print("|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
