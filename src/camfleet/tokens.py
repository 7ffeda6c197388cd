"""LiveKit access tokens: the one place camfleet mints them.

Three holders, three grant sets, one signing path:
- the ingest (minted by the operator): publish into its camera's room and set its own attributes;
- a viewer (minted by the gateway): join and subscribe, never publish;
- an AI worker (the SDK): join and subscribe to read frames, never publish.
No I/O: signing a JWT with the API secret is all this does.
"""

from __future__ import annotations

from datetime import timedelta

from livekit import api


def publisher_grants(room: str) -> api.VideoGrants:
    """The ingest's grants: publish video into `room`; attributes carry codec/fps/state."""
    return api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_subscribe=False,
        can_publish_data=True,
        can_update_own_metadata=True,
    )


def subscriber_grants(room: str) -> api.VideoGrants:
    """A viewer's or an AI worker's grants: subscribe to `room`, publish nothing."""
    return api.VideoGrants(
        room_join=True,
        room=room,
        can_subscribe=True,
        can_publish=False,
        can_publish_data=False,
        can_update_own_metadata=False,
    )


def mint(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    grants: api.VideoGrants,
    ttl: timedelta,
    name: str | None = None,
) -> str:
    """A signed LiveKit JWT for `identity` with `grants`, valid for `ttl`."""
    token = api.AccessToken(api_key, api_secret).with_identity(identity).with_ttl(ttl)
    if name is not None:
        token = token.with_name(name)
    return token.with_grants(grants).to_jwt()
