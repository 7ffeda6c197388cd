"""What the Camera's status reads from its ingest pods (pure: pods in, facts out)."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from camfleet_operator import constants as c


def pod_look(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the status depends on in one ingest pod: readiness, restarts, container states."""
    status = pod.get("status") or {}
    ready = next(
        (
            cond.get("status")
            for cond in status.get("conditions") or []
            if cond.get("type") == "Ready"
        ),
        None,
    )
    containers = tuple(
        (
            cs.get("name"),
            cs.get("ready"),
            cs.get("restartCount"),
            tuple(sorted((cs.get("state") or {}).keys())),
            ((cs.get("state") or {}).get("waiting") or {}).get("reason"),
        )
        for cs in status.get("containerStatuses") or []
    )
    return (status.get("phase"), ready, containers)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in (pod.get("status") or {}).get("conditions") or []
    )


def observe_pods(pod_list: list[dict[str, Any]]) -> dict[str, Any]:
    """Ready pods, restarts, the ingest container's state and its last termination message."""
    running, restarts, ready = False, 0, 0
    waiting: str | None = None
    message: str | None = None
    started: datetime | None = None
    for pod in pod_list:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue  # a terminating pod of an old rollout says nothing about the current one
        ready += pod_ready(pod)
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != c.INGEST_CONTAINER:
                continue
            restarts += int(status.get("restartCount") or 0)
            state = status.get("state") or {}
            running = running or "running" in state
            started = started or _parse_time((state.get("running") or {}).get("startedAt"))
            waiting = waiting or (state.get("waiting") or {}).get("reason")
            terminated = state.get("terminated") or (status.get("lastState") or {}).get(
                "terminated"
            )
            if terminated and terminated.get("message"):
                message = str(terminated["message"])
    return {
        # Fresher than the Deployment's readyReplicas, which waits for the controller: a pass
        # woken by the pod's own readiness event must see it.
        "ready_replicas": ready,
        "container_running": running,
        "restarts": restarts,
        "waiting_reason": waiting,
        "termination_message": message,
        "container_started_at": started,
    }


def _parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as the kubelet writes it (`2026-12-02T01:02:03Z`), else None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
