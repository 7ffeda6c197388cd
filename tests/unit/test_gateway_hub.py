"""Hub logic without sockets: frame encoding, latest-wins queue, fast path, replay splice."""

from __future__ import annotations

import asyncio

import pytest

from overlay_gateway.hub import Connection, Hub, SendQueue, text_frame
from overlay_gateway.metrics import Metrics
from overlay_gateway.protocol import position_key


class BufferWriter:
    """An in-memory FrameWriter whose 'socket buffer' only drains when told to."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def flush(self) -> None:
        self.buffered = 0


def test_text_frame_lengths() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    mid = text_frame(b"x" * 300)
    assert mid[:4] == b"\x81\x7e\x01\x2c"
    assert len(mid) == 304
    big = text_frame(b"x" * 70_000)
    assert big[:2] == b"\x81\x7f"
    assert int.from_bytes(big[2:10], "big") == 70_000


def test_position_order() -> None:
    assert position_key("5-1") < position_key("5-2") < position_key("6-0")
    assert position_key("10-0") > position_key("9-99")
    assert position_key("0") == (0, 0)


def test_queue_keeps_everything_under_its_limit() -> None:
    q = SendQueue(4)
    assert q.push("a", b"a1") == (0, False)
    assert q.push(None, b"ctl") == (0, False)
    assert q.push("b", b"b1") == (0, False)
    assert q.cameras() == ["a", None, "b"]


def test_queue_latest_wins_per_camera_when_full() -> None:
    q = SendQueue(4)
    for frame in (b"a1", b"b1", b"a2", b"b2"):
        q.push(frame[:1].decode(), frame)
    dropped, over = q.push("a", b"a3")
    # a1, a2 go (a3 is newer), b1 goes (b2 is newer).
    assert (dropped, over) == (3, True)
    assert q.cameras() == ["b", "a"]
    assert q.pop_upto(1 << 20) == b"b2a3"


def test_queue_counts_events_in_multi_event_frames() -> None:
    q = SendQueue(2)
    q.push("a", b"xx", events=5)
    q.push("a", b"yy", events=2)
    assert q.push("a", b"zz", events=1) == (7, True)
    assert len(q) == 1


def test_queue_never_drops_control_frames() -> None:
    q = SendQueue(2)
    q.push(None, b"c1")
    q.push(None, b"c2")
    dropped, over = q.push("a", b"a1")
    assert over
    assert dropped == 1
    assert q.cameras() == [None, None]
    assert q.push(None, b"c3") == (0, True)


def test_pop_upto_takes_at_least_one_frame() -> None:
    q = SendQueue(8)
    for i in range(4):
        q.push("a", b"x" * 10 + bytes([48 + i]))
    assert q.pop_upto(1) == b"x" * 10 + b"0"
    assert len(q.pop_upto(15)) == 22
    assert len(q) == 1


def make(
    hub: Hub,
    writer: BufferWriter,
    *,
    queue: int = 4,
    high: int = 100,
    timeout: float = 60.0,
    kicked: list[str] | None = None,
) -> Connection:
    conn = Connection(
        hub,
        writer,
        ident="t",
        queue_size=queue,
        high_water=high,
        slow_timeout=timeout,
        kick=(kicked if kicked is not None else []).append,
    )
    hub.add(conn)
    return conn


def subscribe_live(hub: Hub, conn: Connection, camera: str) -> None:
    hub.subscribe(conn, camera)
    hub.activate(conn, camera, [], [], None)


async def test_publish_writes_the_same_bytes_to_every_subscriber() -> None:
    hub = Hub(Metrics())
    w1, w2, w3 = BufferWriter(), BufferWriter(), BufferWriter()
    c1, c2, c3 = make(hub, w1), make(hub, w2), make(hub, w3)
    for c in (c1, c2):
        subscribe_live(hub, c, "ns/a")
    subscribe_live(hub, c3, "ns/b")
    assert hub.publish("ns/a", [("1-0", b'{"n":1}')], 0.0) == 2
    assert w1.sent[-1] is w2.sent[-1]  # one object, shared
    assert w1.sent[-1] == b'\x81\x07{"n":1}'
    assert w3.sent == []


async def test_slow_connection_queues_latest_wins_and_others_are_unaffected() -> None:
    hub = Hub(Metrics())
    slow_w, fast_w = BufferWriter(), BufferWriter()
    slow, fast = make(hub, slow_w, queue=2, high=10), make(hub, fast_w)
    for c in (slow, fast):
        subscribe_live(hub, c, "ns/a")
        subscribe_live(hub, c, "ns/b")
    slow_w.buffered = 1000  # the client stopped reading
    for i in range(10):
        hub.publish("ns/a", [(f"{i}-0", b"A%d" % i)], 0.0)
        hub.publish("ns/b", [(f"{i}-1", b"B%d" % i)], 0.0)
        fast_w.flush()
    assert len(slow.queue) <= 2
    assert slow.dropped == 18
    assert len([f for f in fast_w.sent if f]) == 20
    slow_w.flush()
    await asyncio.sleep(0.05)
    assert slow_w.sent[-1] == text_frame(b"A9") + text_frame(b"B9")
    assert len(slow.queue) == 0
    assert slow.overflow_since is None
    hub.remove(slow)
    hub.remove(fast)


async def test_connection_over_its_limit_too_long_is_kicked() -> None:
    hub = Hub(Metrics())
    writer = BufferWriter()
    kicked: list[str] = []
    conn = make(hub, writer, queue=1, high=10, timeout=0.05, kicked=kicked)
    subscribe_live(hub, conn, "ns/a")
    writer.buffered = 1000
    hub.publish("ns/a", [("1-0", b"x")], 0.0)
    hub.publish("ns/a", [("2-0", b"y")], 0.0)  # over the limit from now on
    await asyncio.sleep(0.15)
    assert kicked == ["slow consumer"]
    assert conn.closed
    assert hub.metrics.slow_disconnects._value.get() == 1
    hub.remove(conn)


async def test_activation_splices_replay_and_held_frames_without_duplicates() -> None:
    hub = Hub(Metrics())
    writer = BufferWriter()
    conn = make(hub, writer, high=1 << 20)
    hub.subscribe(conn, "ns/a")
    # Live events arrive while the replay is read: 5-0 is in both, 6-0 only live.
    hub.publish("ns/a", [("5-0", b"e5")], 0.0)
    hub.publish("ns/a", [("6-0", b"e6")], 0.0)
    assert writer.sent == []
    sent = hub.activate(conn, "ns/a", [text_frame(b"ack")], [("4-0", b"e4"), ("5-0", b"e5")], "3-0")
    assert sent == 3
    assert writer.sent == [b"".join(text_frame(p) for p in (b"ack", b"e4", b"e5", b"e6"))]
    hub.publish("ns/a", [("7-0", b"e7")], 0.0)
    assert writer.sent[-1] == text_frame(b"e7")


async def test_activation_without_replay_uses_since_as_floor() -> None:
    hub = Hub(Metrics())
    writer = BufferWriter()
    conn = make(hub, writer, high=1 << 20)
    hub.subscribe(conn, "ns/a")
    hub.publish("ns/a", [("2-0", b"old"), ("3-0", b"new")], 0.0)
    hub.activate(conn, "ns/a", [], [], "2-0")
    assert writer.sent == [text_frame(b"new")]


def test_unsubscribe_and_remove_bookkeeping() -> None:
    hub = Hub(Metrics())
    conn = make(hub, BufferWriter())
    hub.subscribe(conn, "ns/a")
    hub.subscribe(conn, "ns/b")
    assert hub.subscribers("ns/a") == 1
    assert hub.unsubscribe(conn, "ns/a") is True
    assert hub.unsubscribe(conn, "ns/a") is False
    assert hub.subscribers("ns/a") == 0
    assert hub.remove(conn) == ["ns/b"]
    assert hub.subscribers("ns/b") == 0
    assert not hub.connections


def test_queue_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        SendQueue(0)
