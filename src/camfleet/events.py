"""The AI event contract shared by the publisher SDK (`camfleet.ai`) and the overlay gateway.

One event is what one AI worker saw on one video frame of one camera. Version 1 on the wire:

    {"v": 1, "camera": "<namespace>/<name>", "ts": <capture time, ms since epoch>,
     "frame": <optional int>, "source": "<model or worker id>",
     "objects": [{"id": "<track id>", "label": "person", "score": 0.93, "box": [x, y, w, h]}],
     "attributes": {...optional, small...}}

Boxes are normalised to 0..1 of the frame. Events travel through one Redis Stream per camera
(`stream_key`), field `e` (`STREAM_FIELD`) holding the JSON.

This module is pure (no Redis, Kubernetes or LiveKit imports, enforced by import-linter) so
that every process can depend on it cheaply. Run `python -m camfleet.events --write PATH` to
export the JSON Schema (CI compares `docs/events.schema.json` with the model).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "ATTRIBUTES_MAX_BYTES",
    "DEFAULT_RETENTION",
    "EVENT_MAX_BYTES",
    "SCHEMA_VERSION",
    "STREAM_FIELD",
    "STREAM_PREFIX",
    "CameraRef",
    "DetectedObject",
    "Event",
    "FastEvent",
    "ValidationError",
    "classify_entry",
    "fast_event_json",
    "json_schema",
    "main",
    "parse_camera",
    "render_json_schema",
    "stream_key",
]

SCHEMA_VERSION: Final = 1
STREAM_PREFIX: Final = "camfleet:events:"
STREAM_FIELD: Final = "e"
_FIELD: Final = STREAM_FIELD.encode()
# MAXLEN ~ of every camera's stream. The archiver reads behind it (docs/history.md): 6,000
# entries are 10 minutes at 10 events/s, the archiver outage a camera survives without losing
# an event (at 30 events/s, 3.3 minutes). A reconnecting browser replays at most the gateway's
# REPLAY_MAX_EVENTS of them.
DEFAULT_RETENTION: Final = 6000
# Attributes are for small per-event hints (zone name, model version); anything bigger belongs
# in another store, not in a stream every viewer receives.
ATTRIBUTES_MAX_BYTES: Final = 4096
# A whole serialised event. The gateway refuses bigger stream entries before parsing them.
EVENT_MAX_BYTES: Final = 64 * 1024
MAX_OBJECTS: Final = 1000
# Float rounding in workers (e.g. x=0.3, w=0.7 → 1.0000000000000002) must not void a box.
_BOX_EPSILON: Final = 1e-6

# A Kubernetes namespace is a DNS-1123 label; a Camera name a DNS-1123 subdomain.
_NAMESPACE = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_NAME = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
CAMERA_PATTERN: Final = rf"^{_NAMESPACE}/{_NAME}$"
_CAMERA_RE: Final = re.compile(CAMERA_PATTERN)

CameraStr = Annotated[str, StringConstraints(pattern=CAMERA_PATTERN, max_length=317)]
ShortStr = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Coord = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Box = tuple[Coord, Coord, Coord, Coord]
Attributes = dict[str, JsonValue]


class CameraRef(NamedTuple):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_camera(camera: str) -> CameraRef:
    """Split `"<namespace>/<name>"`, refusing anything that is not a valid Camera reference."""
    if not isinstance(camera, str) or len(camera) > 317 or not _CAMERA_RE.match(camera):
        raise ValueError(f"invalid camera reference {camera!r}: expected '<namespace>/<name>'")
    namespace, name = camera.split("/", 1)
    return CameraRef(namespace, name)


def stream_key(camera: str | CameraRef) -> str:
    """The Redis Stream key of a camera: `camfleet:events:<namespace>/<name>`."""
    ref = parse_camera(camera) if isinstance(camera, str) else camera
    return f"{STREAM_PREFIX}{ref.namespace}/{ref.name}"


def _check_attributes_size(value: Attributes | None) -> Attributes | None:
    if value is not None:
        # allow_nan=False: NaN/Infinity are not JSON and would break the browser's JSON.parse.
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode())
        if size > ATTRIBUTES_MAX_BYTES:
            raise ValueError(f"attributes take {size} bytes, limit {ATTRIBUTES_MAX_BYTES}")
    return value


class DetectedObject(BaseModel):
    """One detection: a tracked object with a label, a confidence and a normalised box."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: ShortStr = Field(description="Track id, stable across frames for the same object.")
    label: ShortStr = Field(description="Class label, e.g. 'person'.")
    score: Score = Field(description="Confidence, 0..1.")
    box: Box = Field(
        description="[x, y, w, h] normalised to 0..1 of the frame; inside the frame, w and h > 0."
    )
    attributes: Attributes | None = Field(
        default=None,
        description=f"Free-form, at most {ATTRIBUTES_MAX_BYTES} bytes as compact JSON.",
    )

    @field_validator("box")
    @classmethod
    def _box_inside_frame(cls, box: Box) -> Box:
        x, y, w, h = box
        if w <= 0 or h <= 0:
            raise ValueError("box width and height must be > 0")
        if x + w > 1 + _BOX_EPSILON or y + h > 1 + _BOX_EPSILON:
            raise ValueError("box must lie inside the frame (x + w <= 1, y + h <= 1)")
        return box

    @field_validator("attributes")
    @classmethod
    def _attributes_size(cls, value: Attributes | None) -> Attributes | None:
        return _check_attributes_size(value)


