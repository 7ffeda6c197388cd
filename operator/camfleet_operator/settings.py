"""Operator settings: one validated object per process, from `CAMFLEET_*` env, passed explicitly."""

import hashlib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from camfleet.camera import Resources
from camfleet_operator import constants as c
from camfleet_operator.model import IngestDefaults, RecordingSecrets, RecordingStore


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMFLEET_", frozen=True, extra="ignore")

    # LiveKit. The secret comes from a file (a mounted Secret) or, for local use, from env.
    livekit_url: str = Field(description="ws(s):// URL the ingest pods dial")
    livekit_api_url: str | None = Field(
        default=None, description="http(s):// URL for the server API; derived from livekit_url"
    )
    livekit_api_key: str
    livekit_api_secret: SecretStr | None = None
    livekit_api_secret_file: Path | None = None
    livekit_timeout_seconds: float = Field(default=5.0, gt=0)
    # Camera rooms outlive ingest restarts and reconnect backoff; the reconcile re-creates a
    # room that LiveKit closed anyway, so this only bounds how long an idle room lingers.
    room_empty_timeout_seconds: int = Field(default=3600, ge=0)

    # Ingest pods.
    ingest_image: str = "ghcr.io/camfleet/camfleet-ingest:0.1.0"
    ingest_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    ingest_cpu_request: str = "250m"
    ingest_memory_request: str = "128Mi"
    ingest_cpu_limit: str | None = None
    ingest_memory_limit: str | None = "512Mi"

    # Scope and sharding.
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="namespaces (or globs) to watch; empty = cluster-wide"
    )
    shard_selector: str = Field(
        default="", description="label selector this replica serves, e.g. camfleet.io/shard=a"
    )
    peering_name: str | None = Field(
        default=None, description="kopf peering object for leader election; None = standalone"
    )

    # Loops and budgets.
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    token_ttl_seconds: int = Field(default=6 * 3600, ge=60)
    token_rotation_margin_seconds: int = Field(default=3600, ge=0)
    delete_retries: int = Field(default=5, ge=0)
    delete_retry_delay_seconds: float = Field(default=5.0, ge=0)
    transient_retry_delay_seconds: float = Field(default=5.0, gt=0)
    max_workers: int = Field(default=200, ge=1, description="kopf's concurrent object workers")

    # On-demand cameras: LiveKit's webhooks say when someone joins or leaves a room (the timer's
    # list_participants is the safety net); the ingest stops after the room was idle this long.
    webhook_port: int = Field(
        default=0, ge=0, le=65535, description="POST /livekit/webhook; 0 disables"
    )
    webhook_host: str = "0.0.0.0"
    on_demand_grace_seconds: float = Field(default=5.0, ge=0)

    # Recording (docs/recording.md): the store every recording Camera writes to, and the
    # segment index (the archiver's PostgreSQL). Unset store: no Camera records.
    recording_store_url: str | None = Field(
        default=None, description="s3://bucket[/prefix] or file:///path"
    )
    recording_s3_endpoint: str | None = None
    recording_s3_region: str = "us-east-1"
    recording_s3_access_key_id: SecretStr | None = None
    recording_s3_secret_access_key: SecretStr | None = None
    recording_index_dsn: SecretStr | None = None
    recording_volume_claim: str | None = Field(
        default=None, description="PVC mounted at a file:// store's path in the ingest pods"
    )

    # Observability.
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="0 disables metrics")
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "plain"] = "json"

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        # `CAMFLEET_NAMESPACES=a,b` is friendlier in a Deployment than a JSON list.
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.livekit_api_secret is None and self.livekit_api_secret_file is None:
            raise ValueError("set CAMFLEET_LIVEKIT_API_SECRET_FILE or CAMFLEET_LIVEKIT_API_SECRET")
        if self.token_rotation_margin_seconds >= self.token_ttl_seconds:
            raise ValueError("token_rotation_margin_seconds must be below token_ttl_seconds")
        if self.token_rotation_margin_seconds <= self.reconcile_interval_seconds:
            # Rotation happens on a timer pass; a smaller margin lets a token expire in between.
            raise ValueError("token_rotation_margin_seconds must exceed the reconcile interval")
        self.shard_labels()  # fail at start-up, not at the first event
        if self.recording_store_url is not None:
            if not self.recording_store_url.startswith(("s3://", "file:///")):
                raise ValueError("recording_store_url must be s3://bucket[/prefix] or file:///path")
            if self.recording_index_dsn is None:
                raise ValueError("recording_store_url needs recording_index_dsn (the index)")
            if self.recording_store_url.startswith("s3://") and (
                self.recording_s3_access_key_id is None
                or self.recording_s3_secret_access_key is None
            ):
                raise ValueError("an s3:// recording store needs the access key id and secret")
        return self

    def recording_secrets(self) -> RecordingSecrets | None:
        if self.recording_store_url is None or self.recording_index_dsn is None:
            return None
        return RecordingSecrets(
            index_dsn=self.recording_index_dsn,
            s3_access_key_id=self.recording_s3_access_key_id,
            s3_secret_access_key=self.recording_s3_secret_access_key,
        )

    def api_secret(self) -> str:
        """The LiveKit API secret (re-read from the file so a rotated Secret is picked up)."""
        if self.livekit_api_secret_file is not None:
            return self.livekit_api_secret_file.read_text().strip()
        assert self.livekit_api_secret is not None  # enforced by _check
        return self.livekit_api_secret.get_secret_value()

    def api_url(self) -> str:
        if self.livekit_api_url:
            return self.livekit_api_url
        url = self.livekit_url
        for ws, http in (("wss://", "https://"), ("ws://", "http://")):
            if url.startswith(ws):
                return http + url.removeprefix(ws)
        return url

    def shard_labels(self) -> dict[str, str | bool]:
        """`a=b,c,!d` → {a: "b", c: True (present), d: False (absent)}; kopf filters on this."""
        out: dict[str, str | bool] = {}
        for term in (t.strip() for t in self.shard_selector.split(",")):
            if not term:
                continue
            key, sep, value = term.partition("=")
            key, value = key.strip(), value.strip()
            if key.startswith("!") and not sep:
                out[key[1:]] = False
            elif key and not sep:
                out[key] = True
            elif key and value and not key.startswith("!"):
                out[key] = value
            else:
                raise ValueError(f"unsupported shard selector term {term!r}")
        return out

    def shard_id(self) -> str:
        """A short stable id of this replica's shard ("" when it serves everything)."""
        if not self.shard_selector.strip():
            return ""
        return hashlib.sha256(self.shard_selector.strip().encode()).hexdigest()[:10]

    def finalizer(self) -> str:
        """Per shard: kopf removes a finalizer it sees on objects none of its handlers match,
        so replicas sharing one name would strip each other's (and leak rooms)."""
        shard = self.shard_id()
        return f"{c.FINALIZER}-{shard}" if shard else c.FINALIZER

    def kopf_prefix(self) -> str:
        """Annotation prefix for kopf's progress and diff-base records, per shard likewise."""
        shard = self.shard_id()
        return f"s{shard}.kopf.camfleet.io" if shard else "kopf.camfleet.io"

    def ingest_defaults(self) -> IngestDefaults:
        requests = {"cpu": self.ingest_cpu_request, "memory": self.ingest_memory_request}
        limits = {"cpu": self.ingest_cpu_limit, "memory": self.ingest_memory_limit}
        return IngestDefaults(
            image=self.ingest_image,
            image_pull_policy=self.ingest_image_pull_policy,
            resources=Resources(
                requests={k: v for k, v in requests.items() if v},
                limits={k: v for k, v in limits.items() if v} or None,
            ),
            livekit_url=self.livekit_url,
            recording=(
                None
                if self.recording_store_url is None
                else RecordingStore(
                    store_url=self.recording_store_url,
                    s3_endpoint=self.recording_s3_endpoint,
                    s3_region=self.recording_s3_region,
                    volume_claim=self.recording_volume_claim,
                )
            ),
        )
