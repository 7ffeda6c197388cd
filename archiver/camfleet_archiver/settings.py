"""Archiver settings: one pydantic-settings object per process, env prefix `CAMFLEET_ARCHIVER_`.

Validated at start-up and passed explicitly; nothing reads it as a global. The PostgreSQL DSN
(it holds a password) comes from a mounted Secret file (`POSTGRES_DSN_FILE`) or, for local use,
from `POSTGRES_DSN`.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from camfleet.camera import parse_retention


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMFLEET_ARCHIVER_", frozen=True, extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(default=8090, ge=0, le=65535)  # /healthz, /metrics
    log_level: str = "INFO"

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    postgres_dsn: SecretStr | None = None
    postgres_dsn_file: Path | None = None

    # The consumer group every replica joins, and this replica's name in it (the pod name).
    group: str = Field(default="camfleet-archiver", min_length=1, max_length=64)
    consumer: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)

    # Entries per XREADGROUP call per stream, and at most this many rows per transaction.
    read_count: int = Field(default=1000, ge=1)
    batch_max_events: int = Field(default=5000, ge=1)
    # How long a read waits for new entries; also the longest a lone event waits for its batch.
    block_ms: int = Field(default=200, ge=1)
    streams_per_reader: int = Field(default=256, ge=1)
    # New cameras' streams are found by SCAN this often.
    discover_seconds: float = Field(default=5.0, gt=0)
    # Entries pending this long at a consumer (a dead or stuck replica) are claimed.
    claim_idle_seconds: float = Field(default=30.0, gt=0)
    claim_every_seconds: float = Field(default=10.0, gt=0)
    # Backlog is checked this often; a stream whose unarchived entries reach this share of its
    # length is about to lose entries to trimming (metric + warning).
    backlog_every_seconds: float = Field(default=10.0, gt=0)
    behind_ratio: float = Field(default=0.8, gt=0, le=1)

    # Retention: Cameras without spec.history.retention keep their events this long.
    default_retention: timedelta = timedelta(days=30)
    retention_every_seconds: float = Field(default=3600.0, gt=0)
    # Daily partitions are created this many days ahead (and on demand for late events).
    partitions_ahead_days: int = Field(default=2, ge=0, le=30)
    # Events stamped further in the future than this are dropped (a worker with a wrong clock).
    max_future_seconds: float = Field(default=86400.0, gt=0)
    # Per-camera row/byte figures for /metrics (a GROUP BY over the table) are refreshed this often.
    size_every_seconds: float = Field(default=300.0, gt=0)

    # Cameras' spec.history.retention are read from the Kubernetes API when enabled.
    kube_enabled: bool = False
    kubeconfig: Path | None = None

    backoff_initial_seconds: float = Field(default=0.2, gt=0)
    backoff_max_seconds: float = Field(default=5.0, gt=0)
    migrate: bool = True  # apply migrations at start-up (under an advisory lock)

    @field_validator("default_retention", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_retention(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.postgres_dsn is None) == (self.postgres_dsn_file is None):
            raise ValueError("set exactly one of postgres_dsn_file (a Secret) or postgres_dsn")
        if self.postgres_dsn_file is not None and not self.postgres_dsn_file.is_file():
            raise ValueError(f"postgres_dsn_file {self.postgres_dsn_file} does not exist")
        return self

    def dsn(self) -> str:
        """The DSN as mounted now (a rotated Secret needs no restart of the reader)."""
        if self.postgres_dsn_file is not None:
            return self.postgres_dsn_file.read_text().strip()
        assert self.postgres_dsn is not None
        return self.postgres_dsn.get_secret_value()
