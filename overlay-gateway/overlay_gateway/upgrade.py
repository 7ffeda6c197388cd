"""The /ws upgrade: the handshake checked by websockets, then the socket taken off aiohttp.

aiohttp parses the upgrade request and runs the handler (admission, authentication); a
`WebSocketResponse` would then keep the request, its headers, the HTTP parser, the response,
its reader, writer, data queue and heartbeat timer and the handler's task for the whole life of
the connection, ~14 KB each (docs/benchmarks.md). Instead, `handshake` checks the request and
builds the 101 answer with websockets' sans-I/O `ServerProtocol` (RFC 6455 §4.2), and
`take_over` moves the socket to an asyncio Protocol of ours (`channel.Channel`): aiohttp's
request handler lets go of the transport and leaves its server's books, its task ends, and
everything it held is freed.

aiohttp has no public way to detach a connection; `take_over` uses the few attributes of its
`RequestHandler` that its own WebSocket support uses (`_message_tail`, `_buffer_paused`) and
its `connection_lost`. The wire-level tests (tests/integration/test_gateway_hardening.py)
cover it: re-run them when upgrading aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from aiohttp import web
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

__all__ = ["WS_LOG", "TakenOver", "handshake", "take_over"]

# websockets logs every open and close at INFO; the gateway logs its own lines for those.
WS_LOG: Final = logging.getLogger("overlay_gateway.websockets")
WS_LOG.setLevel(logging.WARNING)


def _lenient(offered: Sequence[Subprotocol], ours: Subprotocol) -> Subprotocol | None:
    # As aiohttp did: a client that offers no (or another) subprotocol is still served.
    return ours if ours in offered else None


def handshake(request: web.BaseRequest, subprotocol: str) -> bytes | web.Response:
    """The 101 answer to a valid upgrade request, or the HTTP error to answer instead."""
    ours = Subprotocol(subprotocol)
    check = ServerProtocol(
        subprotocols=[ours],
        select_subprotocol=lambda _p, offered: _lenient(offered, ours),
        logger=WS_LOG,
    )
    version = request.version
    answer = check.accept(
        Request(
            request.raw_path,
            Headers(request.headers.items()),
            method=request.method,
            protocol=f"HTTP/{version.major}.{version.minor}",
        )
    )
    if answer.status_code != 101:
        return web.json_response(
            {"error": {"code": "bad_handshake", "message": answer.body.decode().strip()}},
            status=answer.status_code,
        )
    return answer.serialize()


class TakenOver(web.StreamResponse):
    """What the /ws handler returns once the socket is no longer aiohttp's: nothing to send."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(request: web.BaseRequest, protocol: asyncio.Protocol) -> bytes:
    """Give the request's socket to `protocol`; returns the bytes that came after the request.

    Synchronous from start to end: no data can arrive between aiohttp letting go and
    `protocol` taking over.
    """
    handler = request.protocol
    transport = request.transport
    assert transport is not None, "the caller checked that the client is still connected"
    # After an upgrade request aiohttp keeps what follows it unparsed, and may have stopped
    # reading when that grew large.
    tail: bytes = handler._message_tail
    paused: bool = handler._buffer_paused
    handler._message_tail = b""
    # Without a transport, connection_lost (below) closes nothing: it takes the handler off
    # the server's books, cancels its keep-alive timer and lets its task end.
    handler.transport = None
    handler.connection_lost(None)
    transport.set_protocol(protocol)
    if paused:
        transport.resume_reading()
    return tail
