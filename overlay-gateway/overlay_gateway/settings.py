"""Gateway settings: one pydantic-settings object per process, env prefix `CAMFLEET_GATEWAY_`.

Validated at start-up and passed explicitly to `init_app`; nothing reads it as a global.
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class AuthMode(StrEnum):
    KUBERNETES = "kubernetes"  # Authorization: Bearer <token> → TokenReview
    PROXY = "proxy"  # X-Forwarded-User/-Groups from an auth proxy at a trusted address
    STATIC = "static"  # one shared token, local development only


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMFLEET_GATEWAY_", frozen=True, extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    # aiohttp's default of 128 drops SYNs when hundreds of browsers reconnect at once (a replica
    # restart), and each drop costs the client a 1 s retransmission.
    listen_backlog: int = Field(default=2048, ge=1)
    log_level: str = "INFO"

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")

    # Comma-separated in the environment, tried in order; the first that recognises the
    # request decides who the caller is.
    auth_modes: Annotated[list[AuthMode], NoDecode] = [AuthMode.KUBERNETES]
    static_token: SecretStr | None = None
    proxy_cidrs: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []
    proxy_user_header: str = "X-Forwarded-User"
    proxy_groups_header: str = "X-Forwarded-Groups"

    # Kubernetes API access for TokenReview/SubjectAccessReview and Camera lookups:
    # in-cluster service account when `kubeconfig` is unset and the pod env is present.
    kube_enabled: bool = True
    kubeconfig: Path | None = None
    authn_cache_seconds: float = Field(default=10.0, ge=0)
    authz_cache_seconds: float = Field(default=10.0, ge=0)
    # Negative decisions expire sooner so that a fresh RoleBinding takes effect quickly.
    authz_deny_cache_seconds: float = Field(default=2.0, ge=0)
    # "No such Camera" from the API, remembered whoever asks (a new Camera shows up this late).
    camera_not_found_cache_seconds: float = Field(default=5.0, ge=0)

    livekit_url: str = "ws://127.0.0.1:7880"  # as the browser must reach it
    livekit_api_key: SecretStr | None = None
    livekit_api_secret: SecretStr | None = None
    viewer_token_ttl_seconds: int = Field(default=600, ge=30, le=86400)
    # Where the gateway reaches LiveKit's server API (snapshots look the ingest up there);
    # unset: livekit_url, which is the address browsers use and may not resolve in the cluster.
    livekit_api_url: str | None = None

    # Snapshots (docs/gateway.md#snapshots): a still younger than this is served from Redis
    # without asking the ingest; also the browser's max-age.
    snapshot_refresh_seconds: float = Field(default=5.0, ge=1)
    snapshot_timeout_seconds: float = Field(default=2.0, gt=0)
    # How long the last known still of a camera stays in Redis (7 days).
    snapshot_keep_seconds: int = Field(default=7 * 86400, ge=60)
    snapshot_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)

    # WebSocket connections plus TCP connections still in their handshake, per replica.
    max_connections: int = Field(default=10_000, ge=1)
    # From accept to the end of the upgrade (request headers, authentication): a connection
    # that has not made it by then is closed, so half-open sockets cannot hold slots for long.
    handshake_timeout_seconds: float = Field(default=10.0, gt=0)
    max_subscriptions: int = Field(default=64, ge=1)
    # Each camera named costs an authorisation (API lookups) unless cached: bounded per message,
    # and subscribe messages per connection are rate-limited (token bucket).
    max_cameras_per_message: int = Field(default=64, ge=1)
    subscribe_rate_per_second: float = Field(default=2.0, gt=0)
    # Also the number of refused subscribes in a row after which the connection is closed (1008).
    subscribe_burst: int = Field(default=10, ge=1)
    max_message_bytes: int = Field(default=16 * 1024, ge=256)
    # Per-connection queue of frames waiting for a slow socket; latest-wins per camera past it.
    send_queue_size: int = Field(default=256, ge=1)
    # A connection whose queue stays over the limit this long is disconnected.
    slow_client_timeout_seconds: float = Field(default=10.0, gt=0)
    # Bytes the kernel/transport may buffer for one client before we start queueing.
    socket_high_water_bytes: int = Field(default=256 * 1024, ge=1024)
    heartbeat_seconds: float = Field(default=20.0, gt=0)
    replay_max_events: int = Field(default=1000, ge=1)

    xread_block_ms: int = Field(default=5000, ge=1)
    xread_count: int = Field(default=100, ge=1)
    # After a read that returned events, wait this long before the next one, so that one
    # wake-up (and one round trip) collects what many AI workers add within that time: fewer
    # reads per event, at most this much more latency. Off by default: with the benchmark's
    # pipelining publisher it did not reduce reads (docs/benchmarks.md).
    xread_gather_ms: float = Field(default=0.0, ge=0, le=50)
    # Streams multiplexed on one reader connection (one XREAD BLOCK over all of them).
    streams_per_reader: int = Field(default=256, ge=1)
    redis_backoff_initial_seconds: float = Field(default=0.1, gt=0)
    redis_backoff_max_seconds: float = Field(default=5.0, gt=0)
    # A reader outlives its last subscriber briefly so that a page reload does not churn it.
    reader_linger_seconds: float = Field(default=5.0, ge=0)
    # Redis connections idle this long are closed: reader connections without streams and the
    # pool's spare ones (left over from bursts of subscribes), so their number follows activity.
    redis_idle_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)

    # Event history (docs/history.md): the archiver's PostgreSQL, read-only here. Unset: the
    # history endpoints answer 503 "history not configured". A Secret file in a cluster.
    postgres_dsn: SecretStr | None = None
    postgres_dsn_file: Path | None = None
    history_pool_size: int = Field(default=4, ge=1)
    history_max_limit: int = Field(default=1000, ge=1)
    history_statement_timeout_ms: int = Field(default=2000, ge=10)
    # Playback (docs/recording.md): the store the ingests record into, as browsers reach it,
    # and read-only credentials to sign GETs with. Unset: /recordings answers 503.
    recording_store_url: str | None = Field(default=None, description="s3://bucket[/prefix]")
    recording_s3_public_endpoint: str | None = None
    recording_s3_region: str = "us-east-1"
    recording_s3_access_key_id: SecretStr | None = None
    recording_s3_secret_access_key: SecretStr | None = None
    recording_s3_secret_access_key_file: Path | None = None
    recording_url_ttl_seconds: int = Field(default=300, ge=10, le=3600)
    # A camera whose last event is older than this shows "overlays stale" (AI path health).
    overlay_stale_seconds: float = Field(default=30.0, gt=0)

    @property
    def livekit_server_url(self) -> str:
        url = self.livekit_api_url or self.livekit_url
        return "http" + url[2:] if url.startswith(("ws://", "wss://")) else url

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("auth_modes", "proxy_cidrs"):
                value = data.get(key)
                if isinstance(value, str):
                    data[key] = [v.strip() for v in value.split(",") if v.strip()]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.auth_modes:
            raise ValueError("auth_modes must name at least one authenticator")
        if AuthMode.STATIC in self.auth_modes and not self.static_token:
            raise ValueError("auth mode 'static' needs CAMFLEET_GATEWAY_STATIC_TOKEN")
        if AuthMode.PROXY in self.auth_modes and not self.proxy_cidrs:
            raise ValueError("auth mode 'proxy' needs CAMFLEET_GATEWAY_PROXY_CIDRS")
        if AuthMode.KUBERNETES in self.auth_modes and not self.kube_enabled:
            raise ValueError("auth mode 'kubernetes' needs the Kubernetes API (kube_enabled)")
        if self.send_queue_size < self.max_subscriptions:
            # Latest-wins keeps one event per camera, so the queue must hold one per camera.
            raise ValueError("send_queue_size must be >= max_subscriptions")
        if (self.livekit_api_key is None) != (self.livekit_api_secret is None):
            raise ValueError("set both livekit_api_key and livekit_api_secret, or neither")
        HttpUrl(self.livekit_url.replace("ws", "http", 1))  # refuse garbage early
        if self.postgres_dsn is not None and self.postgres_dsn_file is not None:
            raise ValueError("set postgres_dsn_file or postgres_dsn, not both")
        return self
