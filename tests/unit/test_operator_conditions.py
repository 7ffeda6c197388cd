"""compute_status: every phase, the reasons, and lastTransitionTime that moves only on a flip."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from camfleet_operator.conditions import (
    Observed,
    compute_status,
    parse_termination,
    scrub,
    status_patch,
)
from camfleet_operator.model import Camera

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
LIVE_ATTRS = {"codec": "h264", "resolution": "1920x1080", "fps": "25", "mode": "passthrough"}


def camera(**spec: Any) -> Camera:
    return Camera.from_body(
        {
            "metadata": {"name": "door", "namespace": "site-a", "uid": "u1", "generation": 3},
            "spec": {"source": {"url": "rtsp://10.0.0.7/s"}, **spec},
        }
    )


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
