"""Labels, owner references and content hashes shared by every child object."""

import hashlib
import json
from typing import Any

from camfleet import camera as cam
from camfleet.camera import Camera
from camfleet_operator import constants as c


def labels(camera: Camera) -> dict[str, str]:
    return {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_INSTANCE: camera.name,
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_COMPONENT: c.COMPONENT_INGEST,
        c.LABEL_CAMERA: camera.name,
    }


def selector_labels(camera: Camera) -> dict[str, str]:
    """The immutable subset used as the Deployment selector (selectors cannot change later)."""
    return {c.LABEL_NAME: c.APP_NAME, c.LABEL_CAMERA: camera.name}


def owner_reference(camera: Camera) -> dict[str, Any]:
    return {
        "apiVersion": cam.API_VERSION,
        "kind": cam.KIND,
        "name": camera.name,
        "uid": camera.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def content_hash(value: Any) -> str:
    """A short, stable digest of JSON-able content (sorted keys, so dict order never matters)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """Record the digest of the desired object on it, so the reconcile compares one string."""
    annotations = obj["metadata"].setdefault("annotations", {})
    annotations.pop(c.ANN_DESIRED_HASH, None)
    annotations[c.ANN_DESIRED_HASH] = content_hash(obj)
    return obj