class Event(BaseModel):
    """What one AI worker detected on one frame of one camera (contract version 1)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        title="CamfleetEvent",
        json_schema_extra={"$id": "https://camfleet.io/schemas/events.v1.json"},
    )

    v: Literal[1] = Field(default=1, description="Contract version.")
    camera: CameraStr = Field(description="'<namespace>/<name>' of the Camera resource.")
    ts: int = Field(
        ge=0,
        description="Capture time of the frame, ms since the epoch (LiveKit user_timestamp/1000).",
    )
    frame: int | None = Field(
        default=None, ge=0, description="LiveKit frame_id of the frame the boxes belong to."
    )
    source: ShortStr = Field(description="Model or worker id that produced the event.")
    objects: list[DetectedObject] = Field(default_factory=list, max_length=MAX_OBJECTS)
    attributes: Attributes | None = Field(
        default=None,
        description=f"Free-form, at most {ATTRIBUTES_MAX_BYTES} bytes as compact JSON.",
    )

    @field_validator("attributes")
    @classmethod
    def _attributes_size(cls, value: Attributes | None) -> Attributes | None:
        return _check_attributes_size(value)

    @model_validator(mode="after")
    def _total_size(self) -> Event:
        # Checked on the model too, so the SDK refuses what the gateway would drop.
        size = len(self.to_json())
        if size > EVENT_MAX_BYTES:
            raise ValueError(f"event takes {size} bytes, limit {EVENT_MAX_BYTES}")
        return self

    @property
    def camera_ref(self) -> CameraRef:
        return parse_camera(self.camera)

    def to_json(self) -> bytes:
        """Compact wire form; optional fields left out when unset."""
        return self.model_dump_json(exclude_none=True).encode()


# --- the fast path ---------------------------------------------------------------------------
# Validating with the model costs ~15-20 µs per event in pydantic (plus ~5 µs to serialise it
# again), most of the gateway's work per event at low fan-out. `fast_event_json` checks the
# shapes well-behaved publishers send with orjson and plain comparisons, and answers "not sure"
# (None) for everything else, which then goes to the model. It never accepts what the model
# refuses and, when it accepts, returns exactly `Event.model_validate_json(raw).to_json()`:
# tests/unit/test_events_fast_path.py checks both with generated and mutated events.

_EVENT_KEYS: Final = frozenset(("v", "camera", "ts", "frame", "source", "objects", "attributes"))
_OBJECT_KEYS: Final = frozenset(("id", "label", "score", "box", "attributes"))
# Deeper attribute values go to the model (whose JSON parser limits nesting on its own terms).
_FAST_ATTRIBUTE_DEPTH: Final = 8
_INT64: Final = 2.0**63
# Valid Camera references, as the model's (Rust) regex reads its pattern: "$" is the very end.
_CAMERA_FULL_RE: Final = re.compile(f"{_NAMESPACE}/{_NAME}")


class FastEvent(NamedTuple):
    """A valid event: its canonical JSON, the fields callers need, and the same content parsed
    (`orjson.loads(json)`, for readers that store it rather than relay it)."""

    json: bytes
    camera: str
    ts: int
    doc: dict[str, Any]


def _plain_json(value: Any, depth: int) -> int:
    """0: JSON from orjson, shallow enough that the model parses it alike; 1: the same, with
    floats in it; -1: too deep for the fast path."""
    kind = type(value)
    if kind is float:
        # orjson reads integers beyond 64 bits as floats, the model as integers: leave it those.
        return 1 if -_INT64 < value < _INT64 else -1
    if kind is not dict and kind is not list:
        return 0
    if depth == 0:
        return -1
    found = 0
    items = value.values() if kind is dict else value
    for item in items:
        inner = _plain_json(item, depth - 1)
        if inner < 0:
            return -1
        found |= inner
    return found


def _fast_attributes(value: Any) -> bool:
    if type(value) is not dict:
        return False
    plain = _plain_json(value, _FAST_ATTRIBUTE_DEPTH)
    if plain < 0:
        return False
    if plain == 0:
        # Without floats, orjson's compact UTF-8 is byte for byte what the model measures
        # (json.dumps, compact, ensure_ascii=False): same escapes, same integers.
        return len(orjson.dumps(value)) <= ATTRIBUTES_MAX_BYTES
    try:  # floats: Python's repr and orjson's may differ in length ("1e-07" / "1e-7")
        _check_attributes_size(value)
    except ValueError:  # too big
        return False
    return True


def _unit(value: Any) -> float | None:
    kind = type(value)
    if kind is float or kind is int:
        number = float(value)
        if 0.0 <= number <= 1.0:
            return number
    return None


def _fast_object(obj: Any) -> dict[str, Any] | None:
    if type(obj) is not dict or not obj.keys() <= _OBJECT_KEYS:
        return None
    ident, label = obj.get("id"), obj.get("label")
    if type(ident) is not str or not 0 < len(ident) <= 128:
        return None
    if type(label) is not str or not 0 < len(label) <= 128:
        return None
    score = _unit(obj.get("score"))
    box = obj.get("box")
    if score is None or type(box) is not list or len(box) != 4:
        return None
    x, y, w, h = (_unit(c) for c in box)
    if x is None or y is None or w is None or h is None:
        return None
    if w <= 0 or h <= 0 or x + w > 1 + _BOX_EPSILON or y + h > 1 + _BOX_EPSILON:
        return None
    out: dict[str, Any] = {"id": ident, "label": label, "score": score, "box": [x, y, w, h]}
    attributes = obj.get("attributes")
    if attributes is not None:
        if not _fast_attributes(attributes):
            return None
        out["attributes"] = attributes
    return out


def fast_event_json(raw: bytes | str) -> FastEvent | None:
    """The event in `raw` if it is plainly valid; None when only the model can tell."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not doc.keys() <= _EVENT_KEYS:
        return None
    v = doc.get("v", 1)
    camera, ts, source = doc.get("camera"), doc.get("ts"), doc.get("source")
    if type(v) is not int or v != 1:
        return None
    if type(camera) is not str or len(camera) > 317 or not _CAMERA_FULL_RE.fullmatch(camera):
        return None
    if type(ts) is not int or ts < 0:
        return None
    if type(source) is not str or not 0 < len(source) <= 128:
        return None
    out: dict[str, Any] = {"v": 1, "camera": camera, "ts": ts}
    frame = doc.get("frame")
    if frame is not None:
        if type(frame) is not int or frame < 0:
            return None
        out["frame"] = frame
    out["source"] = source
    objects = doc.get("objects", ())
    if type(objects) is not list and objects != ():
        return None
    if len(objects) > MAX_OBJECTS:
        return None
    checked: list[dict[str, Any]] = []
    for obj in objects:
        fast = _fast_object(obj)
        if fast is None:
            return None
        checked.append(fast)
    out["objects"] = checked
    attributes = doc.get("attributes")
    if attributes is not None:
        if not _fast_attributes(attributes):
            return None
        out["attributes"] = attributes
    encoded = orjson.dumps(out)
    if len(encoded) > EVENT_MAX_BYTES:
        return None
    return FastEvent(encoded, camera, ts, out)


