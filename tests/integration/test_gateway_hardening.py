"""The gateway against clients that misbehave: oversized, binary and unmasked frames, sockets
that never finish their handshake, subscribe floods, and the Redis connections many cameras
leave behind. Real gateway in-process, real redis-server; the wire-level clients are raw
sockets with their own frame encoder (gateway_clients.frame).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from gateway_clients import (
    AUTH,
    connect,
    event,
    frame,
    metric,
    new_camera,
    raw_connect,
    scrape,
    settings,
)

from camfleet.ai import AsyncPublisher
from camfleet_dev.gateway import RunningGateway, run_gateway
from camfleet_dev.testbed.redis import RedisServer
from overlay_gateway import keys
from overlay_gateway.admission import ACCEPT_HEADROOM

OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8


@pytest.fixture
async def gateway(redis_server: RedisServer) -> AsyncIterator[RunningGateway]:
    async with run_gateway(settings(redis_server.url)) as gw:
        yield gw


async def closes_cleanly(sock: socket.socket) -> bool:
    """After the close handshake the server ends the TCP connection with a FIN, not a reset."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5):
            while await loop.sock_recv(sock, 65536):
                pass
    except ConnectionResetError:
        return False
    return True


async def wait_for(check: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    assert callable(check)
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_oversized_message_gets_a_1009_close_frame_not_a_reset(
    gateway: RunningGateway,
) -> None:
    client = await raw_connect(gateway.ws_url)
    try:
        # 10 MB against a 16 KiB limit: the gateway decides on the header and must keep
        # reading (and discarding) the rest, or the unread bytes turn its close into a reset.
        await client.send(frame(OP_TEXT, b"x" * (10 * 1024 * 1024)))
        assert await client.recv_close(timeout=10) == 1009
        await client.send(frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        assert await closes_cleanly(client.sock)
    finally:
        client.close()
    await wait_for(lambda: not gateway.hub.connections)
    assert metric(await scrape(gateway), "camfleet_gateway_protocol_closes_total", 'code="1009"')


async def test_fragmented_message_over_the_limit_is_refused_with_1009(
    gateway: RunningGateway,
) -> None:
    client = await raw_connect(gateway.ws_url)
    try:
        piece = b"x" * 10_000  # each fragment is under the limit, the message is not
        await client.send(frame(OP_TEXT, piece, fin=False) + frame(0x0, piece, fin=False))
        assert await client.recv_close() == 1009
    finally:
        client.close()


async def test_binary_frame_closes_with_1003(gateway: RunningGateway) -> None:
    client = await connect(gateway)
    await client.ws.send_bytes(b'{"type":"ping"}')
    msg = await client.ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1003  # unsupported data: the protocol is text frames only
    await client.close()
    assert metric(await scrape(gateway), "camfleet_gateway_protocol_closes_total", 'code="1003"')


async def test_unmasked_client_frame_closes_with_1002(gateway: RunningGateway) -> None:
    client = await raw_connect(gateway.ws_url)
    try:
        # Well-formed in every other way: a masked copy of it would get a pong.
        await client.send(frame(OP_TEXT, b'{"type":"ping"}', masked=False))
        opcode, payload = await client.recv_frame()
        assert opcode == OP_CLOSE, payload  # no pong first
        assert int.from_bytes(payload[:2], "big") == 1002
        await client.send(frame(OP_CLOSE, (1002).to_bytes(2, "big")))
        assert await closes_cleanly(client.sock)
    finally:
        client.close()
    # The masked one works on a fresh connection.
    again = await raw_connect(gateway.ws_url)
    try:
        await again.send(frame(OP_TEXT, b'{"type":"ping"}'))
        assert await again.recv_frame() == (OP_TEXT, b'{"type":"pong"}')
    finally:
        again.close()


async def test_handshakes_time_out_and_count_toward_the_connection_limit(
    redis_server: RedisServer,
) -> None:
    cfg = settings(redis_server.url, max_connections=2, handshake_timeout_seconds=1.0)
    async with run_gateway(cfg) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        loop = asyncio.get_running_loop()

        async def tcp(data: bytes = b"") -> socket.socket:
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, int(port)))
            if data:
                await loop.sock_sendall(sock, data)
            return sock

        silent = await tcp()
        half = await tcp(b"GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: webs")
        await asyncio.sleep(0.2)  # both accepted and waiting
        async with aiohttp.ClientSession() as s:
            # Two half-open sockets fill this replica: the upgrade is refused, with a 503.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect(gw.ws_url, headers=AUTH)
            assert refused.value.status == 503
            started = time.monotonic()
            for sock in (silent, half):
                assert await closes_or_resets(sock)
            assert time.monotonic() - started < 3  # the 1 s handshake timeout, not minutes
            ws = await s.ws_connect(gw.ws_url, headers=AUTH, protocols=("camfleet.v1",))
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
            await ws.close()
        for sock in (silent, half):
            sock.close()
        text = await scrape(gw)
        assert metric(text, "camfleet_gateway_handshake_timeouts_total") >= 2
        assert metric(text, "camfleet_gateway_pending_handshakes") == 0


