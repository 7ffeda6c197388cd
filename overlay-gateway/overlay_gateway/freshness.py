"""AI path health: when did each camera's last event arrive, and are its overlays stale?

Two sources, the newer wins: the events this replica relays (it sits between the broker and
the hub, so it sees every event of every camera a local client watches), and, for cameras
nobody watches here, the id of the newest entry in the camera's stream (one pipelined
`XREVRANGE … COUNT 1` for all cameras in `/api/cameras`). Stream ids are Redis' arrival time,
so a worker's own clock does not matter. "Stale" means no event for `stale_seconds`; "none"
means the stream is empty or absent (no AI worker has published for this camera).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from redis.exceptions import RedisError

from camfleet.events import stream_key
from overlay_gateway.hub import Hub

__all__ = ["Freshness", "OverlayState"]

OverlayState = Literal["fresh", "stale", "none", "unknown"]


def _id_seconds(entry_id: str | bytes) -> float:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0]) / 1000


class Freshness:
    """The hub's event sink, recording each camera's last arrival before fanning out."""

    def __init__(self, hub: Hub, registry: CollectorRegistry, stale_seconds: float) -> None:
        self.hub = hub
        self.stale_seconds = stale_seconds
        self.last: dict[str, float] = {}  # camera → epoch seconds of its newest relayed event
        registry.register(_AgeCollector(self))

    # EventSink, as the broker calls it
    def publish(self, camera: str, batch: list[tuple[str, bytes]], arrived: float) -> int:
        if batch:
            self.last[camera] = _id_seconds(batch[-1][0])
        return self.hub.publish(camera, batch, arrived)

    def status(self, camera: str, state: str) -> None:
        self.hub.status(camera, state)

    def watched(self) -> Iterator[tuple[str, float]]:
        for camera, last in list(self.last.items()):
            if self.hub.subscribers(camera):
                yield camera, last
            else:
                del self.last[camera]  # not read here any more: its age would only mislead

    def describe(self, last: float | None, now: float) -> dict[str, Any]:
        if last is None:
            return {"state": "none"}
        age = max(0.0, now - last)
        state: OverlayState = "fresh" if age <= self.stale_seconds else "stale"
        out: dict[str, Any] = {"state": state, "lastEventAt": int(last * 1000)}
        if state == "stale":
            out["staleSince"] = int(last * 1000)
        return out

    async def states(
        self, redis: aioredis.Redis, cameras: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """Per camera `{"state", "lastEventAt"?, "staleSince"?}` (ms since the epoch)."""
        newest: dict[str, float | None] = {c: self.last.get(c) for c in cameras}
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for camera in cameras:
                    pipe.xrevrange(stream_key(camera), count=1)
                replies: Iterable[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError):
            replies = [None] * len(cameras)
            unknown = True
        else:
            unknown = False
        for camera, reply in zip(cameras, replies, strict=True):
            if isinstance(reply, list) and reply:
                at = _id_seconds(reply[0][0])
                seen = newest[camera]
                newest[camera] = at if seen is None else max(seen, at)
        now = time.time()
        result = {}
        for camera in cameras:
            if unknown and newest[camera] is None:
                result[camera] = {"state": "unknown"}
            else:
                result[camera] = self.describe(newest[camera], now)
        return result


class _AgeCollector(Collector):
    def __init__(self, freshness: Freshness) -> None:
        self.freshness = freshness

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "camfleet_gateway_last_event_age_seconds",
            "Seconds since the newest event of each camera this replica relays arrived in Redis.",
            labels=["camera"],
        )
        now = time.time()
        for camera, last in self.freshness.watched():
            family.add_metric([camera], max(0.0, now - last))
        yield family
