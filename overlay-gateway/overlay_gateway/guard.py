"""What aiohttp's WebSocket reader lets through but a camfleet.v1 server must refuse.

aiohttp's frame reader serves both ends of a connection, so it takes unmasked frames from a
client (RFC 6455 §5.1: the server MUST close with 1002); it takes binary frames (the protocol
is text only: 1003); and on an oversized frame (or any other protocol error) it closes the
socket at once with the rest of the data unread, so the client's kernel answers with a reset
and the 1009 (1002) close frame is lost.

`FrameGuard` sits between the socket and aiohttp's reader (`GuardedWebSocketResponse`). It
follows frame boundaries by their headers alone (payload bytes are passed on or skipped, never
buffered) and on the first violation stops feeding the reader: the rest of that frame is
skipped, a wake-up frame tells the handler, and from then on only the client's close frame
goes through. The handler then calls `close(code)`, which sends the close frame and waits for
the client's while the guard keeps draining, so the socket closes with nothing left unread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketWriter
from aiohttp.web_request import BaseRequest

__all__ = ["FrameGuard", "GuardedWebSocketResponse", "Violation"]

_OP_CONTINUATION: Final = 0x0
_OP_TEXT: Final = 0x1
_OP_BINARY: Final = 0x2
_OP_CLOSE: Final = 0x8
_OPCODES: Final = frozenset((0x0, 0x1, 0x2, 0x8, 0x9, 0xA))
# Empty, masked (with a zero key) frames the reader turns into a message for the handler.
_WAKE_TEXT: Final = b"\x81\x80\x00\x00\x00\x00"
_WAKE_CONTINUATION: Final = b"\x80\x80\x00\x00\x00\x00"


@dataclass(frozen=True)
class Violation:
    code: WSCloseCode
    reason: str


class FrameParser(Protocol):
    """aiohttp's WebSocketReader, as the HTTP protocol drives it."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...  # pragma: no cover - protocol
    def feed_eof(self) -> None: ...  # pragma: no cover - protocol


class FrameGuard:
    """Checks client frame headers before aiohttp's reader sees them (see the module doc)."""

    __slots__ = (
        "_forward",
        "_fragmented",
        "_head",
        "_message_bytes",
        "_skip",
        "inner",
        "max_bytes",
        "violation",
    )

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.inner: FrameParser | None = None
        self.violation: Violation | None = None
        self._head = bytearray()  # an incomplete frame header
        self._skip = 0  # payload bytes of the current frame still to come
        self._forward = True  # whether they go to the reader
        self._message_bytes = 0  # payload so far of a fragmented text message
        self._fragmented = False

    def feed_eof(self) -> None:
        if self.inner is not None:
            self.inner.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        out: list[bytes] = []
        pos, n = 0, len(data)
        head = self._head
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                if self._forward:
                    out.append(data[pos : pos + take] if take < n else data)
                pos += take
                self._skip -= take
                continue
            if len(head) < 2:
                take = min(2 - len(head), n - pos)
                head += data[pos : pos + take]
                pos += take
                if len(head) < 2:
                    break
            size = 2 + {126: 2, 127: 8}.get(head[1] & 0x7F, 0) + (4 if head[1] & 0x80 else 0)
            if len(head) < size:
                take = min(size - len(head), n - pos)
                head += data[pos : pos + take]
                pos += take
                if len(head) < size:
                    break
            out.extend(self._header(bytes(head)))
            head.clear()
        if not out or self.inner is None:
            return False, b""
        return self.inner.feed_data(b"".join(out))

    def _header(self, header: bytes) -> list[bytes]:
        """Decide on one complete frame header; returns the bytes to pass on now."""
        first, second = header[0], header[1]
        fin, opcode, masked = first & 0x80, first & 0x0F, second & 0x80
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(header[2:4], "big")
        elif length == 127:
            length = int.from_bytes(header[2:10], "big")
        self._skip = length
        if self.violation is not None:
            # Draining: only the client's answer to our close frame matters.
            self._forward = opcode == _OP_CLOSE
            return [header] if self._forward else []
        violation: Violation | None = None
        if not masked:
            violation = Violation(WSCloseCode.PROTOCOL_ERROR, "client frames must be masked")
        elif first & 0x70 or opcode not in _OPCODES:
            # No extension is negotiated (permessage-deflate is off): no reserved bits.
            violation = Violation(WSCloseCode.PROTOCOL_ERROR, "reserved bits or opcode")
        elif opcode >= _OP_CLOSE and (not fin or length > 125):
            violation = Violation(WSCloseCode.PROTOCOL_ERROR, "invalid control frame")
        elif opcode < _OP_CLOSE and (opcode == _OP_CONTINUATION) != self._fragmented:
            violation = Violation(WSCloseCode.PROTOCOL_ERROR, "unexpected continuation")
        elif opcode == _OP_BINARY:
            violation = Violation(WSCloseCode.UNSUPPORTED_DATA, "text frames only")
        elif opcode in (_OP_TEXT, _OP_CONTINUATION):
            total = length + (self._message_bytes if opcode == _OP_CONTINUATION else 0)
            if total > self.max_bytes:
                violation = Violation(
                    WSCloseCode.MESSAGE_TOO_BIG, f"messages are limited to {self.max_bytes} bytes"
                )
            else:
                self._fragmented = not fin
                self._message_bytes = 0 if fin else total
        if violation is None:
            self._forward = True
            return [header]
        self.violation = violation
        self._forward = False
        # A message of its own (or the end of the one under way) wakes the handler's receive().
        return [_WAKE_CONTINUATION if self._fragmented else _WAKE_TEXT]


class GuardedWebSocketResponse(web.WebSocketResponse):
    """A WebSocketResponse whose frames pass a `FrameGuard` first.

    aiohttp has no public hook between the socket and its frame reader; this wraps the reader
    the response installed, right after it did so (`_post_start`), and nothing else.
    """

    def __init__(self, *, max_msg_size: int, **kwargs: Any) -> None:
        # aiohttp's own limit stays as a backstop just above the guard's.
        super().__init__(max_msg_size=max_msg_size + 1, **kwargs)
        self.guard = FrameGuard(max_msg_size)

    def _post_start(
        self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        handler = request.protocol
        # Bytes that came with the upgrade request must pass the guard as well.
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        self.guard.inner = handler._payload_parser
        handler._payload_parser = self.guard
        if tail:
            eof, _ = self.guard.feed_data(tail)
            if eof:
                handler.close()
