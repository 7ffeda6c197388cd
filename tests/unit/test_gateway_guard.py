"""FrameGuard in front of aiohttp's real frame reader, fed byte streams cut at every offset
(a header may arrive one byte at a time), with the frames a misbehaving client sends.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.base_protocol import BaseProtocol

from overlay_gateway.guard import FrameGuard

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


async def run(stream: bytes, cut: int) -> tuple[FrameGuard, list[tuple[WSMsgType, object]]]:
    """Feed `stream` in pieces of `cut` bytes; returns the guard and the reader's messages."""
    loop = asyncio.get_running_loop()
    queue = WebSocketDataQueue(BaseProtocol(loop), 2**16, loop=loop)
    guard = FrameGuard(LIMIT)
    guard.inner = WebSocketReader(queue, LIMIT + 1, compress=False, decode_text=True)
    for i in range(0, len(stream), cut):
        eof, _ = guard.feed_data(stream[i : i + cut])
        assert not eof
    guard.feed_eof()
    messages: list[tuple[WSMsgType, object]] = []
    while True:
        try:
            msg = await queue.read()
        except Exception:  # EofStream
            return guard, messages
        messages.append((msg.type, msg.data))


CUTS = [1, 2, 3, 5, 7, 64, 1 << 20]
CLOSE = frame(0x8, (1000).to_bytes(2, "big"))


@pytest.mark.parametrize("cut", CUTS)
async def test_good_frames_pass_in_any_pieces(cut: int) -> None:
    big = b"y" * 300  # 16-bit length
    stream = (
        frame(0x1, b"hello")
        + frame(0x9, b"ping")
        + frame(0x1, big[:100], fin=False)
        + frame(0xA, b"pong")  # control frames may come between fragments
        + frame(0x0, big[100:], fin=True)
        + CLOSE
    )
    guard, messages = await run(stream, cut)
    assert guard.violation is None
    assert messages[0] == (WSMsgType.TEXT, "hello")
    assert messages[1][0] is WSMsgType.PING
    assert messages[2][0] is WSMsgType.PONG
    assert messages[3] == (WSMsgType.TEXT, big.decode())
    assert messages[4][0] is WSMsgType.CLOSE


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(0x1, b"x" * 70_000), WSCloseCode.MESSAGE_TOO_BIG),  # 64-bit length
        (frame(0x1, b"x" * 600, fin=False) + frame(0x0, b"x" * 600), WSCloseCode.MESSAGE_TOO_BIG),
        (frame(0x2, b"\x00\x01"), WSCloseCode.UNSUPPORTED_DATA),
        (frame(0x1, b"hi", masked=False), WSCloseCode.PROTOCOL_ERROR),
        (frame(0x1 | 0x40, b"hi"), WSCloseCode.PROTOCOL_ERROR),  # RSV1 without deflate
        (frame(0x3, b"hi"), WSCloseCode.PROTOCOL_ERROR),  # reserved opcode
        (frame(0x9, b"p", fin=False), WSCloseCode.PROTOCOL_ERROR),  # fragmented ping
        (frame(0x9, b"p" * 126), WSCloseCode.PROTOCOL_ERROR),  # ping over 125 bytes
        (frame(0x0, b"hi"), WSCloseCode.PROTOCOL_ERROR),  # continuation of nothing
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), WSCloseCode.PROTOCOL_ERROR),
    ],
)
async def test_a_violation_stops_the_reader_and_only_a_close_follows(
    cut: int, bad: bytes, code: WSCloseCode
) -> None:
    stream = frame(0x1, b"before") + bad + frame(0x1, b"after") + CLOSE
    guard, messages = await run(stream, cut)
    assert guard.violation is not None
    assert guard.violation.code == code
    # "before", then the (empty or partial) wake-up message, then only the client's close.
    assert messages[0] == (WSMsgType.TEXT, "before")
    assert messages[1][0] is WSMsgType.TEXT
    assert messages[1][1] in ("", "x" * 600, "a")
    assert [t for t, _ in messages[2:]] == [WSMsgType.CLOSE]
