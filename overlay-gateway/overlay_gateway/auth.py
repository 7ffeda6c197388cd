"""Who is calling (authenticators) and which cameras they may view (authoriser).

Authenticators are tried in the configured order; the first that recognises the request wins:
- `KubernetesTokenAuthenticator`: `Authorization: Bearer <token>` (or, for browsers, which cannot
  set headers on a WebSocket, the `base64url.bearer.authorization.k8s.io.<token>` subprotocol
  that Kubernetes itself uses) checked with a TokenReview;
- `ProxyAuthenticator`: user/groups headers set by an auth proxy (oauth2-proxy…), believed only
  when the TCP peer is inside a configured proxy CIDR, ignored otherwise;
- `StaticTokenAuthenticator`: one shared token, for local use only (warned about at start-up);
  it bypasses per-camera authorisation.

Authorisation per camera: a SubjectAccessReview for `get` on `cameras/view` (group
camfleet.io) in the camera's namespace, OR membership of one of the Camera's
`spec.access.groups`. Decisions are cached briefly (denials for less long).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, Final, Generic, Protocol, TypeVar

import aiohttp

from camfleet.events import CameraRef
from overlay_gateway.kube import KubeClient, KubeError
from overlay_gateway.metrics import Metrics

log = logging.getLogger(__name__)

WS_BEARER_PREFIX: Final = "base64url.bearer.authorization.k8s.io."
STATIC_USER: Final = "camfleet:static-token"
_MAX_CACHE: Final = 10_000

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Identity:
    user: str
    groups: frozenset[str] = frozenset()
    uid: str | None = None
    via: str = ""
    # Only the static token: local development, no per-camera checks.
    superuser: bool = False


@dataclass(frozen=True)
class RequestInfo:
    """The parts of an HTTP request authenticators look at (header names lower-case)."""

    headers: Mapping[str, str]
    remote: str | None


class AuthUnavailable(Exception):
    """The Kubernetes API could not be asked; callers answer 503 / `unavailable`."""


class Authenticator(Protocol):
    name: str

    async def authenticate(self, request: RequestInfo) -> Identity | None: ...


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The bearer token from `Authorization` or from the Kubernetes WebSocket subprotocol."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for proto in websocket_protocols(headers):
        if proto.startswith(WS_BEARER_PREFIX):
            encoded = proto[len(WS_BEARER_PREFIX) :]
            try:
                decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return decoded.decode("utf-8").strip() or None
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


def websocket_protocols(headers: Mapping[str, str]) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def parse_groups(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(g.strip() for g in value.split(",") if g.strip())


def remote_in(remote: str | None, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    if not remote:
        return False
    try:
        addr = ip_address(remote)
    except ValueError:
        return False
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


class _TTLCache(Generic[K, V]):
    def __init__(self) -> None:
        self._data: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> tuple[bool, V | None]:
        hit = self._data.get(key)
        if hit is None:
            return False, None
        expires, value = hit
        if expires < time.monotonic():
            del self._data[key]
            return False, None
        return True, value

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        if len(self._data) >= _MAX_CACHE:
            # Crude but bounded: a flood of distinct tokens cannot grow memory without limit.
            self._data.clear()
        self._data[key] = (time.monotonic() + ttl, value)


class StaticTokenAuthenticator:
    name = "static"

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def authenticate(self, request: RequestInfo) -> Identity | None:
        token = bearer_token(request.headers)
        if token is None or not hmac.compare_digest(token.encode(), self._token):
            return None
        return Identity(
            STATIC_USER, frozenset({"system:authenticated"}), via=self.name, superuser=True
        )


class ProxyAuthenticator:
    name = "proxy"

    def __init__(
        self,
        cidrs: Sequence[IPv4Network | IPv6Network],
        user_header: str = "X-Forwarded-User",
        groups_header: str = "X-Forwarded-Groups",
    ) -> None:
        self._cidrs = list(cidrs)
        self._user = user_header.lower()
        self._groups = groups_header.lower()

    async def authenticate(self, request: RequestInfo) -> Identity | None:
        user = request.headers.get(self._user, "").strip()
        if not user:
            return None
        if not remote_in(request.remote, self._cidrs):
            # Anyone can send these headers; only the proxy's word counts.
            log.warning(
                "ignoring identity headers from untrusted peer", extra={"remote": request.remote}
            )
            return None
        return Identity(user, parse_groups(request.headers.get(self._groups)), via=self.name)


class KubernetesTokenAuthenticator:
    name = "kubernetes"

    def __init__(self, kube: KubeClient, cache_seconds: float = 10.0) -> None:
        self._kube = kube
        self._ttl = cache_seconds
        # Keyed by a hash so that raw tokens are not kept in memory longer than a request.
        self._cache: _TTLCache[bytes, Identity | None] = _TTLCache()

    async def authenticate(self, request: RequestInfo) -> Identity | None:
        token = bearer_token(request.headers)
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        hit, cached = self._cache.get(digest)
        if hit:
            return cached
        try:
            status = await self._kube.token_review(token)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            raise AuthUnavailable("token review failed") from exc
        identity: Identity | None = None
        if status.get("authenticated"):
            user = status.get("user", {})
            identity = Identity(
                user.get("username", ""),
                frozenset(user.get("groups", [])),
                uid=user.get("uid"),
                via=self.name,
            )
        self._cache.put(digest, identity, self._ttl)
        return identity


async def authenticate(
    authenticators: Iterable[Authenticator], request: RequestInfo
) -> Identity | None:
    for authenticator in authenticators:
        identity = await authenticator.authenticate(request)
        if identity is not None and identity.user:
            return identity
    return None


class Decision(StrEnum):
    ALLOWED = "allowed"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"


@dataclass
class Authorizer:
    kube: KubeClient | None
    metrics: Metrics
    allow_seconds: float = 10.0
    deny_seconds: float = 2.0
    # A name that is not a Camera costs one lookup per this many seconds, whoever asks.
    not_found_seconds: float = 5.0
    _decisions: _TTLCache[tuple[str, frozenset[str], str], Decision] = field(
        default_factory=_TTLCache
    )
    _cameras: _TTLCache[str, dict[str, Any] | None] = field(default_factory=_TTLCache)

    async def camera(self, ref: CameraRef) -> dict[str, Any] | None:
        """The Camera object (cached briefly), None if absent or without a Kubernetes API."""
        if self.kube is None:
            return None
        key = str(ref)
        hit, obj = self._cameras.get(key)
        if hit:
            return obj
        try:
            obj = await self.kube.get_camera(ref.namespace, ref.name)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            raise AuthUnavailable("camera lookup failed") from exc
        self.metrics.camera_lookups.labels("found" if obj is not None else "not_found").inc()
        ttl = min(self.allow_seconds, 5.0) if obj is not None else self.not_found_seconds
        self._cameras.put(key, obj, ttl)
        return obj

    async def check(self, identity: Identity, ref: CameraRef) -> Decision:
        key = (identity.user, identity.groups, str(ref))
        hit, cached = self._decisions.get(key)
        if hit and cached is not None:
            self.metrics.authz_decisions.labels(cached.value, "true").inc()
            return cached
        decision = await self._decide(identity, ref)
        ttl = self.allow_seconds if decision is Decision.ALLOWED else self.deny_seconds
        self._decisions.put(key, decision, ttl)
        self.metrics.authz_decisions.labels(decision.value, "false").inc()
        return decision

    async def _decide(self, identity: Identity, ref: CameraRef) -> Decision:
        if identity.superuser:
            if self.kube is None:
                return Decision.ALLOWED
            return Decision.ALLOWED if await self.camera(ref) is not None else Decision.NOT_FOUND
        if self.kube is None:
            return Decision.FORBIDDEN
        try:
            allowed = await self.kube.can_view(
                identity.user, sorted(identity.groups), identity.uid, ref.namespace, ref.name
            )
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            raise AuthUnavailable("access review failed") from exc
        camera = await self.camera(ref)
        if camera is None:
            # Only someone allowed to view may learn that a camera does not exist.
            return Decision.NOT_FOUND if allowed else Decision.FORBIDDEN
        if allowed or identity.groups & access_groups(camera):
            return Decision.ALLOWED
        return Decision.FORBIDDEN

    async def viewable(self, identity: Identity) -> list[dict[str, Any]]:
        """Every Camera the caller may view."""
        if self.kube is None:
            return []
        try:
            cameras = await self.kube.list_cameras()
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            raise AuthUnavailable("camera list failed") from exc
        limit = asyncio.Semaphore(16)

        async def allowed(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            ref = CameraRef(meta.get("namespace", ""), meta.get("name", ""))
            self._cameras.put(str(ref), obj, min(self.allow_seconds, 5.0))
            async with limit:
                return await self.check(identity, ref) is Decision.ALLOWED

        verdicts = await asyncio.gather(*(allowed(obj) for obj in cameras))
        return [obj for obj, ok in zip(cameras, verdicts, strict=True) if ok]


def access_groups(camera: Mapping[str, Any]) -> frozenset[str]:
    groups = (camera.get("spec") or {}).get("access", {}) or {}
    value = groups.get("groups") if isinstance(groups, dict) else None
    return (
        frozenset(g for g in value if isinstance(g, str))
        if isinstance(value, list)
        else frozenset()
    )
