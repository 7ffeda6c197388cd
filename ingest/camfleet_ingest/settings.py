"""The ingest's settings: environment variables ``CAMFLEET_INGEST_*`` (and Secret files).

Validated once at start-up and passed explicitly. Credentials stay ``SecretStr`` until the one
place that builds the URL FFmpeg opens; a validation error is reported without input values,
so a malformed setting never echoes a password (see ``safe_errors``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from camfleet import ingest_contract as ic
from camfleet.camera import ingest_identity

_CAMERA = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

Mode = Literal["auto", "passthrough", "transcode"]


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ic.ENV_PREFIX, extra="ignore", frozen=True)

    camera: str = Field(description="namespace/name of the Camera, used in logs and messages")
    source_url: str
    source_username: SecretStr | None = None
    source_username_file: Path | None = None
    source_password: SecretStr | None = None
    source_password_file: Path | None = None
    transport: Literal["tcp", "udp"] = "tcp"
    mode: Mode = "auto"
    # auto: publish the camera's audio track (docs/ingest.md#audio); none/opus are the older
    # spellings of off/auto (an operator from before may still pass them).
    audio: Literal["auto", "off", "none", "opus"] = "off"
    max_bitrate_kbps: int | None = Field(default=None, gt=0)

    livekit_url: str
    token_file: Path
    room: str = Field(min_length=1)

    http_host: str = "0.0.0.0"  # the kubelet probes the pod IP
    http_port: int = Field(default=ic.PORT, ge=0, le=65535)
    termination_log: Path = Path(ic.TERMINATION_LOG)
    # The address the gateway fetches /snapshot.jpg from (announced in the participant
    # attributes): the pod IP from the downward API; unset, no snapshot address is announced.
    advertise_host: str | None = None
    # A snapshot is decoded at most this often; requests in between get the same JPEG.
    snapshot_min_interval_s: float = Field(default=2.0, ge=0)
    snapshot_width: int = Field(default=640, ge=16, le=3840)

    open_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=5.0, gt=0)
    backoff_base_s: float = Field(default=0.5, gt=0, le=1.0)
    # LiveKit side: thousands of ingests may retry against one server after its restart.
    backoff_cap_s: float = Field(default=30.0, gt=0, le=30.0)
    # Camera side: one ingest per camera, and the camera must be Live again < 10 s after it
    # returns, so its retries stay close together.
    source_backoff_cap_s: float = Field(default=5.0, gt=0, le=30.0)
    # /healthz turns 503 when no frame was published for this long.
    healthy_window_s: float = Field(default=3.0, gt=0)
    publish_rejected_attempts: int = Field(default=3, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("camera")
    @classmethod
    def _camera_ref(cls, value: str) -> str:
        if not _CAMERA.match(value):
            raise ValueError("must be <namespace>/<name>")
        return value

    @field_validator("source_url")
    @classmethod
    def _rtsp_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
            raise ValueError("must be an rtsp:// or rtsps:// URL with a host")
        if parts.username is not None or parts.password is not None:
            # Credentials belong in the Secret: a URL is logged, shown in status and in events.
            raise ValueError("must not contain credentials; use SOURCE_USERNAME/PASSWORD")
        return value

    @field_validator("livekit_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("ws", "wss", "http", "https"):
            raise ValueError("must be a ws://, wss://, http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_source_each(self) -> IngestSettings:
        for name in ("username", "password"):
            if getattr(self, f"source_{name}") and getattr(self, f"source_{name}_file"):
                var = f"SOURCE_{name.upper()}"
                raise ValueError(f"set {var} or {var}_FILE, not both")
        if self.backoff_base_s > min(self.backoff_cap_s, self.source_backoff_cap_s):
            raise ValueError("BACKOFF_BASE_S must not exceed the backoff caps")
        return self

    @property
    def audio_enabled(self) -> bool:
        return self.audio in ("auto", "opus")

    @property
    def snapshot_url(self) -> str | None:
        """Where the gateway reaches this ingest's ``/snapshot.jpg`` (None: not announced)."""
        if not self.advertise_host:
            return None
        host = f"[{self.advertise_host}]" if ":" in self.advertise_host else self.advertise_host
        return f"http://{host}:{self.http_port}{ic.SNAPSHOT_PATH}"

    @property
    def identity(self) -> str:
        namespace, name = self.camera.split("/", 1)
        return ingest_identity(namespace, name)

    def credentials(self) -> tuple[str | None, str | None]:
        """Username and password, read now (Secret files may be updated in place)."""
        return (
            _read_secret(self.source_username, self.source_username_file),
            _read_secret(self.source_password, self.source_password_file),
        )

    def read_token(self) -> str:
        """The publish token, read at every (re)connect: the operator rotates it in place."""
        return self.token_file.read_text().strip()


def _read_secret(value: SecretStr | None, path: Path | None) -> str | None:
    if path is not None:
        return path.read_text().rstrip("\r\n")
    return value.get_secret_value() if value is not None else None


def safe_errors(exc: ValidationError, prefix: str = ic.ENV_PREFIX) -> str:
    """A one-line summary of a settings error, without the offending values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(x) for x in err["loc"]) or "settings"
        parts.append(f"{prefix}{where.upper()}: {err['msg']}")
    return "; ".join(parts)
