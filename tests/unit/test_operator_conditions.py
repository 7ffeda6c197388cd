"""compute_status: every phase, the reasons, and lastTransitionTime that moves only on a flip."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from camfleet.camera import Camera, CameraSpec, CameraStatus
from camfleet_operator.conditions import (
    NOT_READY_GRACE,
    Observed,
    parse_status,
    parse_termination,
    refused_status,
    scrub,
    spec_problems,
    status_body,
    status_patch,
)
from camfleet_operator.conditions import compute_status as compute_typed

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
LIVE_ATTRS = {"codec": "h264", "resolution": "1920x1080", "fps": "25", "mode": "passthrough"}


def camera(**spec: Any) -> Camera:
    return Camera.from_body(
        {
            "metadata": {"name": "door", "namespace": "site-a", "uid": "u1", "generation": 3},
            "spec": {"source": {"url": "rtsp://10.0.0.7/s"}, **spec},
        }
    )


def compute_status(
    cam: Camera, observed: Observed, previous: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The status as the operator stores it (camelCase, no empty keys), from the typed one."""
    return status_body(compute_typed(cam, observed, parse_status(previous), now))


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_no_pod_yet_is_pending_with_unknown_source() -> None:
    status = compute_status(camera(), Observed(), None, NOW)
    assert status["phase"] == "Pending"
    assert status["observedGeneration"] == 3
    assert status["room"] == "site-a-door"
    assert conditions(status) == {
        "SourceReachable": ("Unknown", "IngestPending"),
        "Publishing": ("False", "NotPublishing"),
        "Ready": ("False", "IngestPending"),
    }
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert all(c["lastTransitionTime"] == "2026-11-26T12:00:00Z" for c in status["conditions"])
    assert "lastError" not in status
    assert "codec" not in status


def test_running_container_is_connecting() -> None:
    status = compute_status(camera(), Observed(container_running=True), None, NOW)
    assert status["phase"] == "Connecting"
    assert conditions(status)["SourceReachable"] == ("Unknown", "IngestStarting")


def test_live_reports_codec_resolution_fps() -> None:
    observed = Observed(
        ready_replicas=1, container_running=True, publishing_video=True, attributes=LIVE_ATTRS
    )
    status = compute_status(camera(), observed, None, NOW)
    assert status["phase"] == "Live"
    assert (status["codec"], status["resolution"], status["fps"]) == ("h264", "1920x1080", 25.0)
    assert conditions(status) == {
        "SourceReachable": ("True", "Receiving"),
        "Publishing": ("True", "Passthrough"),
        "Ready": ("True", "Live"),
    }


def test_transcoding_reason() -> None:
    observed = Observed(
        ready_replicas=1,
        publishing_video=True,
        attributes={**LIVE_ATTRS, "mode": "transcode"},
    )
    status = compute_status(camera(), observed, None, NOW)
    assert conditions(status)["Publishing"] == ("True", "Transcoding")


def test_publishing_but_pod_not_ready_is_degraded() -> None:
    observed = Observed(ready_replicas=0, publishing_video=True, attributes=LIVE_ATTRS)
    status = compute_status(camera(), observed, None, NOW)
    assert status["phase"] == "Degraded"
    assert conditions(status)["Ready"] == ("False", "IngestNotReady")


@pytest.mark.parametrize(
    ("message", "phase", "reason", "source"),
    [
        ('{"reason": "AuthFailed", "message": "401 from camera"}', "Failed", "AuthFailed", "False"),
        ("CodecUnsupported: mjpeg", "Failed", "CodecUnsupported", "False"),
        ("Unreachable: connection refused", "Degraded", "Unreachable", "False"),
        ("PublishRejected", "Failed", "PublishRejected", "Unknown"),
        ("Traceback (most recent call last)", "Degraded", "IngestCrashed", "False"),
    ],
)
def test_ingest_failures(message: str, phase: str, reason: str, source: str) -> None:
    observed = Observed(restarts=2, termination_message=message, waiting_reason="CrashLoopBackOff")
    status = compute_status(camera(), observed, None, NOW)
    assert status["phase"] == phase
    assert status["restarts"] == 2
    assert conditions(status)["Ready"] == ("False", reason)
    assert conditions(status)["SourceReachable"][0] == source
    assert status["lastError"].startswith(f"{reason}: ")


def test_publish_rejected_is_a_publishing_condition() -> None:
    observed = Observed(termination_message="PublishRejected: 403")
    status = compute_status(camera(), observed, None, NOW)
    assert conditions(status)["Publishing"] == ("False", "PublishRejected")


