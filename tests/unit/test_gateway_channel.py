"""The gateway's Channel on a real socket pair: client frames fed in pieces cut at every offset
(a header may arrive one byte at a time), misbehaving frames, the inbox's flow control, the
shared heartbeat and the close on shutdown. The endpoint is a recorder of what the channel
tells the session; the server side is a real asyncio transport, the client a plain socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from websockets.frames import CloseCode

from overlay_gateway.channel import INBOX_LIMIT, Channel, Channels
from overlay_gateway.metrics import Metrics

LIMIT = 1000


def frame(opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True) -> bytes:
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
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code: int) -> bytes:
    return frame(0x8, code.to_bytes(2, "big"))


@dataclass
class Recorder:
    """The channel's endpoint: records what it is told, in order; `gate` holds messages up."""

    said: list[tuple[str, object]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def handle(self, text: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.said.append(("message", text))

    def mute(self) -> None:
        self.said.append(("mute", None))

    def release(self) -> None:
        self.said.append(("release", None))

    def lost(self, code: int) -> None:
        self.said.append(("lost", code))

    def messages(self) -> list[object]:
        return [v for k, v in self.said if k == "message"]

    def steps(self) -> list[str]:
        return [k for k, _ in self.said if k != "message"]


@dataclass
class Served:
    channel: Channel
    endpoint: Recorder
    client: socket.socket
    metrics: Metrics

    async def read_all(self, timeout: float = 5.0) -> tuple[list[tuple[int, bytes]], bool]:  # noqa: ASYNC109
        """Every server frame until the server's EOF (True) or the timeout (False)."""
        loop = asyncio.get_running_loop()
        data = b""
        eof = False
        try:
            async with asyncio.timeout(timeout):
                while chunk := await loop.sock_recv(self.client, 65536):
                    data += chunk
                eof = True
        except TimeoutError:
            pass
        return parse_frames(data), eof

    def closes(self, code: int) -> float:
        value = self.metrics.registry.get_sample_value(
            "camfleet_gateway_protocol_closes_total", {"code": str(code)}
        )
        return value or 0.0


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while data:
        n, start = data[1] & 0x7F, 2
        if n == 126:
            n, start = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, start = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0] & 0x0F, data[start : start + n]))
        data = data[start + n :]
    return frames


async def serve(channels: Channels, metrics: Metrics, endpoint: Recorder | None = None) -> Served:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    channel = Channel(channels, transport, LIMIT, "c1")
    transport.set_protocol(channel)
    endpoint = endpoint or Recorder()
    channel.open(endpoint, b"", b"")
    return Served(channel, endpoint, theirs, metrics)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    metrics = Metrics()
    channels = Channels(60.0, metrics)
    s = await serve(channels, metrics)
    yield s
    s.client.close()
    channels.stop()


async def feed(channel: Channel, stream: bytes, cut: int) -> None:
    for i in range(0, len(stream), cut):
        channel.data_received(stream[i : i + cut])
        await asyncio.sleep(0)  # the endpoint's task may run between pieces


async def until(check: object, within: float = 5.0) -> None:
    assert callable(check)
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling the channel's state
            await asyncio.sleep(0.01)


CUTS = [1, 2, 3, 5, 7, 64, 1 << 20]


