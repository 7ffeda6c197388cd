"""The event contract: what is accepted, what is refused, and the checked-in JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from camfleet.events import (
    ATTRIBUTES_MAX_BYTES,
    DEFAULT_RETENTION,
    EVENT_MAX_BYTES,
    STREAM_FIELD,
    CameraRef,
    Event,
    main,
    parse_camera,
    render_json_schema,
    stream_key,
)

ROOT = Path(__file__).resolve().parents[2]


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "camera": "shop/front-door",
        "ts": 1_764_000_000_123,
        "frame": 42,
        "source": "yolo11n",
        "objects": [{"id": "t1", "label": "person", "score": 0.93, "box": [0.1, 0.2, 0.3, 0.4]}],
    }
    base.update(overrides)
    return base


def box(b: list[float]) -> dict[str, Any]:
    return event(objects=[{"id": "t1", "label": "person", "score": 0.5, "box": b}])


def test_valid_event_round_trips_compactly() -> None:
    model = Event.model_validate(event())
    wire = model.to_json()
    assert wire.startswith(b'{"v":1,"camera":"shop/front-door"')
    assert b" " not in wire
    assert Event.model_validate_json(wire) == model
    assert model.camera_ref == CameraRef("shop", "front-door")


def test_optional_fields_are_left_out() -> None:
    model = Event.model_validate(event(frame=None, objects=[]))
    assert json.loads(model.to_json()) == {
        "v": 1,
        "camera": "shop/front-door",
        "ts": 1_764_000_000_123,
        "source": "yolo11n",
        "objects": [],
    }


@pytest.mark.parametrize(
    "bad",
    [
        event(v=2),
        event(camera="front-door"),
        event(camera="Shop/door"),
        event(camera="shop/door/extra"),
        event(ts=-1),
        event(ts="soon"),
        event(frame=-3),
        event(source=""),
        event(extra="field"),
        box([0.5, 0.5, 0.6, 0.1]),  # past the right edge
        box([0.1, 0.9, 0.1, 0.2]),  # past the bottom edge
        box([-0.1, 0.1, 0.1, 0.1]),
        box([0.1, 0.1, 0.0, 0.1]),  # zero width
        box([0.1, 0.1, 0.1, -0.1]),
        box([0.1, 0.1, 0.1]),
        event(objects=[{"id": "t", "label": "p", "score": 1.5, "box": [0, 0, 1, 1]}]),
        event(objects=[{"id": "t", "label": "p", "score": -0.1, "box": [0, 0, 1, 1]}]),
        event(attributes={"blob": "x" * ATTRIBUTES_MAX_BYTES}),
        event(
            objects=[
                {
                    "id": "t",
                    "label": "p",
                    "score": 0.5,
                    "box": [0, 0, 1, 1],
                    "attributes": {"blob": "x" * ATTRIBUTES_MAX_BYTES},
                }
            ]
        ),
    ],
)
def test_invalid_events_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Event.model_validate(bad)


def test_box_touching_the_edges_with_float_error_is_inside() -> None:
    Event.model_validate(box([0.3, 0.0, 0.7, 1.0]))  # 0.3 + 0.7 = 1.0000000000000002


def test_nan_is_not_json() -> None:
    raw = json.dumps(event(attributes={"x": float("nan")})).encode()
    with pytest.raises(ValidationError):
        Event.model_validate_json(raw)
    with pytest.raises(ValidationError):
        Event.model_validate_json(raw.replace(b"0.93", b"NaN"))


def test_whole_event_size_is_limited() -> None:
    many = [
        {
            "id": f"track-{i:04d}",
            "label": "person-with-a-long-label",
            "score": 0.5,
            "box": [0.1, 0.1, 0.1, 0.1],
            "attributes": {"note": "y" * 200},
        }
        for i in range(300)
    ]
    with pytest.raises(ValidationError, match=str(EVENT_MAX_BYTES)):
        Event.model_validate(event(objects=many))


def test_stream_key_and_camera_parsing() -> None:
    assert stream_key("shop/front-door") == "camfleet:events:shop/front-door"
    assert stream_key(CameraRef("a", "b.c")) == "camfleet:events:a/b.c"
    assert STREAM_FIELD == "e"
    assert DEFAULT_RETENTION == 6000
    assert parse_camera("ns/cam-1.x") == CameraRef("ns", "cam-1.x")
    for bad in ("", "ns", "ns/", "/cam", "NS/cam", "ns/cam/x", "ns/-cam", "a" * 64 + "/cam"):
        with pytest.raises(ValueError, match="invalid camera"):
            parse_camera(bad)


def test_checked_in_schema_matches_the_model() -> None:
    checked_in = (ROOT / "docs" / "events.schema.json").read_text(encoding="utf-8")
    assert checked_in == render_json_schema(), (
        "run: python -m camfleet.events --write docs/events.schema.json"
    )
    schema = json.loads(checked_in)
    assert schema["properties"]["v"]["const"] == 1
    assert set(schema["required"]) == {"camera", "ts", "source"}


def test_schema_cli_check_detects_a_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert main(["--write", str(target)]) == 0
    assert main(["--check", str(target)]) == 0
    target.write_text("{}\n", encoding="utf-8")
    assert main(["--check", str(target)]) == 1
