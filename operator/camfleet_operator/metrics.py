"""Prometheus metrics of the operator, on their own registry so tests can run several operators."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from camfleet_operator import constants as c


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.cameras = Gauge(
            "camfleet_cameras",
            "Cameras served by this operator replica, by phase",
            ["phase"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "camfleet_reconcile_duration_seconds",
            "Duration of one reconcile pass of one Camera",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.errors = Counter(
            "camfleet_reconcile_errors_total",
            "Reconcile faults by kind",
            ["kind"],
            registry=self.registry,
        )
        self.livekit_seconds = Histogram(
            "camfleet_livekit_api_duration_seconds",
            "Latency of LiveKit server API calls",
            ["method", "outcome"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self._phases: dict[str, str] = {}
        for phase in c.PHASES:
            self.cameras.labels(phase=phase).set(0)

    def set_phase(self, uid: str, phase: str | None) -> None:
        """Record a camera's phase (None when it is gone) and refresh the per-phase gauge."""
        if phase is None:
            self._phases.pop(uid, None)
        else:
            self._phases[uid] = phase
        counts: dict[str, int] = dict.fromkeys(c.PHASES, 0)
        for value in self._phases.values():
            counts[value] = counts.get(value, 0) + 1
        for name, count in counts.items():
            self.cameras.labels(phase=name).set(count)

    @contextmanager
    def livekit_call(self, method: str) -> Iterator[None]:
        start = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            self.livekit_seconds.labels(method=method, outcome=outcome).observe(
                time.perf_counter() - start
            )

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
