"""Prometheus metrics of one gateway instance, on its own registry.

A registry per app (not the global one) lets tests run two gateway replicas in one process.
The event path's counters and histograms are plain integers and lists (`HotHistogram`), bumped
once per batch, and exported by a collector when /metrics is scraped: prometheus_client's
`inc`/`observe` (a lock and a few calls each) cost more than the fan-out itself at low load.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HotHistogram:
    """A histogram without locks or labels: one `bisect` and two additions per observation."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class _EventPathCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield CounterMetricFamily(
            "camfleet_gateway_events_in", "Valid events read from Redis.", value=m.events_in
        )
        invalid = CounterMetricFamily(
            "camfleet_gateway_events_invalid",
            "Stream entries dropped as malformed.",
            labels=["reason"],
        )
        for reason, count in sorted(m.events_invalid.items()):
            invalid.add_metric([reason], count)
        yield invalid
        yield CounterMetricFamily(
            "camfleet_gateway_events_out",
            "Event deliveries handed to client sockets (live and replayed).",
            value=m.events_out,
        )
        yield CounterMetricFamily(
            "camfleet_gateway_events_dropped",
            "Event deliveries dropped for slow clients (latest-wins per camera).",
            value=m.events_dropped,
        )
        yield CounterMetricFamily(
            "camfleet_gateway_redis_reads",
            "XREAD replies received by the stream readers (wake-ups of the event path).",
            value=m.redis_reads,
        )
        yield m.delivery_latency.family(
            "camfleet_gateway_delivery_latency_seconds",
            "From an event's arrival from Redis to its hand-off to the last subscriber's socket.",
        )
        yield m.event_age.family(
            "camfleet_gateway_event_age_seconds",
            "From an event's capture time (ts) to its hand-off to subscribers' sockets.",
        )


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        # The event path's figures, exported by _EventPathCollector.
        self.events_in = 0
        self.events_invalid: Tally[str] = Tally()
        self.events_out = 0
        self.events_dropped = 0
        self.redis_reads = 0
        self.delivery_latency = HotHistogram(_LATENCY_BUCKETS)
        self.event_age = HotHistogram(_AGE_BUCKETS)
        r.register(_EventPathCollector(self))
        self.connections = Gauge(
            "camfleet_gateway_connections", "Open WebSocket connections.", registry=r
        )
        self.connections_refused = Counter(
            "camfleet_gateway_connections_refused_total",
            "WebSocket upgrades refused.",
            ["reason"],
            registry=r,
        )
        self.handshakes = Gauge(
            "camfleet_gateway_pending_handshakes",
            "TCP connections accepted and not yet through their HTTP/WebSocket handshake.",
            registry=r,
        )
        self.handshake_timeouts = Counter(
            "camfleet_gateway_handshake_timeouts",
            "Connections closed for not completing their handshake in time.",
            registry=r,
        )
        self.protocol_closes = Counter(
            "camfleet_gateway_protocol_closes",
            "WebSocket connections closed by the gateway for a protocol or policy violation.",
            ["code"],
            registry=r,
        )
        self.subscribes_refused = Counter(
            "camfleet_gateway_subscribes_refused",
            "Subscribe messages (or cameras in them) refused before any lookup.",
            ["reason"],
            registry=r,
        )
        self.camera_lookups = Counter(
            "camfleet_gateway_camera_lookups",
            "Camera objects fetched from the Kubernetes API (cache misses).",
            ["result"],
            registry=r,
        )
        self.subscriptions = Gauge(
            "camfleet_gateway_subscriptions",
            "Camera subscriptions over all connections.",
            registry=r,
        )
        self.readers = Gauge(
            "camfleet_gateway_stream_readers",
            "Camera streams being read from Redis (each once per replica).",
            registry=r,
        )
        self.slow_disconnects = Counter(
            "camfleet_gateway_slow_client_disconnects",
            "Clients disconnected for staying over their send queue limit.",
            registry=r,
        )
        self.replays = Counter(
            "camfleet_gateway_replays", "Subscriptions that replayed with 'since'.", registry=r
        )
        self.replayed_events = Counter(
            "camfleet_gateway_replayed_events", "Events sent from replays.", registry=r
        )
        self.redis_errors = Counter(
            "camfleet_gateway_redis_errors", "Redis errors seen by stream readers.", registry=r
        )
        self.authz_decisions = Counter(
            "camfleet_gateway_authz_decisions",
            "Authorisation decisions per camera.",
            ["result", "cached"],
            registry=r,
        )
        self.tokens_issued = Counter(
            "camfleet_gateway_viewer_tokens", "LiveKit viewer tokens issued.", registry=r
        )