def test_disabled_is_stopped_paused() -> None:
    status = compute_status(camera(enabled=False), Observed(desired_replicas=0), None, NOW)
    assert status["phase"] == "Stopped"
    assert conditions(status) == {
        "SourceReachable": ("Unknown", "Paused"),
        "Publishing": ("False", "Paused"),
        "Ready": ("False", "Paused"),
    }


def test_on_demand_without_viewer_waits() -> None:
    status = compute_status(camera(onDemand=True), Observed(desired_replicas=0), None, NOW)
    assert status["phase"] == "Stopped"
    assert conditions(status)["Ready"] == ("False", "WaitingForViewer")


def test_child_conflict() -> None:
    observed = Observed(conflict="Deployment site-a/door-ingest is not owned by this Camera")
    status = compute_status(camera(), observed, None, NOW)
    assert status["phase"] == "Failed"
    assert conditions(status)["Ready"] == ("False", "ChildConflict")
    assert "door-ingest" in status["lastError"]


def test_livekit_unavailable_leaves_publishing_unknown() -> None:
    status = compute_status(camera(), Observed(livekit_error="connection refused"), None, NOW)
    assert conditions(status)["Publishing"] == ("Unknown", "LiveKitUnavailable")
    assert status["lastError"] == "LiveKitUnavailable: connection refused"
    assert status["phase"] == "Pending"


def test_last_transition_time_moves_only_on_flip() -> None:
    first = compute_status(camera(), Observed(), None, NOW)
    later = NOW + timedelta(minutes=5)
    # Same statuses, different reason for SourceReachable: the time stays.
    second = compute_status(camera(), Observed(container_running=True), first, later)
    assert [c["lastTransitionTime"] for c in second["conditions"]] == [
        c["lastTransitionTime"] for c in first["conditions"]
    ]
    live = Observed(ready_replicas=1, publishing_video=True, attributes=LIVE_ATTRS)
    third = compute_status(camera(), live, second, later)
    assert {c["lastTransitionTime"] for c in third["conditions"]} == {"2026-11-26T12:05:00Z"}


def test_status_patch_only_when_changed() -> None:
    status = compute_status(camera(), Observed(), None, NOW)
    assert status_patch(status, status) == {}
    assert status_patch(None, status) == status
    observed = Observed(ready_replicas=1, publishing_video=True, attributes=LIVE_ATTRS)
    live = compute_status(camera(), observed, None, NOW)
    assert status_patch(live, status)["codec"] is None  # removed keys become null


def test_termination_parsing_and_scrubbing() -> None:
    assert parse_termination(None) is None
    assert parse_termination("  ") is None
    failure = parse_termination("Unreachable: rtsp://admin:hunter2@10.0.0.7/s timed out")
    assert failure is not None
    assert failure.reason == "Unreachable"
    assert "hunter2" not in failure.message
    assert scrub("x" * 1000).endswith("…")
    assert len(scrub("x" * 1000)) == 256


def test_camera_down_while_the_ingest_stays_in_the_room_is_degraded_with_its_reason() -> None:
    live = compute_status(
        camera(),
        Observed(
            container_running=True,
            ready_replicas=1,
            publishing_video=True,
            attributes={**LIVE_ATTRS, "state": "live"},
        ),
        None,
        NOW,
    )
    assert live["phase"] == "Live"
    down = compute_status(
        camera(),
        Observed(
            container_running=True,
            ready_replicas=1,  # readiness lags (probe period x failures); the attribute does not
            publishing_video=True,
            attributes={**LIVE_ATTRS, "state": "reconnecting", "reason": "Unreachable"},
        ),
        live,
        NOW + timedelta(seconds=5),
    )
    assert down["phase"] == "Degraded"
    assert conditions(down) == {
        "SourceReachable": ("False", "Unreachable"),
        "Publishing": ("True", "Passthrough"),
        "Ready": ("False", "Unreachable"),
    }
    assert down["lastError"].startswith("Unreachable: site-a/door")
    assert down["codec"] == "h264"
    ready = {c["type"]: c for c in down["conditions"]}["Ready"]
    assert ready["lastTransitionTime"] == "2026-11-26T12:00:05Z"


def test_reconnecting_without_a_reason_counts_as_unreachable() -> None:
    status = compute_status(
        camera(),
        Observed(
            container_running=True,
            publishing_video=True,
            attributes={**LIVE_ATTRS, "state": "reconnecting"},
        ),
        None,
        NOW,
    )
    assert status["phase"] == "Degraded"
    assert conditions(status)["SourceReachable"] == ("False", "Unreachable")


