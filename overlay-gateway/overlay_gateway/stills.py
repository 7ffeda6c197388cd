"""Camera stills for the viewer's grid: the ingest's latest keyframe as a JPEG, kept in Redis.

How a still gets here (docs/gateway.md#snapshots): the ingest serves ``/snapshot.jpg`` on its
HTTP port and announces that address in its LiveKit participant attributes (``snapshot``).
The gateway, which holds LiveKit API credentials anyway, looks the ingest participant up
(``RoomService.GetParticipant``), fetches the JPEG and keeps it in Redis with its capture time,
so that every replica can answer with the last known still when the ingest is not running (an
on-demand camera nobody watches, a camera that is down). A still younger than ``refresh``
seconds is served from Redis without asking the ingest; one fetch per camera per replica is in
flight at a time, whoever asks.

The ingest stays free of Redis: it answers only its own HTTP requests, and decodes a keyframe
only when asked (at most every few seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis
from livekit import api
from redis.exceptions import RedisError

from camfleet import ingest_contract as ic
from camfleet.camera import ingest_identity
from camfleet.events import CameraRef

__all__ = ["Still", "Stills", "snapshot_url_allowed", "still_key"]

log = logging.getLogger(__name__)

KEY_PREFIX = "camfleet:snapshot:"


def still_key(camera: str) -> str:
    return f"{KEY_PREFIX}{camera}"


@dataclass(frozen=True)
class Still:
    jpeg: bytes
    taken_at_ms: int  # the keyframe's capture stamp
    fetched_at_ms: int  # when the gateway got it from the ingest
    live: bool  # fetched just now or within `refresh` from a running ingest


def snapshot_url_allowed(url: str) -> bool:
    """Only what an ingest announces: ``http://host:port/snapshot.jpg``, nothing else.

    The address comes from a participant attribute; a participant that could set another URL
    must not turn the gateway into a fetcher of arbitrary URLs (query strings, userinfo, other
    paths and schemes are refused).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "http"
        and bool(parts.hostname)
        and port is not None
        and parts.username is None
        and parts.password is None
        and parts.path == ic.SNAPSHOT_PATH
        and not parts.query
        and not parts.fragment
    )


class Stills:
    """The newest still per camera: Redis first, the camera's ingest when that is too old."""

    def __init__(
        self,
        redis: aioredis.Redis,
        http: aiohttp.ClientSession,
        livekit: api.LiveKitAPI | None,
        *,
        refresh: float,
        timeout: float,
        keep: float,
        max_bytes: int,
    ) -> None:
        self.redis = redis
        self.http = http
        self.livekit = livekit
        self.refresh = refresh
        self.timeout = timeout
        self.keep = keep
        self.max_bytes = max_bytes
        self._inflight: dict[str, asyncio.Task[Still | None]] = {}
        self.fetches = 0  # fetches from an ingest (tests and the benchmark read it)

    async def latest(self, ref: CameraRef, room: str) -> Still | None:
        """The camera's still, fresh if its ingest answers, else the last known; None if never."""
        camera = str(ref)
        stored = await self._stored(camera)
        now_ms = int(time.time() * 1000)
        if stored is not None and now_ms - stored.fetched_at_ms < self.refresh * 1000:
            return Still(stored.jpeg, stored.taken_at_ms, stored.fetched_at_ms, live=True)
        pending = self._inflight.get(camera)
        if pending is None:
            # A task of its own: a viewer who goes away must not cancel the others' fetch.
            pending = asyncio.create_task(self._fetch(ref, room))
            self._inflight[camera] = pending
            pending.add_done_callback(lambda _task: self._inflight.pop(camera, None))
        fresh = await asyncio.shield(pending)
        return fresh if fresh is not None else stored

    async def _fetch(self, ref: CameraRef, room: str) -> Still | None:
        try:
            return await self._refresh(ref, room)
        except Exception as exc:  # a failed fetch falls back to the stored still
            log.warning("snapshot fetch failed", extra={"camera": str(ref), "error": repr(exc)})
            return None

    async def _stored(self, camera: str) -> Still | None:
        try:
            found = await self.redis.hmget(still_key(camera), ["jpeg", "taken", "fetched"])
        except (RedisError, OSError) as exc:
            log.warning("snapshot cache unavailable", extra={"error": repr(exc)})
            return None
        jpeg, taken, fetched = found
        # The client does not decode responses: the JPEG comes back as bytes.
        if not isinstance(jpeg, bytes) or not jpeg or taken is None or fetched is None:
            return None
        return Still(jpeg, int(taken), int(fetched), live=False)

    async def _refresh(self, ref: CameraRef, room: str) -> Still | None:
        url = await self._address(ref, room)
        if url is None:
            return None
        self.fetches += 1
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self.http.get(url, timeout=timeout, allow_redirects=False) as resp:
            if resp.status != 200 or resp.content_type != "image/jpeg":
                return None
            jpeg = await resp.content.read(self.max_bytes + 1)
            if len(jpeg) > self.max_bytes:
                raise ValueError(f"snapshot over {self.max_bytes} bytes")
            taken = int(resp.headers.get(ic.SNAPSHOT_TAKEN_HEADER, "0"))
        still = Still(jpeg, taken, int(time.time() * 1000), live=True)
        try:
            key = still_key(str(ref))
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        "jpeg": still.jpeg,
                        "taken": still.taken_at_ms,
                        "fetched": still.fetched_at_ms,
                    },
                )
                pipe.expire(key, int(self.keep))
                await pipe.execute()
        except (RedisError, OSError) as exc:  # still worth serving this once
            log.warning("snapshot cache unavailable", extra={"error": repr(exc)})
        return still

    async def _address(self, ref: CameraRef, room: str) -> str | None:
        """The ingest's announced snapshot URL, None when it is not in its room."""
        if self.livekit is None:
            return None
        identity = ingest_identity(ref.namespace, ref.name)
        try:
            participant = await asyncio.wait_for(
                self.livekit.room.get_participant(
                    api.RoomParticipantIdentity(room=room, identity=identity)
                ),
                self.timeout,
            )
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                return None  # no ingest running (on-demand, stopped, down): the last known
            raise
        url = participant.attributes.get(ic.ATTR_SNAPSHOT, "")
        if not url:
            return None
        if not snapshot_url_allowed(url):
            log.warning("refusing an announced snapshot address", extra={"camera": str(ref)})
            return None
        return url