def classify_entry(camera: str, fields: Mapping[bytes, bytes]) -> tuple[FastEvent | None, str]:
    """Validate one entry of `camera`'s stream: (event, "") or (None, why it is invalid).

    The one check every reader of the streams applies (the gateway, the archiver), so that an
    entry one of them drops the other drops too, for the same reason (a metric label).
    """
    raw = fields.get(_FIELD)
    if raw is None:
        return None, "missing_field"
    if len(raw) > EVENT_MAX_BYTES:
        # Refused before parsing: a 10 MB entry must not cost a 10 MB parse.
        return None, "too_large"
    # Plainly valid events take the fast path; the model decides (and names why) for the rest.
    event = fast_event_json(raw)
    if event is None:
        try:
            model = Event.model_validate_json(raw)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if errors and errors[0]["type"] == "json_invalid":
                return None, "not_json"
            if errors and errors[0]["loc"] == ("v",):
                return None, "version"
            return None, "schema"
        encoded = model.to_json()
        event = FastEvent(encoded, model.camera, model.ts, orjson.loads(encoded))
    if event.camera != camera:
        return None, "camera_mismatch"
    return event, ""


def json_schema() -> dict[str, Any]:
    schema = Event.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render_json_schema() -> str:
    """The schema exactly as checked in: sorted keys, two-space indent, final newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m camfleet.events", description="Export the event JSON Schema."
    )
    parser.add_argument("--write", type=Path, help="write to this file instead of stdout")
    parser.add_argument(
        "--check", type=Path, help="exit 1 if this file differs from the model's schema"
    )
    args = parser.parse_args(argv)
    text = render_json_schema()
    if args.check is not None:
        if args.check.read_text(encoding="utf-8") != text:
            print(f"{args.check} is stale: run python -m camfleet.events --write {args.check}")
            return 1
        return 0
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
