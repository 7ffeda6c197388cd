"""The operator's process-wide state: settings, clients and the routing of events to Cameras.

Built once in the program's start-up (`camfleet_operator.__main__`) and handed to every handler;
`forget` drops what one Camera held when it is deleted.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from camfleet.camera import Camera, CameraStatus
from camfleet_operator import constants as c
from camfleet_operator.kube import Kube
from camfleet_operator.livekit import LiveKit
from camfleet_operator.metrics import Metrics
from camfleet_operator.model import IngestDefaults
from camfleet_operator.pods import pod_look
from camfleet_operator.settings import Settings


@dataclass
class Context:
    """Everything a handler needs, built once per process from the settings."""

    settings: Settings
    metrics: Metrics
    livekit: LiveKit
    defaults: IngestDefaults
    kube: Kube | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    timers_spread: set[str] = field(default_factory=set)
    # Event-driven passes: room -> Camera uid (LiveKit webhooks), (namespace, name) -> uid
    # (ingest pod events), what each ingest pod last looked like, a wake-up per Camera for its
    # follower, and since when a running on-demand ingest's room has had no viewer (monotonic,
    # for the grace period).
    rooms: dict[str, str] = field(default_factory=dict)
    cameras: dict[tuple[str, str], str] = field(default_factory=dict)
    pod_looks: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    idle_since: dict[str, float] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The status this process last wrote per Camera, the `previous` of its next pass: passes
    # that overlap at a Camera's start (its create handler, its follower) may carry a body read
    # before the other's write, and must not post that transition a second time.
    statuses: dict[str, CameraStatus] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings, metrics: Metrics | None = None) -> "Context":
        metrics = metrics or Metrics()
        return cls(
            settings=settings,
            metrics=metrics,
            livekit=LiveKit(settings, metrics),
            defaults=settings.ingest_defaults(),
        )

    def api(self) -> Kube:
        if self.kube is None:
            raise RuntimeError("the Kubernetes client is not connected yet (startup not run)")
        return self.kube

    def wakeup(self, uid: str) -> asyncio.Event:
        return self.wakeups.setdefault(uid, asyncio.Event())

    def wake(self, room: str) -> bool:
        """A webhook says something happened in `room`: wake its camera's follower, if any."""
        uid = self.rooms.get(room)
        if uid is None:
            return False
        self.wakeup(uid).set()
        return True

    def pod_changed(self, pod: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """An ingest pod event: wake its camera's follower when the pod's look changed (ready,
        restarts, container state), not on every resync or label touch."""
        meta = pod.get("metadata") or {}
        uid = self.cameras.get(
            (meta.get("namespace", ""), (meta.get("labels") or {}).get(c.LABEL_CAMERA, ""))
        )
        pod_uid = str(meta.get("uid"))
        if not deleted and meta.get("deletionTimestamp") is None:
            look, seen = pod_look(pod), self.pod_looks.get(pod_uid)
            self.pod_looks[pod_uid] = look
            # First sight (a new pod, or every pod when the operator starts) only records it:
            # the pass that made the Deployment, or kopf's resume, already looked.
            if seen is None or seen == look:
                return False
        else:
            self.pod_looks.pop(pod_uid, None)
        if uid is None:
            return False  # another shard's Camera, or one this process has not seen yet
        self.wakeup(uid).set()
        return True

    def track(self, camera: Camera) -> None:
        """Route this Camera's events (its room's webhooks, its ingest pod) to its follower."""
        self.rooms[camera.room] = camera.uid
        self.cameras[(camera.namespace, camera.name)] = camera.uid

    def forget(self, camera: Camera) -> None:
        """Drop everything held for a deleted Camera: routes, lock, wake-up, timers, metrics."""
        self.metrics.set_phase(camera.uid, None)
        self.locks.pop(camera.uid, None)
        self.timers_spread.discard(camera.uid)
        self.wakeups.pop(camera.uid, None)
        self.idle_since.pop(camera.uid, None)
        self.statuses.pop(camera.uid, None)
        for room in [r for r, uid in self.rooms.items() if uid == camera.uid]:
            del self.rooms[room]
        self.cameras.pop((camera.namespace, camera.name), None)

    def lock(self, uid: str) -> asyncio.Lock:
        # Timers and change handlers of one Camera may overlap; one pass at a time per Camera.
        return self.locks.setdefault(uid, asyncio.Lock())
