"""/healthz follows the frame clock; /metrics carries rates, counters and the last failure."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient, TestServer

from camfleet_ingest.health import IngestState, init_app


def test_healthy_only_while_frames_flow() -> None:
    state = IngestState("ns/cam", window=3.0)
    now = time.monotonic()
    assert not state.healthy(now)
    state.frame_published(1000, now)
    assert state.healthy(now + 2.9)
    assert not state.healthy(now + 3.1)


def test_a_failure_is_unhealthy_at_once_until_frames_flow_again() -> None:
    state = IngestState("ns/cam", window=3.0)
    now = time.monotonic()
    state.frame_published(1000, now)
    state.failed("Unreachable")
    assert not state.healthy(now + 0.1)  # not after the 3 s window: now
    state.frame_published(1000, now + 5)
    assert state.healthy(now + 5.1)


def test_rates_over_the_window() -> None:
    state = IngestState("ns/cam", window=3.0)
    start = 1000.0
    for n in range(125):  # 5 s of 25 fps, 2 kB per frame
        state.frame_published(2000, start + n * 0.04)
    fps, bps = state.rates(start + 5.0)
    assert 24 <= fps <= 25
    assert 24 * 16000 <= bps <= 25 * 16000


async def test_endpoints() -> None:
    state = IngestState("ns/cam", window=3.0)
    async with TestClient(TestServer(init_app(state))) as client:
        assert (await client.get("/healthz")).status == 503
        state.failed("Unreachable")
        state.reconnecting("source")
        state.frame_published(500)  # frames flow again after the failure
        state.source_info("passthrough", "h264", "1920x1080")
        assert (await client.get("/healthz")).status == 200
        text = await (await client.get("/metrics")).text()
    assert 'camfleet_ingest_frames_total{camera="ns/cam"} 1.0' in text
    assert 'camfleet_ingest_last_failure{camera="ns/cam",reason="Unreachable"} 1.0' in text
    assert 'camfleet_ingest_last_failure{camera="ns/cam",reason="AuthFailed"} 0.0' in text
    assert 'camfleet_ingest_reconnects_total{camera="ns/cam",side="source"} 1.0' in text
    assert 'mode="passthrough"' in text
    assert 'camfleet_ingest_publishing{camera="ns/cam"} 1.0' in text
