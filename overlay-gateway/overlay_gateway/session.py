"""One /ws client's session: parses its messages, rate-limits, authorises and (un)subscribes.

Its channel (`channel.Channel`) passes it one text message at a time and tells it when the
connection closes. It holds only what is its own (identity, subscribe budget, hub connection);
the app's collaborators are read from the app when a message comes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSCloseCode, web
from redis.exceptions import RedisError

from camfleet.events import parse_camera
from overlay_gateway import keys
from overlay_gateway.auth import AuthUnavailable, Decision, Identity
from overlay_gateway.broker import ReplayResult
from overlay_gateway.channel import Channel
from overlay_gateway.hub import Connection, text_frame
from overlay_gateway.limits import TokenBucket
from overlay_gateway.protocol import (
    PONG,
    ErrorCode,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    dumps,
    error_message,
    parse_client_message,
)

log = logging.getLogger(__name__)

__all__ = ["Session"]


class Session:
    """A WebSocket client as the gateway's logic sees it (the channel's `Endpoint`)."""

    __slots__ = ("app", "channel", "conn", "identity", "refused_in_a_row", "subscribes")

    def __init__(
        self, app: web.Application, channel: Channel, conn: Connection, identity: Identity
    ) -> None:
        self.app = app
        self.channel = channel
        self.conn = conn
        self.identity = identity
        settings = app[keys.SETTINGS]
        self.subscribes = TokenBucket(
            settings.subscribe_rate_per_second, settings.subscribe_burst, time.monotonic()
        )
        self.refused_in_a_row = 0

    def send(self, payload: bytes) -> None:
        self.conn.send(text_frame(payload), None)

    def error(self, code: ErrorCode, message: str, camera: str | None = None) -> None:
        self.send(error_message(code, message, camera))

    def refuse(self, code: WSCloseCode, reason: str) -> None:
        """Close the connection for a violation: the close frame is the last frame it gets."""
        # The channel counts it and logs it, takes the session off the fan-out (mute), then
        # waits for the client's close frame while discarding whatever else comes.
        self.channel.close(int(code), reason[:120])

    # --- the channel's Endpoint -------------------------------------------------------------

    def mute(self) -> None:
        self.conn.close()  # off the fan-out and its queue: no event frame may follow a close

    def release(self) -> None:
        hub, broker = self.app[keys.HUB], self.app[keys.BROKER]
        for camera in hub.remove(self.conn):
            broker.release(camera)

    def lost(self, code: int) -> None:
        log.info(
            "client disconnected",
            extra={"connection": self.conn.ident, "dropped": self.conn.dropped, "code": code},
        )

    async def handle(self, data: str) -> None:
        try:
            msg = parse_client_message(data)
        except ProtocolError as exc:
            self.error(exc.code, exc.message)
            return
        if isinstance(msg, Ping):
            self.send(PONG)
        elif isinstance(msg, Unsubscribe):
            hub, broker = self.app[keys.HUB], self.app[keys.BROKER]
            for camera in dict.fromkeys(msg.cameras):
                if hub.unsubscribe(self.conn, camera):
                    broker.release(camera)
                self.send(dumps({"type": "unsubscribed", "camera": camera}))
        elif isinstance(msg, Subscribe):
            await self._subscribe(msg)

    # --- subscribing ------------------------------------------------------------------------

    def _refused(self, reason: str, n: int = 1) -> None:
        self.app[keys.METRICS].subscribes_refused.labels(reason).inc(n)

    async def _subscribe(self, msg: Subscribe) -> None:
        settings = self.app[keys.SETTINGS]
        if not self.subscribes.take(time.monotonic()):
            self._refused("rate_limited")
            self.refused_in_a_row += 1
            if self.refused_in_a_row >= settings.subscribe_burst:
                self.refuse(WSCloseCode.POLICY_VIOLATION, "too many subscribe messages")
                return
            self.error(
                ErrorCode.RATE_LIMITED,
                f"at most {settings.subscribe_rate_per_second:g} subscribe messages a second",
            )
            return
        self.refused_in_a_row = 0
        if len(msg.cameras) > settings.max_cameras_per_message:
            self._refused("too_many_cameras")
            self.error(
                ErrorCode.TOO_MANY_CAMERAS,
                f"at most {settings.max_cameras_per_message} cameras per subscribe message",
            )
            return
        unknown = set(msg.since) - set(msg.cameras)
        if unknown:
            self.error(ErrorCode.BAD_REQUEST, "since names cameras not being subscribed")
            return
        wanted: list[str] = []
        for camera in dict.fromkeys(msg.cameras):
            try:
                parse_camera(camera)
            except ValueError:
                self.error(ErrorCode.INVALID_CAMERA, "expected '<namespace>/<name>'", camera)
                continue
            if camera in self.conn.cameras:
                continue  # already live; a second subscribe is a no-op
            wanted.append(camera)
        # Cameras past the connection's limit are refused before they cost a lookup.
        room = max(0, settings.max_subscriptions - len(self.conn.cameras))
        if len(wanted) > room:
            self._refused("too_many_subscriptions", len(wanted) - room)
            for camera in wanted[room:]:
                self._too_many(camera)
            wanted = wanted[:room]
        authorizer = self.app[keys.AUTHORIZER]
        try:
            decisions = await asyncio.gather(
                *(authorizer.check(self.identity, parse_camera(c)) for c in wanted)
            )
        except AuthUnavailable:
            for camera in wanted:
                self.error(ErrorCode.UNAVAILABLE, "authorisation unavailable, retry", camera)
            return
        hub = self.app[keys.HUB]
        allowed: list[str] = []
        for camera, decision in zip(wanted, decisions, strict=True):
            if decision is Decision.NOT_FOUND:
                self.error(ErrorCode.NOT_FOUND, "no such camera", camera)
            elif decision is not Decision.ALLOWED:
                self.error(ErrorCode.FORBIDDEN, "not allowed to view this camera", camera)
            elif len(self.conn.cameras) >= settings.max_subscriptions:
                self._too_many(camera)
            else:
                # Attached now (frames held back) so that nothing published meanwhile is lost.
                hub.subscribe(self.conn, camera)
                allowed.append(camera)
        await asyncio.gather(*(self._activate(c, msg.since.get(c)) for c in allowed))

    def _too_many(self, camera: str) -> None:
        self.error(
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            f"at most {self.app[keys.SETTINGS].max_subscriptions} cameras per connection",
            camera,
        )

    async def _activate(self, camera: str, since: str | None) -> None:
        hub, broker = self.app[keys.HUB], self.app[keys.BROKER]
        try:
            await broker.watch(camera)
        except BaseException:
            # watch() holds its reference from before its first await: give it back.
            if hub.unsubscribe(self.conn, camera):
                broker.release(camera)
            raise
        replay = ReplayResult([], False)
        if since is not None:
            try:
                replay = await broker.replay(
                    camera, since, self.app[keys.SETTINGS].replay_max_events
                )
            except (RedisError, OSError):
                # Live delivery goes on; the client learns that history is incomplete.
                replay = ReplayResult([], True)
        state = "degraded" if broker.degraded(camera) else "live"
        ack = dumps(
            {
                "type": "subscribed",
                "camera": camera,
                "replayed": len(replay.events),
                "gap": replay.gap,
                "state": state,
            }
        )
        hub.activate(self.conn, camera, [text_frame(ack)], replay.events, since)
