"""A client's WebSocket after the upgrade: a small asyncio Protocol of ours on its socket.

`upgrade.take_over` hands the socket to a `Channel` once the handshake is done, so aiohttp
keeps nothing of the connection. Client frames go through websockets' sans-I/O
`ServerProtocol`: unmasking, the close handshake, answers to pings, RFC 6455's checks
(unmasked frames, reserved bits, control frames, continuations: close 1002) and the size limit
decided on the frame header (1009: the rest of the frame is read and discarded, not buffered,
so the close frame reaches a client that is still sending). The channel refuses binary frames
(1003) and text that is not UTF-8 (1007), assembles fragmented messages and passes each text
message to its `Endpoint` (the session), one at a time, on a task that exists only while
messages wait. Event frames do not pass here: the hub writes them to the transport itself.

Idle, a channel is a few slots and no task or timer: `Channels` pings all of them from one
timer (a slice of them per tick, so that 10,000 pings do not go out at once) and closes those
that did not answer, and closes them all with 1001 on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Protocol

from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import CLOSED, OPEN
from websockets.server import ServerProtocol
from websockets.typing import BytesLike

from overlay_gateway.upgrade import WS_LOG

if TYPE_CHECKING:
    from overlay_gateway.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["CLOSE_TIMEOUT_SECONDS", "HEARTBEAT_SLICES", "Channel", "Channels", "Endpoint"]

# After our close frame: how long the client has to answer it and close its end.
CLOSE_TIMEOUT_SECONDS: Final = 10.0
# Each heartbeat period is cut into this many ticks, each pinging one slice of the channels.
HEARTBEAT_SLICES: Final = 20
# Messages waiting for the endpoint before the channel stops reading from the socket.
INBOX_LIMIT: Final = 16
_PING: Final = b"\x89\x00"  # an empty, unmasked ping frame (server frames are never masked)
# Closes the gateway starts for a reason that is the client's fault (counted in metrics).
_NOT_VIOLATIONS: Final = frozenset((CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY))


class Endpoint(Protocol):
    """What a channel serves: the session of its client."""

    async def handle(self, text: str) -> None: ...  # pragma: no cover - protocol
    def mute(self) -> None: ...  # pragma: no cover - protocol
    def release(self) -> None: ...  # pragma: no cover - protocol
    def lost(self, code: int) -> None: ...  # pragma: no cover - protocol


class Channel(asyncio.Protocol):
    """One client's socket, from the end of the handshake to the end of the TCP connection.

    The endpoint is told, in this order: `handle(text)` per message, `mute()` as soon as the
    connection starts closing (no frame may follow the close frame), `release()` once no
    message is being handled any more, `lost(code)` when the socket is gone.
    """

    __slots__ = (
        "_close_timer",
        "_fragments",
        "_inbox",
        "_paused",
        "_released",
        "_worker",
        "alive",
        "channels",
        "closing",
        "endpoint",
        "ident",
        "lost_code",
        "slice",
        "transport",
        "ws",
    )

    def __init__(
        self, channels: Channels, transport: asyncio.Transport, max_bytes: int, ident: str
    ) -> None:
        self.channels = channels
        self.transport = transport
        self.ident = ident
        self.ws = ServerProtocol(state=OPEN, max_size=max_bytes, logger=WS_LOG)
        self.endpoint: Endpoint | None = None
        self.alive = True  # heard from since the last ping
        self.closing = False
        self.slice = 0
        self.lost_code: int | None = None  # set once the socket is gone
        self._fragments: list[BytesLike] | None = None
        self._inbox: deque[str] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._released = False
        self._paused = False  # reading stopped while the inbox is full

    def open(self, endpoint: Endpoint, head: bytes, tail: bytes) -> None:
        """Serve `endpoint`: write `head` (101 answer, hello), then parse `tail` (early bytes)."""
        self.endpoint = endpoint
        self.channels.add(self)
        self.transport.write(head)
        if tail:
            self.data_received(tail)

    # --- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.alive = True
        ws = self.ws
        ws.receive_data(data)
        for frame in ws.events_received():
            if isinstance(frame, Frame):  # always, once the handshake is done
                self._frame(frame)
        self._flush()

    def eof_received(self) -> bool:
        self.ws.receive_eof()
        self._flush()
        return False  # the transport closes itself once the writes are out

    def connection_lost(self, exc: Exception | None) -> None:
        ws = self.ws
        self.lost_code = ws.close_code or (
            ws.close_rcvd.code if ws.close_rcvd is not None else CloseCode.ABNORMAL_CLOSURE
        )
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._inbox = None
        self.channels.discard(self)
        self._start_closing()
        endpoint = self.endpoint
        if endpoint is not None and self._worker is None:
            self._release()
            endpoint.lost(self.lost_code)
            self.endpoint = None  # no cycle left between the session and its channel

    # --- what the gateway does to a channel -----------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake (no frame follows it); the client has 10 s to finish it."""
        if self.ws.state is OPEN:
            self.ws.send_close(code, reason)
            self._flush()

    def abort(self, _reason: str = "") -> None:
        """Cut the socket at once (a client that does not read never gets a close frame)."""
        # Muted first: a transport that is cut refuses writes until connection_lost runs, which
        # releases the session (not now: the hub may be iterating over its subscribers).
        self._start_closing(cut=True)
        self.transport.abort()

    def ping(self) -> None:
        if self.ws.state is OPEN and not self.closing:
            self.alive = False
            self.transport.write(_PING)

    # --- inside -----------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        if self.closing or self.ws.state is not OPEN:
            return  # closing: what the client sends now is discarded
        opcode = frame.opcode
        if opcode is Opcode.TEXT:
            if frame.fin:
                self._message(frame.data)
            else:
                self._fragments = [frame.data]
        elif opcode is Opcode.CONT:
            # The protocol saw to it that a continuation follows a first fragment.
            fragments = self._fragments
            assert fragments is not None
            fragments.append(frame.data)
            if frame.fin:
                self._fragments = None
                self._message(b"".join(fragments))
        elif opcode is Opcode.BINARY:
            self.ws.fail(CloseCode.UNSUPPORTED_DATA, "text frames only")
        # Ping, pong and close frames: the protocol has answered them already.

    def _message(self, data: BytesLike) -> None:
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError:
            self.ws.fail(CloseCode.INVALID_DATA, "text frames must be UTF-8")
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(text)
        if len(inbox) >= INBOX_LIMIT and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._inbox and not self.closing:
                text = self._inbox.popleft()
                if self._paused and len(self._inbox) < INBOX_LIMIT // 2:
                    self._paused = False
                    self.transport.resume_reading()
                assert self.endpoint is not None
                try:
                    await self.endpoint.handle(text)
                except Exception:
                    log.exception("client message failed", extra={"connection": self.ident})
                    self.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._worker = None
            self._inbox = None
            if self.closing:
                self._release()
            endpoint = self.endpoint
            if self.lost_code is not None and endpoint is not None:
                endpoint.lost(self.lost_code)
                self.endpoint = None

    def _flush(self) -> None:
        """Write what the protocol has to send; begin the close when it has begun one."""
        ws = self.ws
        if not self.closing and ws.state is not OPEN:
            self._start_closing()
        transport = self.transport
        for data in ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if ws.state is CLOSED:
            transport.close()

    def _start_closing(self, cut: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        if self.endpoint is not None:
            self.endpoint.mute()  # before the close frame is written: nothing may follow it
        ws = self.ws
        sent = ws.close_sent
        if sent is not None and ws.close_rcvd is None and sent.code not in _NOT_VIOLATIONS:
            self.channels.metrics.protocol_closes.labels(str(int(sent.code))).inc()
            log.info(
                "closing client connection",
                extra={"connection": self.ident, "code": int(sent.code), "reason": sent.reason},
            )
        if cut:
            return
        if self.lost_code is None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT_SECONDS, self.abort)
        if self._worker is None:
            self._release()

    def _release(self) -> None:
        if not self._released and self.endpoint is not None:
            self._released = True
            self.endpoint.release()


