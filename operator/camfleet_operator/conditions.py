"""Status from observed state: a pure function, so every phase and reason is unit-testable.

`compute_status(camera, observed, previous, now)` turns what the reconcile saw (Deployment and
Pod state, the ingest's LiveKit participant) into the Camera's status in the Kubernetes API
conventions: `observedGeneration`, a `phase`, and metav1.Condition-shaped conditions whose
`lastTransitionTime` moves only when their status flips.
"""

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from camfleet import ingest_contract as ic
from camfleet.camera import Camera, CameraStatus, Condition, ConditionStatus, Phase
from camfleet_operator import constants as c

MAX_MESSAGE = 256
# A fresh ingest publishes a second or two before its readiness probe passes (first probe after
# 1 s, then every 2 s). Publishing without readiness is a fault only after this long, or when
# the Camera was already Live or Degraded (then readiness was lost, not yet to be won).
NOT_READY_GRACE = timedelta(seconds=20)
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
    container_started_at: datetime | None = None  # when the running ingest container started
    publishing_video: bool = False
    attributes: Mapping[str, str] = Field(default_factory=dict)
    conflict: str | None = None  # a child exists that this Camera does not own
    livekit_error: str | None = None  # LiveKit's API could not be asked this pass
    recording_store: bool = False  # the operator has a store to record into


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
    if reason in ic.FAILURE_REASONS:
        return Failure(reason=reason, message=scrub(detail or reason))
    return Failure(reason=c.REASON_INGEST_CRASHED, message=scrub(text))


def format_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int,
    previous: Mapping[str, Condition],
    now: str,
) -> Condition:
    before = previous.get(type_)
    unchanged = before is not None and before.status == status
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=before.last_transition_time if unchanged and before else now,
        observed_generation=generation,
    )


def _publishing_message(camera: Camera, attributes: Mapping[str, str]) -> str:
    details = [
        f"{key} {attributes[key]}"
        for key in (ic.ATTR_CODEC, ic.ATTR_RESOLUTION, ic.ATTR_FPS)
        if attributes.get(key)
    ]
    suffix = f" ({', '.join(details)})" if details else ""
    return f"{camera.identity} publishes video in room {camera.room}{suffix}"


def _fps(attributes: Mapping[str, str]) -> float | None:
    try:
        return round(float(attributes[ic.ATTR_FPS]), 2)
    except (KeyError, ValueError):
        return None


def _still_starting(observed: Observed, previous: CameraStatus | None, now: datetime) -> bool:
    """Publishing without a ready pod is part of a normal start (not a fault) while the
    container is young and the Camera has not been Live or Degraded since."""
    if previous is not None and previous.phase in (c.PHASE_LIVE, c.PHASE_DEGRADED):
        return False
    started = observed.container_started_at
    return started is not None and now - started < NOT_READY_GRACE


def compute_status(
    camera: Camera,
    observed: Observed,
    previous: CameraStatus | None,
    now: datetime,
) -> CameraStatus:
    """The Camera's whole status for this pass."""
    stamp = format_time(now)
    prev_conditions = {cond.type: cond for cond in ((previous and previous.conditions) or ())}

    def cond(type_: str, status: ConditionStatus, reason: str, message: str) -> Condition:
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
    phase: Phase

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
        source_down = attributes.get(ic.ATTR_STATE) == ic.STATE_RECONNECTING
        receiving = not source_down and (publishing or observed.ready_replicas > 0)
        # SourceReachable: frames flowing proves it; a classified ingest failure disproves it.
        if source_down:
            down_reason = attributes.get(ic.ATTR_REASON) or ic.UNREACHABLE
            source = cond(
                c.COND_SOURCE_REACHABLE,
                "False",
                down_reason,
                f"{camera.ref}: no frames from the camera; the ingest is reconnecting",
            )
        elif receiving:
            source = cond(c.COND_SOURCE_REACHABLE, "True", c.REASON_RECEIVING, "frames flowing")
        elif failure and failure.reason != ic.PUBLISH_REJECTED:
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
            mode = attributes.get(ic.ATTR_MODE)
            reason = c.REASON_TRANSCODING if mode == "transcode" else c.REASON_PASSTHROUGH
            message = _publishing_message(camera, attributes)
            publish = cond(c.COND_PUBLISHING, "True", reason, message)
            codec = attributes.get(ic.ATTR_CODEC) or None
            resolution = attributes.get(ic.ATTR_RESOLUTION) or None
            fps = _fps(attributes)
        elif observed.livekit_error:
            publish = cond(
                c.COND_PUBLISHING,
                "Unknown",
                c.REASON_LIVEKIT_UNAVAILABLE,
                scrub(observed.livekit_error),
            )
        elif failure and failure.reason == ic.PUBLISH_REJECTED:
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
        elif publishing and _still_starting(observed, previous, now):
            phase = c.PHASE_CONNECTING  # frames flow; the readiness probe has not run yet
        elif publishing:
            phase = c.PHASE_DEGRADED  # in the room, but the pod says frames stopped
        elif failure and failure.reason in ic.PERMANENT_FAILURE_REASONS:
            phase = c.PHASE_FAILED
        elif failure or observed.restarts > 0:
            phase = c.PHASE_DEGRADED
        elif running:
            phase = c.PHASE_CONNECTING
        else:
            phase = c.PHASE_PENDING

        if phase == c.PHASE_LIVE:
            ready = cond(c.COND_READY, "True", c.REASON_LIVE, publish.message)
        elif failure and not publishing:
            ready = cond(c.COND_READY, "False", failure.reason, failure.message)
        elif source.status != "True":
            ready = cond(c.COND_READY, "False", source.reason, source.message)
        elif publishing and phase == c.PHASE_CONNECTING:
            ready = cond(
                c.COND_READY,
                "False",
                c.REASON_INGEST_STARTING,
                "publishing; waiting for the ingest pod's readiness probe",
            )
        elif publishing:
            ready = cond(
                c.COND_READY, "False", c.REASON_NOT_READY, "publishing but the pod is not ready"
            )
        else:
            ready = cond(c.COND_READY, "False", publish.reason, publish.message)

        if source_down:
            last_error = f"{source.reason}: {source.message}"
        elif failure and not publishing:
            last_error = f"{failure.reason}: {failure.message}"
        elif observed.livekit_error:
            last_error = f"{c.REASON_LIVEKIT_UNAVAILABLE}: {scrub(observed.livekit_error)}"

    conditions: tuple[Condition, ...] = (source, publish, ready)
    if camera.spec.recording.enabled:
        conditions += (_recording(camera, observed, cond),)
    return CameraStatus(
        observed_generation=camera.generation,
        phase=phase,
        conditions=conditions,
        room=camera.room,
        codec=codec,
        resolution=resolution,
        fps=fps,
        restarts=observed.restarts,
        last_error=last_error,
    )


