"""The /ws protocol, version 1: JSON text frames (docs/gateway.md).

Client → server:
    {"type": "subscribe", "cameras": ["ns/name", ...], "since": {"ns/name": "<stream id>"}}
    {"type": "unsubscribe", "cameras": [...]}
    {"type": "ping"}
Server → client:
    {"type": "hello", "v": 1, "user": ..., "heartbeat": <s>, "limits": {...}}
    {"type": "subscribed", "camera": ..., "replayed": <n>, "gap": <bool>,
     "state": "live"|"degraded"}
    {"type": "unsubscribed", "camera": ...}
    {"type": "event", "camera": ..., "id": "<stream id>", "event": {...contract v1...}}
    {"type": "status", "camera": ..., "state": "degraded"|"live"}
    {"type": "error", "code": ..., "message": ..., "camera": <optional>}
    {"type": "pong"}
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

PROTOCOL_VERSION: Final = 1
# Redis Stream ids ("<ms>-<seq>"); "0" and "0-0" mean "from the start of retention".
_POSITION_RE: Final = re.compile(r"^\d{1,20}(-\d{1,20})?$")


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_CAMERA = "invalid_camera"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    TOO_MANY_CAMERAS = "too_many_cameras"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Subscribe(_Message):
    type: Literal["subscribe"]
    cameras: list[Annotated[str, Field(max_length=317)]] = Field(min_length=1, max_length=1000)
    since: dict[str, str] = Field(default_factory=dict)

    @field_validator("since")
    @classmethod
    def _positions(cls, since: dict[str, str]) -> dict[str, str]:
        for camera, position in since.items():
            if not _POSITION_RE.match(position):
                raise ValueError(f"since[{camera!r}] is not a stream id")
        return since


class Unsubscribe(_Message):
    type: Literal["unsubscribe"]
    cameras: list[Annotated[str, Field(max_length=317)]] = Field(min_length=1, max_length=1000)


class Ping(_Message):
    type: Literal["ping"]


ClientMessage = Annotated[Subscribe | Unsubscribe | Ping, Field(discriminator="type")]
_client_adapter: TypeAdapter[Subscribe | Unsubscribe | Ping] = TypeAdapter(ClientMessage)


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_client_message(data: str | bytes) -> Subscribe | Unsubscribe | Ping:
    try:
        return _client_adapter.validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "union_tag_invalid":
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown message type") from None
        where = ".".join(str(p) for p in first["loc"])
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{where}: {first['msg']}") from None


def position_key(position: str) -> tuple[int, int]:
    """A stream id ("<ms>-<seq>", or "<ms>") as a sortable pair."""
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


def event_message(camera: str, position: str, event_json: bytes) -> bytes:
    # Spliced, not re-encoded: event_json is the validated, canonical event serialisation.
    return b"".join(
        (
            b'{"type":"event","camera":',
            orjson.dumps(camera),
            b',"id":"',
            position.encode(),
            b'","event":',
            event_json,
            b"}",
        )
    )


def dumps(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def error_message(code: ErrorCode, message: str, camera: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if camera is not None:
        body["camera"] = camera
    return orjson.dumps(body)


def status_message(camera: str, state: str) -> bytes:
    return orjson.dumps({"type": "status", "camera": camera, "state": state})


PONG: Final = b'{"type":"pong"}'
