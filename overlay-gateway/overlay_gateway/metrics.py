"""Prometheus metrics of one gateway instance, on its own registry.

A registry per app (not the global one) lets tests run two gateway replicas in one process.
Hot-path counters are bumped once per event or batch, never once per delivery.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
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
        self.events_in = Counter(
            "camfleet_gateway_events_in", "Valid events read from Redis.", registry=r
        )
        self.events_invalid = Counter(
            "camfleet_gateway_events_invalid",
            "Stream entries dropped as malformed.",
            ["reason"],
            registry=r,
        )
        self.events_out = Counter(
            "camfleet_gateway_events_out",
            "Event deliveries handed to client sockets (live and replayed).",
            registry=r,
        )
        self.events_dropped = Counter(
            "camfleet_gateway_events_dropped",
            "Event deliveries dropped for slow clients (latest-wins per camera).",
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
        self.delivery_latency = Histogram(
            "camfleet_gateway_delivery_latency_seconds",
            "From an event's arrival from Redis to its hand-off to the last subscriber's socket.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_age = Histogram(
            "camfleet_gateway_event_age_seconds",
            "From an event's capture time (ts) to its hand-off to subscribers' sockets.",
            buckets=_AGE_BUCKETS,
            registry=r,
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
