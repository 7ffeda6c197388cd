"""The event path's plain counters and histograms, as Prometheus sees them at scrape time."""

from __future__ import annotations

from prometheus_client import generate_latest

from overlay_gateway.metrics import HotHistogram, Metrics


def _samples(metrics: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_counters_are_exported_under_their_names() -> None:
    m = Metrics()
    m.events_in += 3
    m.events_out += 7
    m.events_dropped += 1
    m.redis_reads += 2
    m.events_invalid["schema"] += 2
    s = _samples(m)
    assert s["camfleet_gateway_events_in_total"] == 3
    assert s["camfleet_gateway_events_out_total"] == 7
    assert s["camfleet_gateway_events_dropped_total"] == 1
    assert s["camfleet_gateway_redis_reads_total"] == 2
    assert s['camfleet_gateway_events_invalid_total{reason="schema"}'] == 2


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    h = HotHistogram((0.001, 0.01))
    for value in (0.0005, 0.001, 0.005, 0.5):
        h.observe(value)
    assert h.counts == [2, 1, 1]  # le 0.001 holds 0.001 itself, as Prometheus's le does
    m = Metrics()
    m.delivery_latency = h
    s = _samples(m)
    name = "camfleet_gateway_delivery_latency_seconds"
    assert s[f'{name}_bucket{{le="0.001"}}'] == 2
    assert s[f'{name}_bucket{{le="0.01"}}'] == 3
    assert s[f'{name}_bucket{{le="+Inf"}}'] == 4
    assert s[f"{name}_count"] == 4
    assert abs(s[f"{name}_sum"] - 0.5065) < 1e-9
