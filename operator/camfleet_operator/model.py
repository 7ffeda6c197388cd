"""The operator's own frozen models: what builders take from settings, and an issued token.

The Camera itself is the shared contract in `camfleet.camera`.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from camfleet.camera import Resources


class RecordingStore(BaseModel):
    """Where recording ingests write (operator settings; docs/recording.md)."""

    model_config = ConfigDict(frozen=True)

    store_url: str  # s3://bucket[/prefix] or file:///path
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    #: For a file:// store: the PersistentVolumeClaim mounted at the store's path.
    volume_claim: str | None = None


class RecordingSecrets(BaseModel):
    """What a recording ingest gets through its camera's Secret, never through its pod spec."""

    model_config = ConfigDict(frozen=True)

    index_dsn: SecretStr
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None


class IngestDefaults(BaseModel):
    """What builders take from operator settings, passed explicitly (builders read no globals)."""

    model_config = ConfigDict(frozen=True)

    image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources
    livekit_url: str
    recording: RecordingStore | None = None  # None: no store configured, nothing records


class IssuedToken(BaseModel):
    """A LiveKit publish token as stored in the camera's Secret."""

    model_config = ConfigDict(frozen=True)

    token: str
    expires_at: int  # seconds since the epoch, as in the JWT's `exp`
    room: str
    identity: str
    issuer: str  # the LiveKit API key that signed it