def test_a_camera_down_from_the_start_is_degraded_with_the_reason() -> None:
    """The ingest joined the room but never published: its attributes carry the reason."""
    status = compute_status(
        camera(),
        Observed(
            container_running=True,
            publishing_video=False,
            attributes={"state": "reconnecting", "reason": "Unreachable"},
        ),
        None,
        NOW,
    )
    assert status["phase"] == "Degraded"
    assert conditions(status) == {
        "SourceReachable": ("False", "Unreachable"),
        "Publishing": ("False", "NotPublishing"),
        "Ready": ("False", "Unreachable"),
    }
    assert status["lastError"].startswith("Unreachable: site-a/door")
    assert "codec" not in status


def test_compute_status_returns_the_typed_status_model() -> None:
    status = compute_typed(camera(), Observed(container_running=True), None, NOW)
    assert isinstance(status, CameraStatus)
    assert status.phase == "Connecting"
    ready = status.condition("Ready")
    assert ready is not None
    assert ready.reason == "IngestStarting"


PUBLISHING_NOT_READY = {
    "container_running": True,
    "publishing_video": True,
    "attributes": LIVE_ATTRS,
    "ready_replicas": 0,
}


def test_publishing_before_the_first_readiness_probe_is_connecting_not_degraded() -> None:
    """A normal start: LiveKit sees the track a second before the pod's readiness probe passes.
    That is Connecting (a Normal event), not Degraded/IngestNotReady (a Warning)."""
    observed = Observed(**PUBLISHING_NOT_READY, container_started_at=NOW - timedelta(seconds=2))
    connecting = compute_status(camera(), Observed(container_running=True), None, NOW)
    status = compute_status(camera(), observed, connecting, NOW)
    assert status["phase"] == "Connecting"
    assert conditions(status)["Ready"] == ("False", "IngestStarting")
    assert conditions(status)["Publishing"] == ("True", "Passthrough")


def test_publishing_without_readiness_degrades_after_the_grace_or_once_live() -> None:
    late = Observed(
        **PUBLISHING_NOT_READY, container_started_at=NOW - NOT_READY_GRACE - timedelta(seconds=1)
    )
    assert compute_status(camera(), late, None, NOW)["phase"] == "Degraded"
    live = compute_status(
        camera(),
        Observed(ready_replicas=1, container_running=True, publishing_video=True),
        None,
        NOW,
    )
    young = Observed(**PUBLISHING_NOT_READY, container_started_at=NOW - timedelta(seconds=2))
    lost = compute_status(camera(), young, live, NOW)
    assert lost["phase"] == "Degraded"  # readiness lost after Live is a real fault
    assert conditions(lost)["Ready"] == ("False", "IngestNotReady")
    # No start time known (an old kubelet, a runner that does not report it): no grace.
    assert compute_status(camera(), Observed(**PUBLISHING_NOT_READY), None, NOW)["phase"] == (
        "Degraded"
    )


@pytest.mark.parametrize(
    ("url", "position"),
    [
        ("rtsp://10.0.0.7/s\nX-Injected: 1", 17),
        ("rtsp://10.0.0.7/s tream", 17),
        ("rtsp://10.0.0.7/s\x00", 17),
        ("rtsp://10.0.0.7/s\u2028", 17),
    ],
)
def test_the_model_refuses_control_characters_and_whitespace(url: str, position: int) -> None:
    with pytest.raises(ValidationError) as caught:
        CameraSpec.model_validate({"source": {"url": url}})
    (problem,) = spec_problems(caught.value)
    assert problem.startswith("spec.source.url: must not contain whitespace or control characters")
    assert f"at position {position}" in problem
    assert url not in problem  # the refused value is never echoed


def test_a_refused_spec_is_failed_with_a_reason_that_names_the_url() -> None:
    with pytest.raises(ValidationError) as caught:
        CameraSpec.model_validate({"source": {"url": "rtsp://10.0.0.7/s\nx"}})
    status = status_body(refused_status(4, spec_problems(caught.value), None, NOW))
    assert status["phase"] == "Failed"
    assert status["observedGeneration"] == 4
    assert conditions(status) == {
        "SourceReachable": ("Unknown", "MalformedURL"),
        "Publishing": ("False", "MalformedURL"),
        "Ready": ("False", "MalformedURL"),
    }
    assert status["lastError"].startswith("MalformedURL: spec.source.url: must not contain")
    with pytest.raises(ValidationError) as other:
        CameraSpec.model_validate({"source": {"url": "rtsp://x/s"}, "ingest": {"image": "a b"}})
    other_status = status_body(refused_status(1, spec_problems(other.value), None, NOW))
    assert conditions(other_status)["Ready"] == ("False", "InvalidSpec")
    assert "spec.ingest.image" in other_status["lastError"]
