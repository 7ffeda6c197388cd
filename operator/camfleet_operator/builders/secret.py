"""The per-camera Secret holding the ingest's LiveKit publish token."""

import base64
from typing import Any

from camfleet import ingest_contract as ic
from camfleet.camera import Camera
from camfleet_operator import constants as c
from camfleet_operator.builders.meta import labels, owner_reference, stamp
from camfleet_operator.model import IssuedToken, RecordingSecrets


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def build_secret(
    camera: Camera, token: IssuedToken, recording: RecordingSecrets | None = None
) -> dict[str, Any]:
    """The desired token Secret; its annotations let the next pass decide whether to rotate.

    A recording camera's Secret also carries the index DSN and the store's credentials (a pod
    can reference only Secrets of its own namespace).
    """
    data = {ic.TOKEN_KEY: _b64(token.token)}
    if recording is not None:
        data[ic.SECRET_INDEX_DSN] = _b64(recording.index_dsn.get_secret_value())
        for key, value in (
            (ic.SECRET_S3_ACCESS_KEY_ID, recording.s3_access_key_id),
            (ic.SECRET_S3_SECRET_ACCESS_KEY, recording.s3_secret_access_key),
        ):
            if value is not None:
                data[key] = _b64(value.get_secret_value())
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": camera.secret_name,
            "namespace": camera.namespace,
            "labels": labels(camera),
            "annotations": {
                c.ANN_TOKEN_EXPIRES: str(token.expires_at),
                c.ANN_TOKEN_ROOM: token.room,
                c.ANN_TOKEN_IDENTITY: token.identity,
                c.ANN_TOKEN_ISSUER: token.issuer,
            },
            "ownerReferences": [owner_reference(camera)],
        },
        # `data` (base64), not `stringData`: it is what the API server hands back, so the
        # desired-hash comparison sees the same bytes on both sides.
        "data": data,
    }
    return stamp(secret)


def issued_token(secret: dict[str, Any]) -> IssuedToken | None:
    """Read the token an existing Secret carries (None when it is missing or malformed)."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    raw = (secret.get("data") or {}).get(ic.TOKEN_KEY)
    if not isinstance(raw, str):
        return None
    try:
        return IssuedToken(
            token=base64.b64decode(raw).decode(),
            expires_at=int(annotations[c.ANN_TOKEN_EXPIRES]),
            room=annotations[c.ANN_TOKEN_ROOM],
            identity=annotations[c.ANN_TOKEN_IDENTITY],
            issuer=annotations[c.ANN_TOKEN_ISSUER],
        )
    except (KeyError, TypeError, ValueError):
        return None


def needs_rotation(
    current: IssuedToken | None, *, room: str, identity: str, issuer: str, now: int, margin: int
) -> bool:
    """Mint a new token when there is none, it is for another room/key, or it expires soon."""
    if current is None:
        return True
    if (current.room, current.identity, current.issuer) != (room, identity, issuer):
        return True
    return current.expires_at - now <= margin
