"""Gateway test clients: settings for an in-process gateway, a JSON WebSocket client with
timeouts, a raw-socket client (for clients that misbehave on the wire), metrics scraping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import socket
import time
from typing import Any

import aiohttp

from camfleet_dev.gateway import RunningGateway
from overlay_gateway.settings import Settings

TOKEN = "local-dev-token-" + secrets.token_hex(4)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings(redis_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "auth_modes": ["static"],
        "static_token": TOKEN,
        "kube_enabled": False,
        "reader_linger_seconds": 0,
        "redis_backoff_initial_seconds": 0.05,
        "redis_backoff_max_seconds": 0.5,
        "xread_block_ms": 1000,
    }
    base.update(overrides)
    return Settings(**base)


def new_camera() -> str:
    return f"ns-{secrets.token_hex(3)}/cam"


def event(camera: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "camera": camera,
        "ts": int(time.time() * 1000),
        "frame": n,
        "source": "test",
        "objects": [{"id": f"t{n}", "label": "person", "score": 0.9, "box": [0.1, 0.1, 0.2, 0.2]}],
        **extra,
    }


class Client:
    # Receive helpers take a timeout: a missing message must fail the test, not hang it.
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def recv_raw(self, timeout: float = 5.0) -> str:  # noqa: ASYNC109
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        return str(msg.data)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        data: dict[str, Any] = json.loads(await self.recv_raw(timeout))
        return data

    async def expect(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        msg = await self.recv(timeout)
        assert msg["type"] == type_, msg
        return msg

    async def subscribe(
        self, *cameras: str, since: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        await self.send({"type": "subscribe", "cameras": list(cameras), "since": since or {}})
        return [await self.expect("subscribed") for _ in cameras]

    async def events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        out: list[dict[str, Any]] = []
        while len(out) < n:
            msg = await self.recv(timeout)
            if msg["type"] == "event":
                out.append(msg)
        return out

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def connect(gw: RunningGateway, headers: dict[str, str] | None = None) -> Client:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(gw.ws_url, headers=headers or AUTH, protocols=("camfleet.v1",))
    client = Client(session, ws)
    hello = await client.expect("hello")
    assert hello["v"] == 1
    return client


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(?:\{\})?")
    match = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def scrape(gw: RunningGateway) -> str:
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def raw_ws(url: str, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket client on a bare socket that reads only when told to (a 'slow' browser)."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    return sock


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + mask + body


def frame(opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True) -> bytes:
    """One client WebSocket frame (RFC 6455 §5.2), of any length, masked unless told not to."""
    n = len(payload)
    head = bytes((0x80 * fin | opcode,))
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes((bit | n,))
    elif n < 1 << 16:
        head += bytes((bit | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((bit | 127,)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    # XOR with the repeated 4-byte key, via one big integer (fast for megabytes).
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


class RawClient:
    """A WebSocket client on a bare socket that has read the 101 answer."""

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self.buffer = buffered

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _fill(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        while len(self.buffer) < n:
            chunk = await loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk

    async def recv_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:  # noqa: ASYNC109
        """The next server frame: (opcode, payload); server frames are never masked."""
        async with asyncio.timeout(timeout):
            await self._fill(2)
            n = self.buffer[1] & 0x7F
            start = 2
            if n == 126:
                await self._fill(4)
                n, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif n == 127:
                await self._fill(10)
                n, start = int.from_bytes(self.buffer[2:10], "big"), 10
            await self._fill(start + n)
            opcode = self.buffer[0] & 0x0F
            payload, self.buffer = self.buffer[start : start + n], self.buffer[start + n :]
            return opcode, payload

    async def recv_close(self, timeout: float = 5.0) -> int:  # noqa: ASYNC109
        """Skip data frames up to the close frame; returns its code."""
        while True:
            opcode, payload = await self.recv_frame(timeout)
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big")

    def close(self) -> None:
        self.sock.close()


async def raw_connect(url: str) -> RawClient:
    """A raw-socket WebSocket client, upgraded, that has read the hello message."""
    sock = await raw_ws(url, rcvbuf=1 << 20)
    client = RawClient(sock, b"")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        while b"\r\n\r\n" not in client.buffer:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            client.buffer += chunk
    head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    opcode, hello = await client.recv_frame()
    assert opcode == 0x1
    assert json.loads(hello)["type"] == "hello"
    return client
