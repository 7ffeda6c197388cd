"""The events fast path against the contract model: it never disagrees.

`fast_event_json` may answer "not sure" (None) and leave the decision to the model; whenever it
answers, the model accepts the same input and serialises it to the very same bytes. Inputs are
generated events (valid and nearly valid), the same as JSON text with mutations (bytes flipped,
cut, keys duplicated), and hand-picked edge cases. Plainly valid events must take the fast path,
or it would be correct and useless.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from camfleet.events import ATTRIBUTES_MAX_BYTES, Event, fast_event_json

# Values near every boundary the model checks, of the types JSON can carry.
_NUMBERS = st.one_of(
    st.sampled_from([0, 1, -1, 0.0, 1.0, -0.0, 0.5, 1.0000001, 1.0000000001, 1e-7, 2, True, False]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=-(2**70), max_value=2**70),
)
_TEXT = st.one_of(
    st.sampled_from(["", "a", "x" * 128, "x" * 129, "é" * 128, "\n", "\u2028", "\x7f", '"\\']),
    st.text(max_size=20),
)
_CAMERAS = st.one_of(
    st.sampled_from(["a/b", "shop/door", "a/b\n", "A/b", "a/-b", "a/b.c", "-a/b", "a/b/c", ""]),
    st.from_regex(r"[a-z0-9][-a-z0-9]{0,3}/[a-z0-9][-a-z0-9.]{0,4}", fullmatch=True),
)
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=12,
)
_ANY = st.one_of(_JSON, _NUMBERS, _TEXT, st.none())


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: usually plausible, sometimes anything JSON can carry."""
    return st.one_of(value, value, value, _ANY)


_BOX = st.lists(st.one_of(st.floats(min_value=0, max_value=1), _NUMBERS), min_size=3, max_size=5)
_OBJECT = st.fixed_dictionaries(
    {
        "id": _maybe(_TEXT),
        "label": _maybe(_TEXT),
        "score": _maybe(st.floats(min_value=0, max_value=1)),
        "box": _maybe(
            st.one_of(
                st.tuples(
                    st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0, 0.5)
                ).map(list),
                _BOX,
            )
        ),
    },
    optional={"attributes": _maybe(st.dictionaries(_TEXT, _JSON, max_size=4)), "extra": _ANY},
)
_EVENT = st.fixed_dictionaries(
    {"camera": _maybe(_CAMERAS), "ts": _maybe(st.integers(min_value=0, max_value=2**64))},
    optional={
        "v": _maybe(st.just(1)),
        "source": _maybe(_TEXT),
        "frame": _maybe(st.one_of(st.none(), st.integers(min_value=-1, max_value=2**63))),
        "objects": _maybe(st.lists(_OBJECT, max_size=3)),
        "attributes": _maybe(st.one_of(st.none(), st.dictionaries(_TEXT, _JSON, max_size=5))),
        "extra": _ANY,
    },
)


def _model(raw: bytes) -> bytes | None:
    try:
        return Event.model_validate_json(raw).to_json()
    except ValidationError:
        return None


def _agree(raw: bytes) -> None:
    fast = fast_event_json(raw)
    if fast is None:
        return  # the model decides, whatever it decides
    assert _model(raw) == fast.json, raw
    assert fast.doc == orjson.loads(fast.json), raw
    event = Event.model_validate_json(raw)
    assert (fast.camera, fast.ts) == (event.camera, event.ts)


def _encode(doc: Any) -> bytes:
    # json, not orjson: it writes what orjson refuses (big integers, NaN), as publishers might.
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_EVENT)
def test_generated_events(doc: dict[str, Any]) -> None:
    _agree(_encode(doc))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_EVENT, st.data())
