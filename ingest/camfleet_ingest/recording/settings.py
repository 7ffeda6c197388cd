"""Recording settings: ``CAMFLEET_INGEST_RECORDING_*`` (docs/recording.md), validated at start-up.

Apart from the ingest's own settings so that a camera that does not record needs none of them.
Secrets stay ``SecretStr`` until the store or the index is opened.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from camfleet import ingest_contract as ic
from camfleet.camera import parse_retention

RecordingMode = Literal["off", "continuous", "events"]


class RecordingSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=f"{ic.ENV_PREFIX}RECORDING_", extra="ignore", frozen=True
    )

    mode: RecordingMode = "off"
    #: `s3://bucket[/prefix]` or `file:///path` (a mounted PersistentVolume).
    store_url: str | None = None
    s3_endpoint: str | None = None  # unset: AWS itself
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    #: The segment index (PostgreSQL, the archiver's database): `postgresql://…`.
    index_dsn: SecretStr | None = None
    segment_seconds: float = Field(default=4.0, ge=1.0, le=60.0)
    #: Segments waiting for the store, in bytes; past it new segments are dropped as a gap.
    buffer_bytes: int = Field(default=64 * 1024 * 1024, ge=16 * 1024)
    #: One upload or index write longer than this counts as a failed store.
    store_timeout_s: float = Field(default=10.0, gt=0)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_cap_s: float = Field(default=5.0, gt=0)
    #: Segments older than this are deleted (`spec.recording.retention`: 12h, 7d, 2w …).
    retention: timedelta = timedelta(days=7)
    retention_every_s: float = Field(default=600.0, gt=0)
    pre_roll_s: int = Field(default=5, ge=0, le=999)
    post_roll_s: int = Field(default=10, ge=0, le=999)

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme == "s3":
            if not parts.hostname:
                raise ValueError("s3:// URL needs a bucket: s3://<bucket>[/<prefix>]")
        elif parts.scheme == "file":
            if not parts.path.startswith("/") or parts.netloc:
                raise ValueError("file:// URL needs an absolute path: file:///<path>")
        else:
            raise ValueError("must be s3://<bucket>[/<prefix>] or file:///<path>")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; use S3_ACCESS_KEY_ID/SECRET")
        return value

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: object) -> object:
        return parse_retention(value) if isinstance(value, str) else value

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _complete(self) -> RecordingSettings:
        if self.mode == "off":
            return self
        if self.store_url is None:
            raise ValueError("recording is on: set RECORDING_STORE_URL")
        if self.index_dsn is None:
            raise ValueError("recording is on: set RECORDING_INDEX_DSN")
        if self.store_url.startswith("s3:") and (
            self.s3_access_key_id is None or self.s3_secret_access_key is None
        ):
            raise ValueError("an s3:// store needs S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY")
        if self.retry_base_s > self.retry_cap_s:
            raise ValueError("RETRY_BASE_S must not exceed RETRY_CAP_S")
        return self

    @property
    def segment_us(self) -> int:
        return int(self.segment_seconds * 1_000_000)