@pytest.mark.parametrize("cut", CUTS)
async def test_good_frames_pass_in_any_pieces(served: Served, cut: int) -> None:
    big = b"y" * 300  # 16-bit length
    stream = (
        frame(0x1, b"hello")
        + frame(0x9, b"ping")
        + frame(0x1, big[:100], fin=False)
        + frame(0xA, b"pong")  # control frames may come between fragments
        + frame(0x0, big[100:], fin=True)
        + frame(0x1, "grüß".encode())
    )
    await feed(served.channel, stream, cut)
    await until(lambda: len(served.endpoint.messages()) == 3)
    assert served.endpoint.messages() == ["hello", big.decode(), "grüß"]
    # Messages still waiting when the close comes are dropped: the session is muted by then.
    await feed(served.channel, frame(0x1, b"late") + close_frame(1000), cut)
    frames, eof = await served.read_all()
    # The ping answered, the client's close echoed, then the server's end closed (FIN).
    assert frames == [(0xA, b"ping"), (0x8, (1000).to_bytes(2, "big"))]
    assert eof
    served.client.close()
    await until(lambda: "lost" in served.endpoint.steps())
    assert served.endpoint.steps() == ["mute", "release", "lost"]
    assert served.endpoint.said[-1] == ("lost", 1000)
    assert served.closes(1000) == 0  # the client's own close is no violation


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(0x1, b"x" * 70_000), CloseCode.MESSAGE_TOO_BIG),  # 64-bit length
        (frame(0x1, b"x" * 600, fin=False) + frame(0x0, b"x" * 600), CloseCode.MESSAGE_TOO_BIG),
        (frame(0x2, b"\x00\x01"), CloseCode.UNSUPPORTED_DATA),
        (frame(0x1, b"\xff\xfe"), CloseCode.INVALID_DATA),  # not UTF-8
        (frame(0x1, b"hi", masked=False), CloseCode.PROTOCOL_ERROR),
        (frame(0x1 | 0x40, b"hi"), CloseCode.PROTOCOL_ERROR),  # RSV1 without deflate
        (frame(0x3, b"hi"), CloseCode.PROTOCOL_ERROR),  # reserved opcode
        (frame(0x9, b"p", fin=False), CloseCode.PROTOCOL_ERROR),  # fragmented ping
        (frame(0x9, b"p" * 126), CloseCode.PROTOCOL_ERROR),  # ping over 125 bytes
        (frame(0x0, b"hi"), CloseCode.PROTOCOL_ERROR),  # continuation of nothing
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), CloseCode.PROTOCOL_ERROR),
    ],
)
async def test_a_violation_gets_one_close_frame_and_nothing_after(
    served: Served, cut: int, bad: bytes, code: CloseCode
) -> None:
    await feed(served.channel, frame(0x1, b"before") + bad + frame(0x1, b"after"), cut)
    await feed(served.channel, frame(0x9, b"p") + close_frame(1000), cut)  # the client's answer
    frames, eof = await served.read_all()
    # The close frame is the last frame, then the FIN. (websockets parses a whole piece
    # before the channel sees its frames: a ping in the same piece as a binary or non-UTF-8
    # frame may get its pong first.)
    assert frames[-1][0] == 0x8
    assert all(op == 0xA for op, _ in frames[:-1])
    assert int.from_bytes(frames[-1][1][:2], "big") == code
    assert eof
    served.client.close()
    await until(lambda: "lost" in served.endpoint.steps())
    assert served.endpoint.steps() == ["mute", "release", "lost"]
    # "before" may have been handled (when its piece came early enough), nothing after it.
    assert served.endpoint.messages() in ([], ["before"])
    assert served.closes(code) == 1


async def test_a_busy_endpoint_stops_the_reading_then_resumes_it(served: Served) -> None:
    gate = served.endpoint.gate = asyncio.Event()
    transport = served.channel.transport
    stream = b"".join(frame(0x1, str(i).encode()) for i in range(INBOX_LIMIT + 4))
    served.channel.data_received(stream)
    assert not transport.is_reading()
    gate.set()
    await until(lambda: len(served.endpoint.messages()) == INBOX_LIMIT + 4)
    assert transport.is_reading()
    assert served.endpoint.messages() == [str(i) for i in range(INBOX_LIMIT + 4)]


async def test_heartbeat_cuts_the_silent_and_keeps_those_that_answer() -> None:
    metrics = Metrics()
    channels = Channels(0.2, metrics)
    answering, silent = await serve(channels, metrics), await serve(channels, metrics)
    loop = asyncio.get_running_loop()

    async def answer() -> None:
        while data := await loop.sock_recv(answering.client, 64):
            for op, payload in parse_frames(data):
                assert op == 0x9  # only pings come
                await loop.sock_sendall(answering.client, frame(0xA, payload))

    answerer = asyncio.create_task(answer())
    try:
        await until(lambda: "lost" in silent.endpoint.steps(), within=2)
        assert silent.endpoint.said[-1] == ("lost", CloseCode.ABNORMAL_CLOSURE)
        await asyncio.sleep(0.5)  # 2.5 more heartbeat periods
        assert answering.endpoint.steps() == []
        assert len(channels) == 1
    finally:
        answerer.cancel()
        for s in (answering, silent):
            s.client.close()
        channels.stop()


async def test_close_all_waits_for_the_close_handshake_then_cuts_the_rest() -> None:
    metrics = Metrics()
    channels = Channels(60.0, metrics)
    polite, deaf = await serve(channels, metrics), await serve(channels, metrics)
    loop = asyncio.get_running_loop()

    async def reply() -> None:
        data = await loop.sock_recv(polite.client, 64)
        assert parse_frames(data)[0][0] == 0x8
        await loop.sock_sendall(polite.client, close_frame(1001))
        while await loop.sock_recv(polite.client, 64):
            pass
        polite.client.close()

    replier = asyncio.create_task(reply())
    try:
        assert not await channels.close_all(CloseCode.GOING_AWAY, "server shutting down", 0.5)
        await replier
        await until(lambda: len(channels) == 0)
        assert polite.endpoint.said[-1] == ("lost", 1001)
        assert deaf.endpoint.said[-1] == ("lost", CloseCode.ABNORMAL_CLOSURE)
        frames, _ = await deaf.read_all(timeout=1)
        assert frames[0] == (0x8, (1001).to_bytes(2, "big") + b"server shutting down")
        assert deaf.closes(1001) == 0  # shutting down is not the client's fault
    finally:
        deaf.client.close()
        channels.stop()
