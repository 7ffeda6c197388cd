"""Status from observed state: a pure function, so every phase and reason is unit-testable.

`compute_status(camera, observed, previous, now)` turns what the reconcile saw (Deployment and
Pod state, the ingest's LiveKit participant) into the Camera's status in the Kubernetes API
conventions: `observedGeneration`, a `phase`, and metav1.Condition-shaped conditions whose
`lastTransitionTime` moves only when their status flips.
"""

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from camfleet_operator import constants as c
from camfleet_operator.model import Camera

MAX_MESSAGE = 256
_CREDENTIALS_IN_URL = re.compile(r"(://)[^/@\s]+@")
_IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})


class Observed(BaseModel):
    """Everything one reconcile pass learned about a camera's children and its LiveKit room."""

    model_config = ConfigDict(frozen=True)

    desired_replicas: int = 1
    ready_replicas: int = 0
    container_running: bool = False
    restarts: int = 0
    waiting_reason: str | None = None  # e.g. CrashLoopBackOff, ImagePullBackOff
    termination_message: str | None = None  # the ingest's last termination message
    publishing_video: bool = False
    attributes: Mapping[str, str] = Field(default_factory=dict)
    conflict: str | None = None  # a child exists that this Camera does not own
    livekit_error: str | None = None  # LiveKit's API could not be asked this pass


class Failure(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str
    message: str


def scrub(text: str) -> str:
    """Bound a message and drop anything that looks like URL credentials before it is stored."""
    text = _CREDENTIALS_IN_URL.sub(r"\1***@", text.strip())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def parse_termination(message: str | None) -> Failure | None:
    """Read the ingest's termination message.

    Accepted forms (the ingest writes the first): `{"reason": "AuthFailed", "message": "..."}`,
    `AuthFailed: detail`, or a bare reason. Anything else is an `IngestCrashed` with the text.
    """
    if not message or not message.strip():
        return None
    text = message.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("reason"), str):
        reason, detail = data["reason"], str(data.get("message") or "")
    else:
        head, _, tail = text.partition(":")
        reason, detail = head.strip(), tail.strip()
    if reason in c.INGEST_FAILURE_REASONS:
        return Failure(reason=reason, message=scrub(detail or reason))
    return Failure(reason=c.REASON_INGEST_CRASHED, message=scrub(text))


def format_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    before = previous.get(type_)
    unchanged = before is not None and before.get("status") == status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": before["lastTransitionTime"] if unchanged and before else now,
        "observedGeneration": generation,
    }


def _publishing_message(camera: Camera, attributes: Mapping[str, str]) -> str:
    details = [
        f"{key} {attributes[key]}"
        for key in (c.ATTR_CODEC, c.ATTR_RESOLUTION, c.ATTR_FPS)
        if attributes.get(key)
    ]
    suffix = f" ({', '.join(details)})" if details else ""
    return f"{camera.identity} publishes video in room {camera.room}{suffix}"


def _fps(attributes: Mapping[str, str]) -> float | None:
    try:
        return round(float(attributes[c.ATTR_FPS]), 2)
    except (KeyError, ValueError):
        return None


