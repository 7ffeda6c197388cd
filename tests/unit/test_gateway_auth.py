"""Pure parts of authentication: header parsing, proxy trust, static token, settings."""

from __future__ import annotations

import base64
from ipaddress import ip_network

import pytest
from pydantic import ValidationError

from camfleet.events import CameraRef
from overlay_gateway.auth import (
    STATIC_USER,
    WS_BEARER_PREFIX,
    Authenticator,
    Identity,
    ProxyAuthenticator,
    RequestInfo,
    StaticTokenAuthenticator,
    access_groups,
    authenticate,
    bearer_token,
    parse_groups,
    remote_in,
)
from overlay_gateway.settings import AuthMode, Settings
from overlay_gateway.tokens import room_name


def ws_proto(token: str) -> str:
    return WS_BEARER_PREFIX + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def test_bearer_from_authorization_header() -> None:
    assert bearer_token({"authorization": "Bearer abc.def"}) == "abc.def"
    assert bearer_token({"authorization": "bearer  abc "}) == "abc"
    assert bearer_token({"authorization": "Basic Zm9vOmJhcg=="}) is None
    assert bearer_token({"authorization": "Bearer "}) is None
    assert bearer_token({}) is None


def test_bearer_from_websocket_subprotocol() -> None:
    headers = {"sec-websocket-protocol": f"camfleet.v1, {ws_proto('eyJhbGc.x-y_z')}"}
    assert bearer_token(headers) == "eyJhbGc.x-y_z"
    assert bearer_token({"sec-websocket-protocol": WS_BEARER_PREFIX + "!!!"}) is None
    assert bearer_token({"sec-websocket-protocol": "camfleet.v1"}) is None


def test_groups_and_cidrs() -> None:
    assert parse_groups(" ops, viewers ,,") == frozenset({"ops", "viewers"})
    assert parse_groups(None) == frozenset()
    nets = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]
    assert remote_in("10.1.2.3", nets)
    assert remote_in("::ffff:10.1.2.3", nets)  # IPv4-mapped, as dual-stack sockets report it
    assert remote_in("fd00::1", nets)
    assert not remote_in("192.168.1.1", nets)
    assert not remote_in(None, nets)
    assert not remote_in("not-an-ip", nets)


async def test_proxy_headers_only_count_from_the_proxy() -> None:
    auth = ProxyAuthenticator([ip_network("127.0.0.0/8")])
    headers = {"x-forwarded-user": "alice", "x-forwarded-groups": "ops,cam-viewers"}
    assert await auth.authenticate(RequestInfo(headers, "127.0.0.1")) == Identity(
        "alice", frozenset({"ops", "cam-viewers"}), via="proxy"
    )
    assert await auth.authenticate(RequestInfo(headers, "203.0.113.9")) is None
    assert await auth.authenticate(RequestInfo({}, "127.0.0.1")) is None


async def test_static_token_and_authenticator_chain() -> None:
    static = StaticTokenAuthenticator("s3cret")
    proxy = ProxyAuthenticator([ip_network("127.0.0.1/32")])
    chain: list[Authenticator] = [static, proxy]
    me = await authenticate(chain, RequestInfo({"authorization": "Bearer s3cret"}, "10.0.0.1"))
    assert me is not None
    assert me.user == STATIC_USER
    assert me.superuser
    assert (
        await authenticate(chain, RequestInfo({"authorization": "Bearer nope"}, "10.0.0.1")) is None
    )
    via_proxy = await authenticate(
        chain, RequestInfo({"authorization": "Bearer nope", "x-forwarded-user": "bob"}, "127.0.0.1")
    )
    assert via_proxy is not None
    assert via_proxy.user == "bob"
    assert not via_proxy.superuser


def test_access_groups_and_room_names() -> None:
    cam = {"spec": {"access": {"groups": ["ops", 3, "viewers"]}, "room": "lobby"}}
    assert access_groups(cam) == frozenset({"ops", "viewers"})
    assert access_groups({"spec": {}}) == frozenset()
    assert access_groups({"spec": {"access": {"groups": "ops"}}}) == frozenset()
    assert room_name(CameraRef("shop", "door"), cam) == "lobby"
    assert room_name(CameraRef("shop", "door"), {"spec": {}}) == "shop-door"
    assert room_name(CameraRef("shop", "door"), None) == "shop-door"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMFLEET_GATEWAY_AUTH_MODES", "proxy, static")
    monkeypatch.setenv("CAMFLEET_GATEWAY_PROXY_CIDRS", "10.0.0.0/8,127.0.0.1/32")
    monkeypatch.setenv("CAMFLEET_GATEWAY_STATIC_TOKEN", "zq-very-secret-42")
    monkeypatch.setenv("CAMFLEET_GATEWAY_KUBE_ENABLED", "false")
    s = Settings()
    assert s.auth_modes == [AuthMode.PROXY, AuthMode.STATIC]
    assert [str(n) for n in s.proxy_cidrs] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert "zq-very-secret-42" not in repr(s)  # secrets stay out of logs and reprs


@pytest.mark.parametrize(
    "kwargs",
    [
        {"auth_modes": ["static"]},  # no token
        {"auth_modes": ["proxy"]},  # no CIDRs
        {"auth_modes": ["kubernetes"], "kube_enabled": False},
        {"send_queue_size": 8, "max_subscriptions": 16},
        {"livekit_api_key": "k"},  # secret missing
    ],
)
def test_inconsistent_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)  # type: ignore[arg-type]
