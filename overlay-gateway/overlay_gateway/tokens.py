"""Short-lived LiveKit tokens for viewers: join and subscribe, never publish."""

from __future__ import annotations

import re
import secrets
import time
from datetime import timedelta
from typing import Any

from livekit.api import AccessToken, VideoGrants

from camfleet.events import CameraRef
from overlay_gateway.auth import Identity

_IDENTITY_SAFE = re.compile(r"[^A-Za-z0-9_.@:-]+")


def room_name(ref: CameraRef, camera: dict[str, Any] | None) -> str:
    """The Camera's `spec.room`, else the default `<namespace>-<name>` (design §3)."""
    room = ((camera or {}).get("spec") or {}).get("room")
    if isinstance(room, str) and room:
        return room
    return f"{ref.namespace}-{ref.name}"


def viewer_grants(room: str) -> VideoGrants:
    return VideoGrants(
        room_join=True,
        room=room,
        can_subscribe=True,
        can_publish=False,
        can_publish_data=False,
        can_update_own_metadata=False,
    )


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
    token = (
        AccessToken(api_key, api_secret)
        .with_identity(participant)
        .with_name(identity.user[:128])
        .with_ttl(timedelta(seconds=ttl_seconds))
        .with_grants(viewer_grants(room))
    )
    return token.to_jwt(), participant, int(time.time()) + ttl_seconds