def compute_status(
    camera: Camera,
    observed: Observed,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The Camera's whole status for this pass (keys with no value are left out)."""
    stamp = format_time(now)
    prev_conditions = {
        cond["type"]: cond
        for cond in (previous or {}).get("conditions") or []
        if isinstance(cond, Mapping) and "type" in cond
    }

    def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return _condition(
            type_,
            status,
            reason,
            message,
            generation=camera.generation,
            previous=prev_conditions,
            now=stamp,
        )

    failure = parse_termination(observed.termination_message)
    attributes = observed.attributes
    publishing = observed.publishing_video
    last_error: str | None = None
    codec = resolution = None
    fps: float | None = None

    if observed.conflict:
        reason, message = c.REASON_CHILD_CONFLICT, scrub(observed.conflict)
        phase = c.PHASE_FAILED
        source = cond(c.COND_SOURCE_REACHABLE, "Unknown", reason, message)
        publish = cond(c.COND_PUBLISHING, "Unknown", reason, message)
        ready = cond(c.COND_READY, "False", reason, message)
        last_error = f"{reason}: {message}"
    elif not camera.spec.enabled or observed.desired_replicas == 0:
        if camera.spec.enabled:  # on-demand and nobody is watching
            reason, message = c.REASON_WAITING_FOR_VIEWER, "onDemand: no viewer in the room"
        else:
            reason, message = c.REASON_PAUSED, "spec.enabled is false; the ingest is scaled to 0"
        phase = c.PHASE_STOPPED
        source = cond(c.COND_SOURCE_REACHABLE, "Unknown", reason, message)
        publish = cond(c.COND_PUBLISHING, "False", reason, message)
        ready = cond(c.COND_READY, "False", reason, message)
    else:
        running = observed.container_running
        # The ingest stays in the room while it reconnects to a camera that went away (and joins
        # it before a camera that never answered), and says so in its attributes; its pod's
        # readiness drops too, but only the attribute has a reason.
        source_down = attributes.get(c.ATTR_STATE) == c.STATE_RECONNECTING
        receiving = not source_down and (publishing or observed.ready_replicas > 0)
        # SourceReachable: frames flowing proves it; a classified ingest failure disproves it.
        if source_down:
            down_reason = attributes.get(c.ATTR_REASON) or c.REASON_UNREACHABLE
            source = cond(
                c.COND_SOURCE_REACHABLE,
                "False",
                down_reason,
                f"{camera.ref}: no frames from the camera; the ingest is reconnecting",
            )
        elif receiving:
            source = cond(c.COND_SOURCE_REACHABLE, "True", c.REASON_RECEIVING, "frames flowing")
        elif failure and failure.reason != c.REASON_PUBLISH_REJECTED:
            source = cond(c.COND_SOURCE_REACHABLE, "False", failure.reason, failure.message)
        elif observed.waiting_reason in _IMAGE_PULL_REASONS:
            source = cond(
                c.COND_SOURCE_REACHABLE,
                "Unknown",
                c.REASON_IMAGE_PULL,
                f"ingest image cannot be pulled ({observed.waiting_reason})",
            )
        elif running:
            source = cond(
                c.COND_SOURCE_REACHABLE,
                "Unknown",
                c.REASON_INGEST_STARTING,
                "the ingest is connecting to the source",
            )
        else:
            source = cond(
                c.COND_SOURCE_REACHABLE,
                "Unknown",
                c.REASON_INGEST_PENDING,
                f"the ingest pod is not running yet ({observed.ready_replicas}/1 ready)",
            )
        # Publishing: only LiveKit can say; a LiveKit we cannot ask leaves it Unknown.
        if publishing:
            mode = attributes.get(c.ATTR_MODE)
            reason = c.REASON_TRANSCODING if mode == "transcode" else c.REASON_PASSTHROUGH
            message = _publishing_message(camera, attributes)
            publish = cond(c.COND_PUBLISHING, "True", reason, message)
            codec = attributes.get(c.ATTR_CODEC) or None
            resolution = attributes.get(c.ATTR_RESOLUTION) or None
            fps = _fps(attributes)
        elif observed.livekit_error:
            publish = cond(
                c.COND_PUBLISHING,
                "Unknown",
                c.REASON_LIVEKIT_UNAVAILABLE,
                scrub(observed.livekit_error),
            )
        elif failure and failure.reason == c.REASON_PUBLISH_REJECTED:
            publish = cond(c.COND_PUBLISHING, "False", failure.reason, failure.message)
        else:
            publish = cond(
                c.COND_PUBLISHING,
                "False",
                c.REASON_NOT_PUBLISHING,
                f"{camera.identity} is not publishing video in room {camera.room}",
            )

        if source_down:
            phase = c.PHASE_DEGRADED  # the camera went away; the ingest reconnects by itself
        elif publishing and observed.ready_replicas > 0:
            phase = c.PHASE_LIVE
        elif publishing:
            phase = c.PHASE_DEGRADED  # in the room, but the pod says frames stopped
        elif failure and failure.reason in c.PERMANENT_FAILURE_REASONS:
            phase = c.PHASE_FAILED
        elif failure or observed.restarts > 0:
            phase = c.PHASE_DEGRADED
        elif running:
            phase = c.PHASE_CONNECTING
        else:
            phase = c.PHASE_PENDING

        if phase == c.PHASE_LIVE:
            ready = cond(c.COND_READY, "True", c.REASON_LIVE, publish["message"])
        elif failure and not publishing:
            ready = cond(c.COND_READY, "False", failure.reason, failure.message)
        elif source["status"] != "True":
            ready = cond(c.COND_READY, "False", source["reason"], source["message"])
        elif publishing:
            ready = cond(
                c.COND_READY, "False", c.REASON_NOT_READY, "publishing but the pod is not ready"
            )
        else:
            ready = cond(c.COND_READY, "False", publish["reason"], publish["message"])

        if source_down:
            last_error = f"{source['reason']}: {source['message']}"
        elif failure and not publishing:
            last_error = f"{failure.reason}: {failure.message}"
        elif observed.livekit_error:
            last_error = f"{c.REASON_LIVEKIT_UNAVAILABLE}: {scrub(observed.livekit_error)}"

    status: dict[str, Any] = {
        "observedGeneration": camera.generation,
        "phase": phase,
        "conditions": [source, publish, ready],
        "room": camera.room,
        "codec": codec,
        "resolution": resolution,
        "fps": fps,
        "restarts": observed.restarts,
        "lastError": last_error,
    }
    return {k: v for k, v in status.items() if v is not None}


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from `current` to `desired`; empty when nothing changed.

    Keys that vanished are sent as null, which is how a merge patch removes them.
    """
    current = current or {}
    if all(current.get(k) == v for k, v in desired.items()) and set(current) <= set(desired):
        return {}
    patch: dict[str, Any] = {k: None for k in current if k not in desired}
    patch.update(desired)
    return patch