def test_mutated_event_text(doc: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(_encode(doc))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[at : at + data.draw(st.integers(1, 8))]
        elif kind == "insert":
            raw[at:at] = data.draw(st.sampled_from([b",", b" ", b"\\", b'"', b"1", b"e", b"-"]))
        elif raw.startswith(b"{"):  # a duplicated key: the last one wins, in both
            raw[1:1] = b'"ts":1,"camera":"a/b",'
    _agree(bytes(raw))


@settings(max_examples=800, deadline=None)
@given(
    st.dictionaries(_TEXT, _JSON, max_size=6),
    st.dictionaries(st.text(min_size=1, max_size=5), _TEXT, max_size=3),
)
def test_valid_events_take_the_fast_path(
    attributes: dict[str, Any], obj_attr: dict[str, Any]
) -> None:
    doc = {
        "v": 1,
        "camera": "shop/door",
        "ts": 1764000000000,
        "source": "yolo",
        "objects": [
            {"id": "t1", "label": "person", "score": 0.87, "box": [0.1, 0.1, 0.3, 0.2]},
            {"id": "t2", "label": "car", "score": 1, "box": [0, 0, 1, 1], "attributes": obj_attr},
        ],
        "attributes": attributes,
    }
    raw = _encode(doc)
    expected = _model(raw)
    fast = fast_event_json(raw)
    if expected is None:
        assert fast is None
        return
    # Only unusual shapes are left to the model: deep nesting, numbers beyond 64 bits, or what
    # orjson cannot read.
    if _depth(attributes) <= 6 and not _huge(attributes) and _orjson_reads(raw):
        assert fast is not None, raw
        assert fast.json == expected


def test_integers_beyond_64_bits_are_left_to_the_model() -> None:
    # orjson reads them as floats; the model keeps them exact (found by the test above).
    for n in (-(2**63) - 1, 2**64, 2**70):
        raw = b'{"camera":"a/b","ts":1,"source":"s","attributes":{"n":%d}}' % n
        assert fast_event_json(raw) is None
        assert _model(raw) is not None


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _huge(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_huge(v) for v in value.values())
    if isinstance(value, list):
        return any(_huge(v) for v in value)
    return isinstance(value, int | float) and abs(value) >= 2**63


def _orjson_reads(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


_BENCH_EVENT = (
    b'{"v":1,"camera":"bench/cam00","ts":1764000000000,"frame":1,"source":"bench",'
    b'"objects":[{"id":"t1","label":"person","score":0.87,"box":[0.112,0.084,0.301,0.277]}],'
    b'"attributes":{"zone":"entrance-north","pad":"' + b"x" * 150 + b'"}}'
)


@pytest.mark.parametrize(
    "raw",
    [
        _BENCH_EVENT,
        b'{"camera":"a/b","ts":1,"source":"s"}',
        b'{"camera":"a/b","ts":1,"source":"s","frame":null,"attributes":null}',
        b'{"camera":"a/b","ts":1,"source":"s","attributes":{"x":null,"y":[1e-7,1e16,-0.0]}}',
        b'{"camera":"a/b","ts":1,"source":"s","objects":[{"id":"i","label":"l","score":1,'
        b'"box":[0,0,1,1]}]}',
        b'{"camera":"a/b","ts":1,"source":"s","objects":[{"id":"i","label":"l","score":0.5,'
        b'"box":[0.3,0.3,0.7000001,0.7]}]}',
        b'{"camera":"a/b","ts":1,"source":"s","attributes":{"s":"\\u0001\\n\\t\\"\\\\/\xc3\xa9"}}',
        b' {"camera" : "a/b", "ts" : 1, "source" : "s"} ',
    ],
)
def test_plain_events_are_taken_and_equal(raw: bytes) -> None:
    fast = fast_event_json(raw)
    assert fast is not None
    assert fast.json == _model(raw)


@example(b'{"camera":"a/b","ts":1,"source":"s","attributes":{"a":"' + b"x" * 4090 + b'"}}')
@example(b'{"camera":"a/b","ts":1,"source":"s","attributes":{"a":"' + b"x" * 4091 + b'"}}')
@example(b'{"camera":"a/b","ts":1,"source":"s","attributes":{"a":1.5,"b":"' + b"x" * 4080 + b'"}}')
@example(b'{"camera":"a/b","ts":1,"source":"s","attributes":{"a":1e-7,"b":"' + b"x" * 4080 + b'"}}')
@example(b'{"camera":"a/b","ts":1,"source":"s","attributes":{"a":' + b"[" * 30 + b"]" * 30 + b"}}")
@example(b'{"camera":"a/b","ts":1,"source":"s","attributes":{"a":"\\ud800"}}')
@example(b'{"camera":"a/b","ts":1,"source":"s","attributes":{"a":1e400}}')
@example(b'{"camera":"a/b","ts":1,"source":"s","ts":-1}')
@example(b'{"camera":"a/b","ts":true,"source":"s"}')
@example(b'{"camera":"a/b","ts":1.0,"source":"s"}')
@example(b'{"camera":"a/b","ts":"1","source":"s"}')
@example(b'{"v":1.0,"camera":"a/b","ts":1,"source":"s"}')
@example(b'{"camera":"a/b\\n","ts":1,"source":"s"}')
@example(
    b'{"camera":"a/b","ts":1,"source":"s","objects":[{"id":"i","label":"l","score":true,'
    b'"box":[0,0,1,1]}]}'
)
@example(
    b'{"camera":"a/b","ts":1,"source":"s","objects":' + b'[{"id":"i","label":"l","score":1,'
    b'"box":[0,0,1,1]},' * 1000 + b'{"id":"i","label":"l","score":1,"box":[0,0,1,1]}]}'
)
@example(b"[]")
@example(b"null")
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_edge_cases_and_noise(raw: bytes) -> None:
    _agree(raw)


def test_limits_match_the_model() -> None:
    assert ATTRIBUTES_MAX_BYTES == 4096  # the examples above are written around it