async def test_connections_far_beyond_the_limit_are_closed_at_once(
    redis_server: RedisServer,
) -> None:
    cfg = settings(redis_server.url, max_connections=2, handshake_timeout_seconds=5.0)
    async with run_gateway(cfg) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        loop = asyncio.get_running_loop()
        socks = []
        for _ in range(2 + ACCEPT_HEADROOM + 6):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, int(port)))
            socks.append(sock)
        await asyncio.sleep(0.5)  # well before the 5 s handshake timeout

        async def closed(sock: socket.socket) -> bool:
            try:
                return await asyncio.wait_for(loop.sock_recv(sock, 1), 0.05) == b""
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False

        verdicts = [await closed(sock) for sock in socks]
        # Up to the limit plus the headroom wait for their handshake; the rest are cut.
        assert verdicts.count(True) == 5
        assert verdicts[: 2 + ACCEPT_HEADROOM] == [False] * (2 + ACCEPT_HEADROOM)
        for sock in socks:
            sock.close()
        assert (
            metric(
                await scrape(gw), "camfleet_gateway_connections_refused_total", 'reason="capacity"'
            )
            == 5
        )


async def closes_or_resets(sock: socket.socket) -> bool:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5):
            while await loop.sock_recv(sock, 65536):
                pass
    except ConnectionResetError:
        pass
    return True


async def test_subscribe_flood_is_bounded_and_a_normal_client_is_unaffected(
    redis_server: RedisServer,
) -> None:
    cfg = settings(
        redis_server.url,
        max_cameras_per_message=8,
        max_subscriptions=8,
        send_queue_size=16,
        subscribe_rate_per_second=2,
        subscribe_burst=4,
    )
    cam = new_camera()
    async with run_gateway(cfg) as gw, AsyncPublisher(redis_server.url) as pub:
        normal = await connect(gw)
        await normal.subscribe(cam)
        abuser = await connect(gw)
        before = await scrape(gw)

        # 1,000 cameras in one message: refused whole, before any authorisation.
        await abuser.send({"type": "subscribe", "cameras": [f"n/c{i}" for i in range(1000)]})
        assert (await abuser.expect("error"))["code"] == "too_many_cameras"
        # 12 cameras where 8 are allowed per connection: 4 refused without a lookup.
        many = [new_camera() for _ in range(8)]
        await abuser.send({"type": "subscribe", "cameras": many})
        assert {(await abuser.expect("subscribed"))["camera"] for _ in many} == set(many)
        await abuser.send({"type": "subscribe", "cameras": [new_camera() for _ in range(4)]})
        codes = [(await abuser.expect("error"))["code"] for _ in range(4)]
        assert codes == ["too_many_subscriptions"] * 4
        after_limits = await scrape(gw)
        decisions = "camfleet_gateway_authz_decisions_total"
        looked_up = sum(
            metric(after_limits, decisions, f'cached="{c}",result="allowed"')
            - metric(before, decisions, f'cached="{c}",result="allowed"')
            for c in ("true", "false")
        )
        assert looked_up == 8  # only the cameras it got

        # Then a flood of subscribes, while events flow to the normal client.
        async def flood() -> list[str]:
            codes: list[str] = []
            for _ in range(50):
                try:
                    await abuser.send({"type": "subscribe", "cameras": [new_camera()]})
                except (ConnectionError, aiohttp.ClientConnectionResetError):
                    break
            while True:
                msg = await abuser.ws.receive(timeout=5)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    assert msg.type is aiohttp.WSMsgType.CLOSE, msg
                    assert msg.data == 1008  # policy violation
                    return codes
                body = json.loads(msg.data)
                if body["type"] == "error":
                    codes.append(body["code"])

        flooding = asyncio.create_task(flood())
        ids: list[str] = []
        started = time.monotonic()
        for i in range(20):
            sent = await pub.publish(event(cam, i))
            ids.append(sent)
            got = await normal.events(1, timeout=2)
            assert got[0]["id"] == sent
        assert time.monotonic() - started < 5
        codes = await flooding
        assert set(codes) <= {"rate_limited", "too_many_subscriptions"}
        assert "rate_limited" in codes
        # The normal client is still subscribed and served.
        last = await pub.publish(event(cam, 99))
        assert (await normal.events(1))[0]["id"] == last
        text = await scrape(gw)
        refused = "camfleet_gateway_subscribes_refused_total"
        assert metric(text, refused, 'reason="too_many_cameras"') == 1
        assert metric(text, refused, 'reason="too_many_subscriptions"') >= 4
        assert metric(text, refused, 'reason="rate_limited"') >= 4
        assert metric(text, "camfleet_gateway_protocol_closes_total", 'code="1008"') == 1
        await normal.close()
        await abuser.session.close()


