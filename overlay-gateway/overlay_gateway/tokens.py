"""Short-lived LiveKit tokens for viewers: join and subscribe, never publish."""

from __future__ import annotations

import re
import secrets
import time
from datetime import timedelta
from typing import Any

from camfleet import tokens
from camfleet.camera import default_room
from camfleet.events import CameraRef
from overlay_gateway.auth import Identity

_IDENTITY_SAFE = re.compile(r"[^A-Za-z0-9_.@:-]+")


def room_name(ref: CameraRef, camera: dict[str, Any] | None) -> str:
    """The Camera's `spec.room`, else its default room."""
    room = ((camera or {}).get("spec") or {}).get("room")
    if isinstance(room, str) and room:
        return room
    return default_room(ref.namespace, ref.name)


def mint_viewer_token(
    *,
    api_key: str,
    api_secret: str,
    identity: Identity,
    room: str,
    ttl_seconds: int,
) -> tuple[str, str, int]:
    """Returns (jwt, participant identity, expiry in s since the epoch)."""
    # A random suffix: two tabs of one user must not evict each other (LiveKit identities are
    # unique per room).
    participant = f"viewer:{_IDENTITY_SAFE.sub('_', identity.user)[:64]}:{secrets.token_hex(4)}"
    jwt = tokens.mint(
        api_key,
        api_secret,
        identity=participant,
        name=identity.user[:128],
        grants=tokens.subscriber_grants(room),
        ttl=timedelta(seconds=ttl_seconds),
    )
    return jwt, participant, int(time.time()) + ttl_seconds