def _recording(
    camera: Camera,
    observed: Observed,
    cond: Callable[[str, ConditionStatus, str, str], Condition],
) -> Condition:
    """`Recording`: what the ingest says of its recorder (participant attributes)."""
    if camera.spec.recording.mode == "events":
        return cond(
            c.COND_RECORDING,
            "False",
            c.REASON_MODE_NOT_SUPPORTED,
            "recording.mode events is not implemented yet: nothing is recorded (use continuous)",
        )
    if not observed.recording_store:
        return cond(
            c.COND_RECORDING,
            "False",
            c.REASON_NO_STORE,
            "spec.recording is on but the operator has no recording store configured",
        )
    state = observed.attributes.get(ic.ATTR_RECORDING)
    if state == ic.RECORDING_ON:
        return cond(
            c.COND_RECORDING, "True", c.REASON_RECORDING, f"{camera.spec.recording.mode} recording"
        )
    if state == ic.RECORDING_GAP:
        reason = observed.attributes.get(ic.ATTR_RECORDING_REASON) or ic.GAP_STORE_UNAVAILABLE
        return cond(
            c.COND_RECORDING,
            "False",
            reason,
            "segments cannot reach the store; a gap is being recorded (live video is unaffected)",
        )
    return cond(
        c.COND_RECORDING, "Unknown", c.REASON_RECORDER_WAITING, "the ingest is not recording yet"
    )


def spec_problems(exc: ValidationError) -> list[str]:
    """Each refused field as `spec.<path>: <why>`, without the refused values (a URL may hold
    what its owner did not mean to publish)."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in err["loc"])
        problems.append(f"spec.{where}: {err['msg'].removeprefix('Value error, ')}")
    return problems


def refused_status(
    generation: int, problems: list[str], previous: CameraStatus | None, now: datetime
) -> CameraStatus:
    """The status of a Camera whose spec the model refuses (one that the installed CRD let
    through, e.g. created before the CRD's rules): Failed, naming the fields; nothing runs."""
    url = any(problem.startswith("spec.source.url:") for problem in problems)
    reason = c.REASON_MALFORMED_URL if url else c.REASON_INVALID_SPEC
    message = scrub("; ".join(problems) or "the spec does not match camfleet's model")
    stamp = format_time(now)
    prev = {cond.type: cond for cond in ((previous and previous.conditions) or ())}

    def cond(type_: str, status: ConditionStatus) -> Condition:
        return _condition(
            type_, status, reason, message, generation=generation, previous=prev, now=stamp
        )

    return CameraStatus(
        observed_generation=generation,
        phase=c.PHASE_FAILED,
        conditions=(
            cond(c.COND_SOURCE_REACHABLE, "Unknown"),
            cond(c.COND_PUBLISHING, "False"),
            cond(c.COND_READY, "False"),
        ),
        last_error=f"{reason}: {message}",
    )


def status_body(status: CameraStatus) -> dict[str, Any]:
    """The status as the API server stores it (camelCase keys; keys with no value left out)."""
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def parse_status(raw: Mapping[str, Any] | None) -> CameraStatus | None:
    """A stored status read back, or None when there is none or it is not ours to read."""
    if not raw:
        return None
    try:
        return CameraStatus.model_validate(dict(raw))
    except ValidationError:
        return None  # written by something else (or an older operator): recomputed in full


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
