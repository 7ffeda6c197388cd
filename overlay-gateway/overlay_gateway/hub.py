"""Fan-out of event frames to WebSocket connections. Knows nothing of Redis or of auth.

Each event is turned into one WebSocket frame (header + JSON) once, and those very bytes are
written to every subscriber's transport: server frames are unmasked, so they are identical for
all clients. A connection whose socket keeps up takes the fast path, a direct
`transport.write` with no task switch. When its socket buffer passes the high-water mark,
frames go to the connection's bounded `SendQueue`, drained by one writer task per connection;
past the queue limit only the newest frame per camera is kept (latest-wins) and a connection
that stays over the limit too long is disconnected, so a slow client never stalls the others.

Positions (stream ids) are opaque strings here apart from their order, "<ms>-<seq>".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from overlay_gateway.protocol import position_key, status_message

if TYPE_CHECKING:  # the hub counts into the app's metrics but needs no metrics library itself
    from overlay_gateway.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["Connection", "FrameWriter", "Hub", "SendQueue", "text_frame"]

_DRAIN_POLL_SECONDS = 0.01


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2) carrying `payload`."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


class FrameWriter(Protocol):
    """What the hub needs of a socket; an asyncio.Transport is one."""

    def write(self, data: bytes) -> None: ...  # pragma: no cover - protocol
    def get_write_buffer_size(self) -> int: ...  # pragma: no cover - protocol
    def is_closing(self) -> bool: ...  # pragma: no cover - protocol


class SendQueue:
    """Bounded FIFO of (camera, frame, events in frame); latest-wins per camera when full.

    Control frames (camera None: acks, errors, pongs) are never dropped; if they alone fill
    the queue, `push` reports overflow and the owner disconnects the client.
    """

    __slots__ = ("_items", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        # Made on first use: an empty deque is ~0.7 KB, and most connections never queue.
        self._items: deque[tuple[str | None, bytes, int]] | None = None

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def push(self, camera: str | None, frame: bytes, events: int = 1) -> tuple[int, bool]:
        """Queue a frame. Returns (events dropped, whether the queue was over its limit)."""
        items = self._items
        if items is None:
            items = self._items = deque()
        if len(items) < self.limit:
            items.append((camera, frame, events))
            return 0, False
        dropped = 0
        if camera is not None:
            # Collapse to the newest frame per camera, then add this one (newer than any).
            newest: dict[str, int] = {}
            for i, (cam, _, _) in enumerate(items):
                if cam is not None:
                    newest[cam] = i
            kept: deque[tuple[str | None, bytes, int]] = deque()
            for i, item in enumerate(items):
                cam = item[0]
                if cam is None or (newest[cam] == i and cam != camera):
                    kept.append(item)
                else:
                    dropped += item[2]
            self._items = items = kept
        if len(items) >= self.limit:
            if camera is not None:
                dropped += events
            return dropped, True
        items.append((camera, frame, events))
        return dropped, True

    def pop_upto(self, budget: int) -> bytes:
        """Frames from the head, at least one, until `budget` bytes are reached."""
        items = self._items
        if items is None:
            return b""
        chunks: list[bytes] = []
        size = 0
        while items and (not chunks or size < budget):
            frame = items.popleft()[1]
            chunks.append(frame)
            size += len(frame)
        if not items:
            self._items = None  # a burst does not keep its deque for the connection's life
        return b"".join(chunks)

    def cameras(self) -> list[str | None]:
        return [c for c, _, _ in self._items or ()]


class Connection:
    """One WebSocket client as the hub sees it: a writer, its subscriptions, its queue."""

    __slots__ = (
        "_drain_task",
        "_hub",
        "_kick",
        "cameras",
        "closed",
        "dropped",
        "high_water",
        "ident",
        "idle",
        "overflow_since",
        "queue",
        "replaying",
        "slow_timeout",
        "writer",
    )

    def __init__(
        self,
        hub: Hub,
        writer: FrameWriter,
        *,
        ident: str,
        queue_size: int,
        high_water: int,
        slow_timeout: float,
        kick: Callable[[str], None],
    ) -> None:
        self._hub = hub
        self.writer = writer
        self.ident = ident
        self.queue = SendQueue(queue_size)
        self.high_water = high_water
        self.slow_timeout = slow_timeout
        self._kick = kick
        self._drain_task: asyncio.Task[None] | None = None
        self.cameras: set[str] = set()
        # camera → live frames held back while that subscription is being set up (ack, replay)
        self.replaying: dict[str, list[tuple[str, bytes]]] = {}
        self.overflow_since: float | None = None
        self.dropped = 0
        self.closed = False
        # Open and nothing queued: the hub may write straight to the socket (the fast path).
        self.idle = True

    def send(self, frame: bytes, camera: str | None = None, events: int = 1) -> int:
        """Write or queue a frame; returns the number of events dropped for this client."""
        if self.closed:
            return 0
        writer = self.writer
        if not self.queue and writer.get_write_buffer_size() <= self.high_water:
            writer.write(frame)
            return 0
        self.idle = False
        dropped, over = self.queue.push(camera, frame, events)
        if over:
            now = time.monotonic()
            if self.overflow_since is None:
                self.overflow_since = now
            elif now - self.overflow_since > self.slow_timeout:
                self.close_slow()
        if dropped:
            self.dropped += dropped
        if self._drain_task is None and not self.closed:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        return dropped

    def close_slow(self) -> None:
        if not self.closed:
            self._hub.metrics.slow_disconnects.inc()
            log.info(
                "disconnecting slow client",
                extra={"connection": self.ident, "dropped": self.dropped},
            )
            self.close()
            self._kick("slow consumer")

    def close(self) -> None:
        self.closed = True
        self.idle = False
        if self._drain_task is not None and self._drain_task is not asyncio.current_task():
            self._drain_task.cancel()
        self._drain_task = None

    async def _drain(self) -> None:
        writer, queue = self.writer, self.queue
        try:
            while queue and not self.closed:
                if writer.is_closing():
                    return
                buffered = writer.get_write_buffer_size()
                if buffered > self.high_water:
                    if (
                        self.overflow_since is not None
                        and time.monotonic() - self.overflow_since > self.slow_timeout
                    ):
                        self.close_slow()
                        return
                    # asyncio has no public "writable" signal for a transport we do not own
                    # the protocol of; a short poll only runs for clients that are behind.
                    await asyncio.sleep(_DRAIN_POLL_SECONDS)
                    continue
                writer.write(queue.pop_upto(self.high_water - buffered + 1))
                await asyncio.sleep(0)
            self.overflow_since = None
            self.idle = not self.closed
        finally:
            if self._drain_task is asyncio.current_task():
                self._drain_task = None


class Hub:
    """camera → subscribed connections; publishes pre-built frames to them."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self._subscribers: dict[str, dict[Connection, None]] = {}

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.metrics.connections.set(len(self.connections))

    def remove(self, conn: Connection) -> list[str]:
        """Forget a connection; returns the cameras it was subscribed to."""
        conn.close()
        cameras = list(conn.cameras)
        for camera in cameras:
            self.unsubscribe(conn, camera)
        self.connections.discard(conn)
        self.metrics.connections.set(len(self.connections))
        return cameras

    def subscribers(self, camera: str) -> int:
        return len(self._subscribers.get(camera, ()))

    def subscribe(self, conn: Connection, camera: str) -> None:
        """Attach `conn` to `camera`, holding its live frames until `activate`."""
        conn.cameras.add(camera)
        conn.replaying[camera] = []
        self._subscribers.setdefault(camera, {})[conn] = None
        self.metrics.subscriptions.inc()

    def unsubscribe(self, conn: Connection, camera: str) -> bool:
        if camera not in conn.cameras:
            return False
        conn.cameras.discard(camera)
        conn.replaying.pop(camera, None)
        subs = self._subscribers.get(camera)
        if subs is not None:
            subs.pop(conn, None)
            if not subs:
                del self._subscribers[camera]
        self.metrics.subscriptions.dec()
        return True

    def activate(
        self,
        conn: Connection,
        camera: str,
        head: Iterable[bytes],
        replayed: list[tuple[str, bytes]],
        after: str | None,
    ) -> int:
        """Send `head` (ack), the replayed payloads, then live frames held back meanwhile.

        Held-back frames at or before the last replayed position (or `after`) are skipped, so
        a replay that overlaps live delivery yields no duplicate. Returns events sent.
        """
        held = conn.replaying.pop(camera, [])
        if camera not in conn.cameras:
            return 0
        last = replayed[-1][0] if replayed else after
        chunks = list(head)
        chunks.extend(text_frame(p) for _, p in replayed)
        sent = len(replayed)
        if last is None:
            live = held
        else:
            floor = position_key(last)
            live = [(pos, frame) for pos, frame in held if position_key(pos) > floor]
        chunks.extend(frame for _, frame in live)
        sent += len(live)
        if chunks:
            conn.send(b"".join(chunks), None)
        self.metrics.events_out += sent
        return sent

    def publish(self, camera: str, batch: list[tuple[str, bytes]], arrived: float) -> int:
        """Fan a batch of (position, JSON payload) of one camera out; returns deliveries."""
        subs = self._subscribers.get(camera)
        if not subs or not batch:
            return 0
        frames = [text_frame(payload) for _, payload in batch]
        frame = frames[0] if len(frames) == 1 else b"".join(frames)
        n = len(batch)
        delivered = dropped = 0
        # The hot loop: attribute reads and one write per subscriber, no method layers.
        for conn in subs:
            if conn.replaying:
                held = conn.replaying.get(camera)
                if held is not None:
                    held.extend(zip((pos for pos, _ in batch), frames, strict=True))
                    continue
            delivered += n
            if conn.idle:
                writer = conn.writer
                if writer.get_write_buffer_size() <= conn.high_water:
                    writer.write(frame)
                    continue
            dropped += conn.send(frame, camera, n)
        m = self.metrics
        if delivered:
            m.events_out += delivered
            m.delivery_latency.observe(time.monotonic() - arrived)
        if dropped:
            m.events_dropped += dropped
        return delivered

    def status(self, camera: str, state: str) -> None:
        """Tell every subscriber of `camera` its stream state; control frames are never dropped."""
        frame = text_frame(status_message(camera, state))
        for conn in list(self._subscribers.get(camera, ())):
            conn.send(frame, None)
