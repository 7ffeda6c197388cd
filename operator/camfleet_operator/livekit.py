"""LiveKit I/O: rooms, participants and publish tokens through livekit-api's async client."""

import time
from datetime import timedelta

import aiohttp
from livekit import api

from camfleet import tokens
from camfleet_operator.metrics import Metrics
from camfleet_operator.model import IssuedToken
from camfleet_operator.settings import Settings


class LiveKitUnavailable(Exception):
    """The LiveKit server API could not be reached or refused a call (transient for us)."""


class RoomState:
    """What the operator wants to know about a camera's room."""

    def __init__(self, *, publishing_video: bool, attributes: dict[str, str], viewers: int):
        self.publishing_video = publishing_video
        self.attributes = attributes
        self.viewers = viewers


class LiveKit:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._api: api.LiveKitAPI | None = None
        self._key = settings.livekit_api_key

    def _client(self) -> api.LiveKitAPI:
        if self._api is None:
            self._api = api.LiveKitAPI(
                url=self._settings.api_url(),
                api_key=self._key,
                api_secret=self._settings.api_secret(),
                timeout=aiohttp.ClientTimeout(total=self._settings.livekit_timeout_seconds),
                # Failover targets LiveKit Cloud regions; a self-hosted server has one origin.
                failover=False,
            )
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    @property
    def issuer(self) -> str:
        return self._key

    async def ensure_room(self, room: str) -> None:
        """Create the room, or keep the existing one: CreateRoom is idempotent by name."""
        request = api.CreateRoomRequest(
            name=room,
            empty_timeout=self._settings.room_empty_timeout_seconds,
            departure_timeout=self._settings.room_empty_timeout_seconds,
        )
        with self._metrics.livekit_call("CreateRoom"):
            try:
                await self._client().room.create_room(request)
            except (aiohttp.ClientError, TimeoutError, api.TwirpError) as exc:
                raise LiveKitUnavailable(f"CreateRoom {room}: {describe(exc)}") from exc

    async def delete_room(self, room: str) -> None:
        with self._metrics.livekit_call("DeleteRoom"):
            try:
                await self._client().room.delete_room(api.DeleteRoomRequest(room=room))
            except api.TwirpError as exc:
                if exc.code == api.TwirpErrorCode.NOT_FOUND:
                    return  # already gone: the goal of the call
                raise LiveKitUnavailable(f"DeleteRoom {room}: {describe(exc)}") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise LiveKitUnavailable(f"DeleteRoom {room}: {describe(exc)}") from exc

    async def room_state(self, room: str, identity: str) -> RoomState:
        """Is `identity` publishing a video track, with which attributes, and who else is in."""
        with self._metrics.livekit_call("ListParticipants"):
            try:
                response = await self._client().room.list_participants(
                    api.ListParticipantsRequest(room=room)
                )
            except api.TwirpError as exc:
                if exc.code == api.TwirpErrorCode.NOT_FOUND:
                    return RoomState(publishing_video=False, attributes={}, viewers=0)
                raise LiveKitUnavailable(f"ListParticipants {room}: {describe(exc)}") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise LiveKitUnavailable(f"ListParticipants {room}: {describe(exc)}") from exc
        publishing, attributes, viewers = False, {}, 0
        for participant in response.participants:
            if participant.identity == identity:
                attributes = dict(participant.attributes)
                publishing = any(
                    t.type == api.TrackType.VIDEO and not t.muted for t in participant.tracks
                )
            else:
                viewers += 1
        return RoomState(publishing_video=publishing, attributes=attributes, viewers=viewers)

    def mint_token(self, *, room: str, identity: str, name: str) -> IssuedToken:
        """A publish-only token for the camera's ingest; the room is the only one it may join."""
        ttl = self._settings.token_ttl_seconds
        # Claim `exp` is computed inside to_jwt from its own clock; recording `now + ttl - 1`
        # keeps the annotation on the safe side of it.
        expires_at = int(time.time()) + ttl - 1
        jwt = tokens.mint(
            self._key,
            self._settings.api_secret(),
            identity=identity,
            name=name,
            grants=tokens.publisher_grants(room),
            ttl=timedelta(seconds=ttl),
        )
        return IssuedToken(
            token=jwt, expires_at=expires_at, room=room, identity=identity, issuer=self._key
        )


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a LiveKit failure for status and events."""
    if isinstance(exc, api.TwirpError):
        return f"{exc.code}: {exc.message}"[:200]
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:200]
