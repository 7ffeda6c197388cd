"""The CRD YAML and the pydantic model describe the same Camera, field by field.

The walk compares names, types, enums, defaults, required fields and numeric/length bounds in
both directions, so a field added to only one side fails here rather than in a cluster.
"""

import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from camfleet import camera as constants
from camfleet.camera import CameraSpec, CameraStatus

CRD_PATH = Path(__file__).parents[2] / "crds" / "camera.yaml"


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def version_schema() -> dict[str, Any]:
    (version,) = load_crd()["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return typing.Union[tuple(args)]  # noqa: UP007 - rebuilds a runtime union
    return annotation


def compare(path: str, annotation: Any, schema: dict[str, Any], errors: list[str]) -> None:
    annotation = strip_optional(annotation)
    while get_origin(annotation) is typing.Annotated:  # validators, e.g. camera.ProcessString
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        compare_model(path, annotation, schema, errors)
    elif origin is Literal:
        if schema.get("type") != "string":
            errors.append(f"{path}: CRD type {schema.get('type')!r}, model Literal (string)")
        if sorted(get_args(annotation)) != sorted(schema.get("enum", [])):
            errors.append(f"{path}: enum CRD {schema.get('enum')} != model {get_args(annotation)}")
    elif origin is tuple:
        if schema.get("type") != "array":
            errors.append(f"{path}: CRD type {schema.get('type')!r}, model tuple (array)")
        else:
            compare(f"{path}[]", get_args(annotation)[0], schema["items"], errors)
    elif origin is dict:
        if schema.get("type") != "object" or "additionalProperties" not in schema:
            errors.append(f"{path}: CRD is not a map (object with additionalProperties)")
        else:
            compare(f"{path}{{}}", get_args(annotation)[1], schema["additionalProperties"], errors)
    elif get_origin(annotation) in (Union, types.UnionType):
        if set(get_args(annotation)) != {int, str} or not schema.get("x-kubernetes-int-or-string"):
            errors.append(f"{path}: unions are only modelled as int-or-string")
    else:
        expected = {str: "string", int: "integer", bool: "boolean", float: "number"}[annotation]
        if schema.get("type") != expected:
            errors.append(f"{path}: CRD type {schema.get('type')!r}, model {expected!r}")


def compare_bounds(path: str, field: FieldInfo, schema: dict[str, Any], errors: list[str]) -> None:
    model_bounds: dict[str, Any] = {}
    for meta in field.metadata:
        if isinstance(meta, annotated_types.MinLen):
            model_bounds["minLength"] = meta.min_length
        elif isinstance(meta, annotated_types.MaxLen):
            model_bounds["maxLength"] = meta.max_length
        elif isinstance(meta, annotated_types.Ge):
            model_bounds["minimum"] = meta.ge
        elif isinstance(meta, annotated_types.Le):
            model_bounds["maximum"] = meta.le
    crd_bounds = {
        k: schema[k] for k in ("minLength", "maxLength", "minimum", "maximum") if k in schema
    }
    if model_bounds != crd_bounds:
        errors.append(f"{path}: bounds CRD {crd_bounds} != model {model_bounds}")


def compare_default(path: str, field: FieldInfo, schema: dict[str, Any], errors: list[str]) -> None:
    default = field.default
    if default is PydanticUndefined or default is None:
        if "default" in schema:
            errors.append(f"{path}: CRD default {schema['default']!r}, model has none")
        return
    if isinstance(default, BaseModel):
        # A nested object defaults to {} in the CRD so the API server fills its own defaults.
        if default.model_dump(exclude_defaults=True) or schema.get("default") != {}:
            errors.append(f"{path}: nested default must be {{}} in the CRD")
        return
    if schema.get("default") != default:
        errors.append(f"{path}: CRD default {schema.get('default')!r} != model {default!r}")


def compare_model(
    path: str, model: type[BaseModel], schema: dict[str, Any], errors: list[str]
) -> None:
    if schema.get("type") != "object":
        errors.append(f"{path}: CRD type {schema.get('type')!r}, model object")
        return
    properties: dict[str, Any] = schema.get("properties", {})
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for missing in sorted(set(properties) - set(fields)):
        errors.append(f"{path}.{missing}: in the CRD, not in the model")
    for missing in sorted(set(fields) - set(properties)):
        errors.append(f"{path}.{missing}: in the model, not in the CRD")
    model_required = sorted(k for k, f in fields.items() if f.is_required())
    if model_required != sorted(schema.get("required", [])):
        errors.append(f"{path}: required CRD {schema.get('required')} != model {model_required}")
    for key in sorted(set(fields) & set(properties)):
        field, sub = fields[key], properties[key]
        compare(f"{path}.{key}", field.annotation, sub, errors)
        compare_default(f"{path}.{key}", field, sub, errors)
        compare_bounds(f"{path}.{key}", field, sub, errors)


def test_spec_schema_matches_model() -> None:
    errors: list[str] = []
    compare_model("spec", CameraSpec, version_schema()["properties"]["spec"], errors)
    assert errors == []


def test_status_schema_matches_model() -> None:
    errors: list[str] = []
    compare_model("status", CameraStatus, version_schema()["properties"]["status"], errors)
    assert errors == []


def test_walker_catches_a_disagreement() -> None:
    """The comparison must be able to fail: drop a field, flip a default, change an enum."""
    spec = version_schema()["properties"]["spec"]
    del spec["properties"]["onDemand"]
    spec["properties"]["stream"]["properties"]["mode"]["enum"].remove("auto")
    spec["properties"]["source"]["properties"]["transport"]["default"] = "udp"
    errors: list[str] = []
    compare_model("spec", CameraSpec, spec, errors)
    assert any("spec.onDemand" in e for e in errors)
    assert any("spec.stream.mode: enum" in e for e in errors)
    assert any("spec.source.transport: CRD default" in e for e in errors)


def test_crd_identity_and_columns() -> None:
    crd = load_crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{constants.PLURAL}.{constants.GROUP}"
    assert (crd["spec"]["group"], crd["spec"]["scope"]) == (constants.GROUP, "Namespaced")
    assert (names["kind"], names["plural"]) == (constants.KIND, constants.PLURAL)
    assert names["shortNames"] == ["cam"]
    assert names["categories"] == ["camfleet"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == constants.VERSION
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Room": ".status.room",
        "Codec": ".status.codec",
        "Age": ".metadata.creationTimestamp",
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(constants.PHASES)