async def redis_clients(redis: aioredis.Redis) -> int:
    """Connections to the test bed's Redis (this test's own ones are steady meanwhile)."""
    return len(await redis.client_list())


async def test_redis_connections_follow_activity(redis_server: RedisServer) -> None:
    cfg = settings(redis_server.url, streams_per_reader=4, redis_idle_seconds=1.0)
    r = aioredis.from_url(redis_server.url)
    try:
        async with run_gateway(cfg) as gw, AsyncPublisher(redis_server.url) as pub:
            cams = [new_camera() for _ in range(40)]
            ids = {c: await pub.publish(event(c, 0)) for c in cams}
            idle = await redis_clients(r)
            client = await connect(gw)
            # With `since`: 40 replays at once, on 10 readers of 4 streams each.
            acks = await client.subscribe(*cams, since=ids)
            assert all(a["type"] == "subscribed" for a in acks)
            busy = await redis_clients(r)
            assert busy >= idle + 10  # one per reader at least
            await client.close()
            deadline = time.monotonic() + 10
            while (now := await redis_clients(r)) > idle:
                assert time.monotonic() < deadline, f"{now} Redis connections left ({busy} busy)"
                await asyncio.sleep(0.2)
            # And they come back when needed.
            again = await connect(gw)
            await again.subscribe(cams[0])
            sent = await pub.publish(event(cams[0], 1))
            assert (await again.events(1))[0]["id"] == sent
            await again.close()
    finally:
        await r.aclose()


async def test_upgraded_connections_leave_aiohttp_and_hold_no_task(
    gateway: RunningGateway,
) -> None:
    """After the upgrade aiohttp forgets the socket (no request handler, parser, response or
    task stays behind per connection: docs/benchmarks.md, idle memory); the channel serves it.
    """
    cam = new_camera()
    tasks = len(asyncio.all_tasks())
    clients = [await raw_connect(gateway.ws_url) for _ in range(20)]
    try:
        for c in clients:
            await c.send(
                frame(OP_TEXT, json.dumps({"type": "subscribe", "cameras": [cam]}).encode())
            )
            opcode, payload = await c.recv_frame()
            assert (opcode, json.loads(payload)["type"]) == (OP_TEXT, "subscribed")
        assert gateway.runner.server is not None
        assert gateway.runner.server.connections == []
        assert len(gateway.app[keys.CHANNELS]) == len(gateway.hub.connections) == 20
        # The camera's stream reader is a task; the idle connections are none.
        assert len(asyncio.all_tasks()) <= tasks + 3
    finally:
        for c in clients:
            c.close()
    await wait_for(lambda: not gateway.hub.connections and not gateway.app[keys.CHANNELS])


async def test_heartbeat_cuts_a_client_that_stops_answering(redis_server: RedisServer) -> None:
    async with run_gateway(settings(redis_server.url, heartbeat_seconds=0.4)) as gw:
        answering = await connect(gw)  # aiohttp's client answers pings while it reads
        silent = await raw_connect(gw.ws_url)  # reads nothing, answers nothing
        try:
            pending = asyncio.create_task(answering.recv(timeout=5))
            await asyncio.sleep(1.2)  # three heartbeat periods
            await wait_for(lambda: len(gw.hub.connections) == 1, within=2)
            assert await closes_or_resets(silent.sock)
            await answering.send({"type": "ping"})
            assert await pending == {"type": "pong"}
        finally:
            silent.close()
            await answering.close()
