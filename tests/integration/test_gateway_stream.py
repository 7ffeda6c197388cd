"""The overlay gateway against a real redis-server: fan-out, replay, backpressure, garbage,
Redis restarts, replicas, limits and shutdown. The gateway runs in-process on a loopback port;
clients are real WebSocket clients (aiohttp, and a raw socket for the client that never reads).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from gateway_clients import (
    AUTH,
    connect,
    event,
    masked_text,
    metric,
    new_camera,
    raw_ws,
    scrape,
    settings,
)

from camfleet.ai import AsyncPublisher, Publisher
from camfleet.events import stream_key
from camfleet_dev.gateway import RunningGateway, run_gateway
from camfleet_dev.testbed.redis import RedisServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ai_worker_publish.py"


@pytest.fixture
async def gateway(redis_server: RedisServer) -> AsyncIterator[RunningGateway]:
    async with run_gateway(settings(redis_server.url)) as gw:
        yield gw


@pytest.fixture
async def publisher(redis_server: RedisServer) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher(redis_server.url) as pub:
        yield pub


async def test_sdk_event_reaches_two_clients_as_identical_bytes(
    gateway: RunningGateway, redis_server: RedisServer
) -> None:
    cam = new_camera()
    a, b = await connect(gateway), await connect(gateway)
    try:
        acks = [(await a.subscribe(cam))[0], (await b.subscribe(cam))[0]]
        assert all(ack["state"] == "live" and ack["replayed"] == 0 for ack in acks)
        # The synchronous SDK, from a worker thread, as a blocking AI worker would use it.
        with Publisher(redis_server.url) as pub:
            ids = await asyncio.to_thread(pub.publish_many, [event(cam, 1), event(cam, 2)])
            ids.append(await asyncio.to_thread(pub.publish, event(cam, 3)))
        raw_a = [await a.recv_raw() for _ in range(3)]
        raw_b = [await b.recv_raw() for _ in range(3)]
        assert raw_a == raw_b  # byte-identical JSON
        msgs = [json.loads(r) for r in raw_a]
        assert [m["id"] for m in msgs] == ids
        assert [m["event"]["frame"] for m in msgs] == [1, 2, 3]
        assert msgs[0]["camera"] == cam
        assert msgs[0]["event"]["objects"][0]["box"] == [0.1, 0.1, 0.2, 0.2]
        assert gateway.hub.subscribers(cam) == 2
        text = await scrape(gateway)
        assert metric(text, "camfleet_gateway_stream_readers") == 1  # one reader, two clients
        assert metric(text, "camfleet_gateway_events_out_total") >= 6
    finally:
        await a.close()
        await b.close()


async def test_sdk_refuses_invalid_events_before_redis(redis_server: RedisServer) -> None:
    cam = new_camera()
    r = aioredis.from_url(redis_server.url)
    try:
        async with AsyncPublisher(redis_server.url, retention=50) as pub:
            bad = event(cam, 1)
            bad["objects"][0]["box"] = [0.9, 0.9, 0.5, 0.5]
            with pytest.raises(ValueError, match="inside the frame"):
                await pub.publish_many([event(cam, 0), bad])
            assert await r.exists(stream_key(cam)) == 0  # nothing of the batch was sent
            await pub.publish_many([event(cam, i) for i in range(400)])
        # MAXLEN ~ 50: trimmed to about the retention (whole radix nodes, so a bit above).
        assert 50 <= await r.xlen(stream_key(cam)) < 200
    finally:
        await r.aclose()


async def test_reconnect_with_since_replays_exactly_the_missed_events(
    gateway: RunningGateway, publisher: AsyncPublisher
) -> None:
    cam = new_camera()
    first = await connect(gateway)
    await first.subscribe(cam)
    await publisher.publish_many([event(cam, i) for i in range(3)])
    seen = await first.events(3)
    last_id = seen[-1]["id"]
    await first.close()

    missed = await publisher.publish_many([event(cam, i) for i in range(3, 8)])
    again = await connect(gateway)
    try:
        ack = (await again.subscribe(cam, since={cam: last_id}))[0]
        assert ack == {
            "type": "subscribed",
            "camera": cam,
            "replayed": 5,
            "gap": False,
            "state": "live",
        }
        replayed = await again.events(5)
        assert [m["id"] for m in replayed] == missed
        assert [m["event"]["frame"] for m in replayed] == [3, 4, 5, 6, 7]
        live = await publisher.publish(event(cam, 8))
        nxt = await again.events(1)
        assert nxt[0]["id"] == live  # no duplicate of the replayed ones in between
        with pytest.raises(TimeoutError):
            await again.recv(timeout=0.3)
    finally:
        await again.close()
    text = await scrape(gateway)
    assert metric(text, "camfleet_gateway_replays_total") >= 1
    assert metric(text, "camfleet_gateway_replayed_events_total") >= 5


async def test_since_older_than_retention_reports_a_gap(
    redis_server: RedisServer, gateway: RunningGateway
) -> None:
    cam = new_camera()
    async with AsyncPublisher(redis_server.url, retention=10) as pub:
        ids = await pub.publish_many([event(cam, i) for i in range(500)])
    client = await connect(gateway)
    try:
        ack = (await client.subscribe(cam, since={cam: ids[0]}))[0]
        assert ack["gap"] is True
        replayed = await client.events(ack["replayed"])
        assert replayed[-1]["id"] == ids[-1]
    finally:
        await client.close()


async def test_garbage_in_the_stream_is_dropped_and_counted(
    gateway: RunningGateway, redis_server: RedisServer, publisher: AsyncPublisher
) -> None:
    cam = new_camera()
    client = await connect(gateway)
    r = aioredis.from_url(redis_server.url)
    try:
        await client.subscribe(cam)
        before = await scrape(gateway)
        key = stream_key(cam)
        bad_box = event(cam, 1)
        bad_box["objects"][0]["box"] = [0.5, 0.5, 0.9, 0.1]
        await r.xadd(key, {"e": b"this is not json"})
        await r.xadd(key, {"e": json.dumps({**event(cam, 1), "v": 2})})
        await r.xadd(key, {"e": json.dumps(bad_box)})
        await r.xadd(key, {"e": b'{"v":1,"x":"' + b"y" * (10 * 1024 * 1024) + b'"}'})
        await r.xadd(key, {"other": b"field"})
        await r.xadd(key, {"e": json.dumps(event("elsewhere/cam", 1))})
        good = await publisher.publish(event(cam, 2))
        got = await client.events(1)
        assert got[0]["id"] == good  # only the valid one came through
        after = await scrape(gateway)
        name = "camfleet_gateway_events_invalid_total"
        for reason in (
            "not_json",
            "version",
            "schema",
            "too_large",
            "missing_field",
            "camera_mismatch",
        ):
            lbl = f'reason="{reason}"'
            assert metric(after, name, lbl) - metric(before, name, lbl) == 1, reason
        async with aiohttp.ClientSession() as s, s.get(gateway.url + "/healthz") as resp:
            assert resp.status == 200
        # The reader is still alive and delivering.
        again = await publisher.publish(event(cam, 3))
        assert (await client.events(1))[0]["id"] == again
    finally:
        await r.aclose()
        await client.close()


async def test_slow_client_is_bounded_then_disconnected_others_unaffected(
    redis_server: RedisServer, publisher: AsyncPublisher
) -> None:
    cam = new_camera()
    cfg = settings(
        redis_server.url,
        send_queue_size=8,
        max_subscriptions=4,
        socket_high_water_bytes=16 * 1024,
        slow_client_timeout_seconds=1.0,
    )
    async with run_gateway(cfg) as gw:
        fast = await connect(gw)
        await fast.subscribe(cam)
        slow = await raw_ws(gw.ws_url)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(
            slow, masked_text(json.dumps({"type": "subscribe", "cameras": [cam]}).encode())
        )
        async with asyncio.timeout(5):
            while gw.hub.subscribers(cam) < 2:  # noqa: ASYNC110 - polling the server's state
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the ack is in flight; from now on the slow client reads nothing
        # Connections are numbered in order of arrival: the slow one came second.
        slow_conn = max(gw.hub.connections, key=lambda c: int(c.ident[1:]))
        padding = {"note": "x" * 3500}
        total, max_queue = 0, 0
        received = 0
        started = time.monotonic()
        # ~4 KB events until the slow client has been over its limit long enough to be cut.
        while not slow_conn.closed and time.monotonic() - started < 15:
            await publisher.publish_many(
                [event(cam, total + i, attributes=padding) for i in range(50)]
            )
            total += 50
            received += len(await fast.events(50))
            max_queue = max(max_queue, len(slow_conn.queue))
        assert slow_conn.closed, "the slow client was never disconnected"
        assert max_queue <= 8
        assert slow_conn.dropped > 0
        assert received == total  # the fast client got every event
        text = await scrape(gw)
        assert metric(text, "camfleet_gateway_events_dropped_total") >= slow_conn.dropped
        assert metric(text, "camfleet_gateway_slow_client_disconnects_total") == 1
        for _ in range(100):
            if len(gw.hub.connections) == 1:
                break
            await asyncio.sleep(0.02)
        assert len(gw.hub.connections) == 1
        # The fast client is still served after the slow one is gone.
        last = await publisher.publish(event(cam, -1 + 10**6))
        assert (await fast.events(1))[0]["id"] == last
        slow.close()
        await fast.close()


async def test_redis_restart_mid_stream_loses_nothing(
    redis_server: RedisServer, gateway: RunningGateway
) -> None:
    cam = new_camera()
    client = await connect(gateway)
    follower = await connect(gateway)
    try:
        await client.subscribe(cam)
        await follower.subscribe(cam)
        with Publisher(redis_server.url) as pub:
            before = pub.publish_many([event(cam, i) for i in range(5)])
        got = await client.events(5)
        assert [m["id"] for m in got] == before
        last_seen = (await follower.events(5))[-1]["id"]
        await follower.close()  # this one will come back with `since`

        await asyncio.to_thread(redis_server.stop)
        status = await client.expect("status", timeout=5)
        assert status == {"type": "status", "camera": cam, "state": "degraded"}
        async with aiohttp.ClientSession() as s, s.get(gateway.url + "/readyz") as resp:
            assert resp.status == 503
        await asyncio.to_thread(redis_server.start)

        # Published as soon as Redis is back, likely before the reader's backoff ends.
        with Publisher(redis_server.url) as pub:
            after = pub.publish_many([event(cam, i) for i in range(5, 10)])
        msgs: list[dict[str, Any]] = []
        while len([m for m in msgs if m["type"] == "event"]) < 5:
            msgs.append(await client.recv(timeout=10))
        assert {"type": "status", "camera": cam, "state": "live"} in msgs
        assert [m["id"] for m in msgs if m["type"] == "event"] == after

        back = await connect(gateway)
        ack = (await back.subscribe(cam, since={cam: last_seen}))[0]
        assert ack["replayed"] == 5
        assert [m["id"] for m in await back.events(5)] == after
        await back.close()
        async with aiohttp.ClientSession() as s, s.get(gateway.url + "/readyz") as resp:
            assert resp.status == 200
    finally:
        await client.close()


async def test_two_replicas_on_one_redis_both_deliver_everything(
    redis_server: RedisServer, publisher: AsyncPublisher
) -> None:
    cams = [new_camera(), new_camera()]
    # g1 reads each camera on a connection of its own; g2 multiplexes both on one.
    async with (
        run_gateway(settings(redis_server.url, streams_per_reader=1)) as g1,
        run_gateway(settings(redis_server.url)) as g2,
    ):
        clients = [await connect(g) for g in (g1, g2, g1, g2)]
        try:
            for c in clients:
                await c.subscribe(*cams)
            ids = await publisher.publish_many([event(cams[i % 2], i) for i in range(40)])
            for c in clients:
                got = await c.events(40)
                assert sorted(m["id"] for m in got) == sorted(ids)
                for cam in cams:  # in order per camera
                    per_cam = [m["id"] for m in got if m["camera"] == cam]
                    assert per_cam == [i for n, i in enumerate(ids) if cams[n % 2] == cam]
            for g in (g1, g2):
                assert metric(await scrape(g), "camfleet_gateway_stream_readers") == 2
        finally:
            for c in clients:
                await c.close()


async def test_protocol_errors_limits_and_ping(redis_server: RedisServer) -> None:
    cfg = settings(
        redis_server.url,
        max_connections=2,
        max_subscriptions=2,
        send_queue_size=4,
        max_message_bytes=1024,
    )
    async with run_gateway(cfg) as gw:
        a = await connect(gw)
        async with aiohttp.ClientSession() as s:
            for headers in ({"Authorization": "Bearer wrong"}, {}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as unauth:
                    await s.ws_connect(gw.ws_url, headers=headers)
                assert unauth.value.status == 401
        b = await connect(gw)
        try:
            async with aiohttp.ClientSession() as s:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await s.ws_connect(gw.ws_url, headers=AUTH)
                assert refused.value.status == 503  # max_connections=2 on this replica
            await a.send({"type": "ping"})
            assert await a.recv() == {"type": "pong"}
            await a.send({"type": "dance"})
            assert (await a.expect("error"))["code"] == "unknown_type"
            await a.ws.send_str("{broken")
            assert (await a.expect("error"))["code"] == "bad_request"
            await a.send({"type": "subscribe", "cameras": ["Not A Camera"]})
            assert (await a.expect("error"))["code"] == "invalid_camera"
            c1, c2, c3 = new_camera(), new_camera(), new_camera()
            await a.send({"type": "subscribe", "cameras": [c1, c2, c3]})
            msgs = [await a.recv() for _ in range(3)]
            errors = [m for m in msgs if m["type"] == "error"]
            assert [e["code"] for e in errors] == ["too_many_subscriptions"]
            assert errors[0]["camera"] == c3
            await a.send({"type": "unsubscribe", "cameras": [c1]})
            assert await a.recv() == {"type": "unsubscribed", "camera": c1}
            assert gw.hub.subscribers(c1) == 0
            # Over the message size cap: the server closes with 1009 (message too big).
            await b.ws.send_str(json.dumps({"type": "ping", "pad": "x" * 2000}))
            closing = await b.ws.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert b.ws.close_code == 1009
        finally:
            await a.close()
            await b.close()


async def test_graceful_shutdown_sends_going_away(redis_server: RedisServer) -> None:
    async with run_gateway(settings(redis_server.url)) as gw:
        client = await connect(gw)
        await client.subscribe(new_camera())
        stopping = asyncio.create_task(gw.stop())
        msg = await client.ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1001
        await stopping
        await client.session.close()


async def test_health_ready_and_metrics_endpoints(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway.url + "/healthz") as resp:
            assert resp.status == 200
        async with s.get(gateway.url + "/readyz") as resp:
            assert resp.status == 200
        async with s.get(gateway.url + "/metrics") as resp:
            text = await resp.text()
    for name in (
        "camfleet_gateway_connections",
        "camfleet_gateway_subscriptions",
        "camfleet_gateway_events_in_total",
        "camfleet_gateway_events_out_total",
        "camfleet_gateway_events_dropped_total",
        "camfleet_gateway_replays_total",
        "camfleet_gateway_delivery_latency_seconds_bucket",
    ):
        assert name in text


async def test_example_worker_publishes_through_the_gateway(
    gateway: RunningGateway, redis_server: RedisServer
) -> None:
    cam = new_camera()
    client = await connect(gateway)
    try:
        await client.subscribe(cam)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            "--redis",
            redis_server.url,
            "--camera",
            cam,
            "--fps",
            "20",
            "--seconds",
            "0.5",
            "--batch",
            "2",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        published = int(out.split()[1])
        assert published >= 5
        got = await client.events(published)
        assert {m["event"]["source"] for m in got} == {"example-walker"}
        assert [m["event"]["frame"] for m in got] == list(range(published))
    finally:
        await client.close()


async def test_a_new_camera_interrupts_the_blocked_read(
    redis_server: RedisServer, publisher: AsyncPublisher
) -> None:
    first, second = new_camera(), new_camera()
    async with run_gateway(settings(redis_server.url, xread_block_ms=10_000)) as gw:
        client = await connect(gw)
        try:
            await client.subscribe(first)
            await asyncio.sleep(0.3)  # the reader now blocks for up to 10 s on `first` alone
            await client.subscribe(second)
            started = time.monotonic()
            sent = await publisher.publish(event(second, 1))
            got = await client.events(1, timeout=5)
            assert got[0]["id"] == sent
            # Without CLIENT UNBLOCK this would wait for the 10 s block to end.
            assert time.monotonic() - started < 2
            assert metric(await scrape(gw), "camfleet_gateway_stream_readers") == 2
        finally:
            await client.close()