class Channels:
    """The open channels: one heartbeat timer for all of them, and the close on shutdown.

    Each channel sits in one of `HEARTBEAT_SLICES` slices; every `heartbeat / slices` seconds
    one slice is pinged, and the slice pinged half a period earlier is checked: a channel
    that has sent nothing since (no pong, no message) is cut, as aiohttp's per-connection
    heartbeat did.
    """

    def __init__(self, heartbeat: float, metrics: Metrics) -> None:
        self.heartbeat = heartbeat
        self.metrics = metrics
        self._slices: list[set[Channel]] = [set() for _ in range(HEARTBEAT_SLICES)]
        self._next = 0  # the slice the next channel joins
        self._tick = 0
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._empty: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Channel]:
        for channels in self._slices:
            yield from channels

    def add(self, channel: Channel) -> None:
        channel.slice = self._next
        self._slices[self._next].add(channel)
        self._next = (self._next + 1) % HEARTBEAT_SLICES
        self._count += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.heartbeat / HEARTBEAT_SLICES, self._beat
            )

    def discard(self, channel: Channel) -> None:
        members = self._slices[channel.slice]
        if channel in members:
            members.remove(channel)
            self._count -= 1
        if not self._count and self._empty is not None and not self._empty.done():
            self._empty.set_result(None)

    def _beat(self) -> None:
        tick = self._tick
        self._tick += 1
        for channel in list(self._slices[(tick - HEARTBEAT_SLICES // 2) % HEARTBEAT_SLICES]):
            if not channel.alive and not channel.closing:
                log.info("client missed its heartbeat", extra={"connection": channel.ident})
                channel.abort()
        for channel in self._slices[tick % HEARTBEAT_SLICES]:
            channel.ping()
        self._timer = (
            asyncio.get_running_loop().call_later(self.heartbeat / HEARTBEAT_SLICES, self._beat)
            if self._count
            else None
        )

    async def close_all(self, code: int, reason: str, grace: float) -> bool:
        """Close every channel with `code`; cut those still open after `grace` seconds.

        Returns whether all of them finished the close handshake in time.
        """
        if not self._count:
            return True
        self._empty = asyncio.get_running_loop().create_future()
        for channel in list(self):
            channel.close(code, reason)
        try:
            await asyncio.wait_for(self._empty, timeout=grace)
            return True
        except TimeoutError:
            for channel in list(self):
                channel.abort()
            return False

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._empty is not None and not self._empty.done():
            self._empty.cancel()
