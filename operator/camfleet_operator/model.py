"""The operator's own frozen models: what builders take from settings, and an issued token.

The Camera itself is the shared contract in `camfleet.camera`.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict

from camfleet.camera import Resources


class IngestDefaults(BaseModel):
    """What builders take from operator settings, passed explicitly (builders read no globals)."""

    model_config = ConfigDict(frozen=True)

    image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources
    livekit_url: str


class IssuedToken(BaseModel):
    """A LiveKit publish token as stored in the camera's Secret."""

    model_config = ConfigDict(frozen=True)

    token: str
    expires_at: int  # seconds since the epoch, as in the JWT's `exp`
    room: str
    identity: str
    issuer: str  # the LiveKit API key that signed it
