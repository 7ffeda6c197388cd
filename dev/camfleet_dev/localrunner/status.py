"""Pure: the Pod status a kubelet would report for a local process's state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_MESSAGE = 4096  # what the kubelet keeps of a termination message


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Terminated:
    exit_code: int
    message: str
    started_at: datetime
    finished_at: datetime
    signal: int | None = None

    @property
    def reason(self) -> str:
        if self.exit_code == 0:
            return "Completed"
        return "OOMKilled" if self.signal == 9 and not self.message else "Error"


@dataclass
class ContainerState:
    """What the runner knows of the pod's one container."""

    name: str
    image: str
    restart_count: int = 0
    running_since: datetime | None = None
    ready: bool = False
    waiting_reason: str | None = "ContainerCreating"
    waiting_message: str | None = None
    last_terminated: Terminated | None = None
    pid: int | None = None


def pod_status(state: ContainerState, started: datetime, now: datetime) -> dict[str, Any]:
    """The ``status`` of the Pod (for a merge patch of the status subresource)."""
    running = state.running_since is not None
    ready = running and state.ready

    def cond(kind: str, ok: bool) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": rfc3339(now),
        }

    current: dict[str, Any]
    if running and state.running_since is not None:
        current = {"running": {"startedAt": rfc3339(state.running_since)}}
    else:
        waiting: dict[str, Any] = {"reason": state.waiting_reason or "ContainerCreating"}
        if state.waiting_message:
            waiting["message"] = state.waiting_message[:MAX_MESSAGE]
        current = {"waiting": waiting}
    last: dict[str, Any] = {}
    if state.last_terminated is not None:
        t = state.last_terminated
        last = {
            "terminated": {
                "exitCode": t.exit_code,
                "reason": t.reason,
                "message": t.message[-MAX_MESSAGE:],
                "startedAt": rfc3339(t.started_at),
                "finishedAt": rfc3339(t.finished_at),
                **({"signal": t.signal} if t.signal else {}),
            }
        }
    return {
        "phase": "Running" if running else "Pending",
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": rfc3339(started),
        "conditions": [
            cond("PodScheduled", True),
            cond("Initialized", True),
            cond("ContainersReady", ready),
            cond("Ready", ready),
        ],
        "containerStatuses": [
            {
                "name": state.name,
                "image": state.image,
                "imageID": "",
                "containerID": f"local://{state.pid}" if state.pid else None,
                "ready": ready,
                "started": running,
                "restartCount": state.restart_count,
                "state": current,
                "lastState": last,
            }
        ],
    }


def crash_backoff(restarts: int, base: float, cap: float) -> float:
    """The kubelet's CrashLoopBackOff: doubling from ``base`` up to ``cap``."""
    if restarts <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (restarts - 1)))
