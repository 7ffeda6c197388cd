"""The /ws message formats: parsing client messages, building server messages once."""

from __future__ import annotations

import json

import pytest

from overlay_gateway.broker import classify_entry
from overlay_gateway.protocol import (
    ErrorCode,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    error_message,
    event_message,
    parse_client_message,
    status_message,
)


def test_client_messages() -> None:
    sub = parse_client_message('{"type":"subscribe","cameras":["a/b"],"since":{"a/b":"12-0"}}')
    assert sub == Subscribe(type="subscribe", cameras=["a/b"], since={"a/b": "12-0"})
    assert parse_client_message(b'{"type":"ping"}') == Ping(type="ping")
    assert isinstance(parse_client_message('{"type":"unsubscribe","cameras":["a/b"]}'), Unsubscribe)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", ErrorCode.BAD_REQUEST),
        ('{"type":"dance"}', ErrorCode.UNKNOWN_TYPE),
        ('{"cameras":["a/b"]}', ErrorCode.BAD_REQUEST),
        ('{"type":"subscribe","cameras":[]}', ErrorCode.BAD_REQUEST),
        (
            '{"type":"subscribe","cameras":["a/b"],"since":{"a/b":"yesterday"}}',
            ErrorCode.BAD_REQUEST,
        ),
        ('{"type":"ping","extra":1}', ErrorCode.BAD_REQUEST),
    ],
)
def test_bad_client_messages(raw: str, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw)
    assert info.value.code is code


def test_server_messages_are_valid_json() -> None:
    event = b'{"v":1,"camera":"a/b","ts":1,"source":"s","objects":[]}'
    msg = json.loads(event_message("a/b", "5-1", event))
    assert msg == {"type": "event", "camera": "a/b", "id": "5-1", "event": json.loads(event)}
    assert json.loads(error_message(ErrorCode.FORBIDDEN, "no", "a/b")) == {
        "type": "error",
        "code": "forbidden",
        "message": "no",
        "camera": "a/b",
    }
    assert json.loads(status_message("a/b", "degraded"))["state"] == "degraded"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "missing_field"),
        ({b"e": b"{not json"}, "not_json"),
        ({b"e": b'{"v":2,"camera":"a/b","ts":1,"source":"s"}'}, "version"),
        (
            {
                b"e": b'{"v":1,"camera":"a/b","ts":1,"source":"s","objects":[{"id":"1","label":"p",'
                b'"score":0.5,"box":[0.9,0.9,0.5,0.5]}]}'
            },
            "schema",
        ),
        ({b"e": b'{"v":1,"camera":"x/y","ts":1,"source":"s"}'}, "camera_mismatch"),
        ({b"e": b"x" * (10 * 1024 * 1024)}, "too_large"),
    ],
)
def test_stream_entries_are_classified(fields: dict[bytes, bytes], reason: str) -> None:
    assert classify_entry("a/b", fields) == (None, reason)


def test_valid_stream_entry() -> None:
    event, reason = classify_entry("a/b", {b"e": b'{"v":1,"camera":"a/b","ts":1,"source":"s"}'})
    assert reason == ""
    assert event is not None
    assert event.ts == 1
