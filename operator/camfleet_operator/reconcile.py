"""The one idempotent sync of a Camera, and its clean-up on delete.

Per pass: get each child → create it if absent → refuse it if another owner holds it (never
adopt) → patch it if it differs from the desired object → compute the status once and write it
only if it changed. Create, update, resume and the timer all call the same `sync`, so a restart,
a missed event or a hand-deleted child all converge the same way.
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from camfleet_operator import constants as c
from camfleet_operator import kube as paths
from camfleet_operator.builders.deployment import build_deployment, desired_replicas
from camfleet_operator.builders.secret import build_secret, issued_token, needs_rotation
from camfleet_operator.conditions import Observed, compute_status, status_patch
from camfleet_operator.kube import Conflict, Kube, KubeError
from camfleet_operator.livekit import LiveKit, LiveKitUnavailable, RoomState
from camfleet_operator.metrics import Metrics
from camfleet_operator.model import Camera, IngestDefaults
from camfleet_operator.pods import observe_pods, pod_look
from camfleet_operator.settings import Settings

WARNING_PHASES = frozenset({c.PHASE_DEGRADED, c.PHASE_FAILED})


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

    def lock(self, uid: str) -> asyncio.Lock:
        # Timers and change handlers of one Camera may overlap; one pass at a time per Camera.
        return self.locks.setdefault(uid, asyncio.Lock())


def owned_by(obj: Mapping[str, Any], camera: Camera) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == camera.uid and ref.get("controller") for ref in refs)


def conflict_message(kind: str, camera: Camera, name: str) -> str:
    return (
        f"{kind} {camera.namespace}/{name} exists and is not owned by this Camera; "
        "rename or delete it (the operator never adopts)"
    )


def _differs(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Our content changed (desired-hash), or someone scaled the ingest by hand: two replicas
    would mean two RTSP sessions on one camera, so replicas are always compared."""
    actual_hash = ((actual.get("metadata") or {}).get("annotations") or {}).get(c.ANN_DESIRED_HASH)
    if actual_hash != desired["metadata"]["annotations"][c.ANN_DESIRED_HASH]:
        return True
    wanted = (desired.get("spec") or {}).get("replicas")
    return wanted is not None and (actual.get("spec") or {}).get("replicas") != wanted


async def _ensure_child(
    api: Kube, collection: str, path: str, desired: Mapping[str, Any], actual: Mapping[str, Any]
) -> dict[str, Any]:
    """Create when absent, server-side apply when the desired content changed."""
    if not actual:
        return await api.create(collection, desired)
    if _differs(actual, desired):
        await api.apply(path, desired)
    return dict(actual)


async def _read_children(
    api: Kube, camera: Camera
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    deployment, secret = await asyncio.gather(
        api.get(paths.deployments(camera.namespace, camera.deployment_name), cached=True),
        api.get(paths.secrets(camera.namespace, camera.secret_name), cached=True),
    )
    return deployment, secret


async def _observe_room(
    ctx: Context, camera: Camera, previous_status: Mapping[str, Any], logger: logging.Logger
) -> tuple[RoomState, str | None]:
    """Ensure the room (LiveKit closes idle rooms) and see who is in it; never raises."""
    try:
        await ctx.livekit.ensure_room(camera.room)
        room = await ctx.livekit.room_state(camera.room, camera.identity)
        old_room = previous_status.get("room")
        if old_room and old_room != camera.room:
            await ctx.livekit.delete_room(str(old_room))  # spec.room changed: retire the old one
    except LiveKitUnavailable as exc:
        ctx.metrics.errors.labels(kind="livekit").inc()
        logger.warning("LiveKit unavailable: %s", exc)
        return RoomState(publishing_video=False, attributes={}, viewers=0), str(exc)
    return room, None


def _within_grace(ctx: Context, uid: str, has_viewer: bool, *, running: bool) -> bool:
    """Keep a running on-demand ingest for the grace period after the room was first seen
    without a viewer (a viewer who reloads the page should not wait for a cold start). An
    operator that restarts counts the grace from its first look at a running, idle ingest."""
    if has_viewer or not running:
        ctx.idle_since.pop(uid, None)
        return has_viewer
    now = time.monotonic()
    since = ctx.idle_since.setdefault(uid, now)
    return now - since < ctx.settings.on_demand_grace_seconds


def grace_over(ctx: Context, uid: str) -> bool:
    since = ctx.idle_since.get(uid)
    return since is not None and time.monotonic() - since >= ctx.settings.on_demand_grace_seconds


def timer_offset(uid: str, interval: float) -> float:
    """A stable per-Camera offset in [0, interval/2): spreads the timers of Cameras created
    together (a burst of 1,000) instead of firing them all in the same second."""
    return (int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) / 2**32) * interval / 2


async def resync(
    ctx: Context, body: kopf.Body, logger: logging.Logger, stopped: kopf.DaemonStopped
) -> None:
    """The timer's pass. The timer starts after interval/2; the first pass of each Camera waits
    its offset once, so it still runs within one interval and later passes stay spread. The wait
    ends early when kopf stops the timer (deletion, shutdown), which would otherwise wait for it.
    """
    uid = str((body.get("metadata") or {}).get("uid"))
    if uid not in ctx.timers_spread:
        ctx.timers_spread.add(uid)
        await stopped.wait(timer_offset(uid, ctx.settings.reconcile_interval_seconds))
        if stopped:
            return
    await sync(ctx, body, logger)


async def sync(ctx: Context, body: kopf.Body, logger: logging.Logger) -> None:
    """Bring one Camera's children, room and status to the desired state (idempotent)."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return  # the delete handler owns the rest of this Camera's life
    try:
        camera = Camera.from_body(body)
    except ValidationError as exc:
        # The CRD schema should have refused it (e.g. an older CRD is installed): no retry fixes it.
        ctx.metrics.errors.labels(kind="spec").inc()
        raise kopf.PermanentError(f"spec does not match camfleet's model: {exc}") from exc
    async with ctx.lock(camera.uid):
        started = time.perf_counter()
        try:
            await _sync(ctx, camera, body, logger)
        finally:
            ctx.metrics.reconcile_seconds.observe(time.perf_counter() - started)


async def _sync(ctx: Context, camera: Camera, body: kopf.Body, logger: logging.Logger) -> None:
    api, settings = ctx.api(), ctx.settings
    ns = camera.namespace
    faults: list[str] = []
    conflict: str | None = None
    previous_status: Mapping[str, Any] = body.get("status") or {}

    # The finalizer before anything outside Kubernetes exists: kopf adds it too, but its timers
    # may fire first, and a room created for a Camera without one leaks if it is deleted now.
    meta = body.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or [])
    if settings.finalizer() not in finalizers:
        try:
            await api.merge_patch(
                paths.camera(ns, camera.name),
                {
                    "metadata": {
                        "finalizers": [*finalizers, settings.finalizer()],
                        "resourceVersion": meta.get("resourceVersion"),
                    }
                },
            )
        except KubeError as exc:  # 409: the Camera changed meanwhile; the next pass sees it
            raise kopf.TemporaryError(f"finalizer not added yet: {exc}", delay=0.5) from exc

    # Reads first, all at once: the children from the API server's watch cache (a stale
    # "absent" ends in a 409 and a retry, a stale "different" in a no-op apply; both converge,
    # and etcd is spared quorum reads) and the room from LiveKit.
    try:
        (deployment, secret), (room, livekit_error) = await asyncio.gather(
            _read_children(api, camera), _observe_room(ctx, camera, previous_status, logger)
        )
    except KubeError as exc:
        ctx.metrics.errors.labels(kind="kubernetes").inc()
        raise kopf.TemporaryError(
            f"cannot read children: {exc}", delay=settings.transient_retry_delay_seconds
        ) from exc
    if livekit_error:
        faults.append("livekit")
    created_now = deployment is None

    current_replicas = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
    # While LiveKit cannot say whether anyone watches, an on-demand ingest keeps its state.
    has_viewer = room.viewers > 0 or (livekit_error is not None and current_replicas > 0)
    ctx.rooms[camera.room] = camera.uid
    ctx.cameras[(camera.namespace, camera.name)] = camera.uid
    if camera.spec.on_demand:
        has_viewer = _within_grace(ctx, camera.uid, has_viewer, running=current_replicas > 0)
    replicas = desired_replicas(camera, has_viewer=has_viewer)

    # Ownership before any write; a name someone else holds is reported, never adopted (and a
    # Deployment must never mount a token Secret that is not ours).
    if secret and not owned_by(secret, camera):
        conflict = conflict_message("Secret", camera, camera.secret_name)
    elif deployment and not owned_by(deployment, camera):
        conflict = conflict_message("Deployment", camera, camera.deployment_name)
    else:
        token = issued_token(secret) if secret else None
        if token is None or needs_rotation(
            token,
            room=camera.room,
            identity=camera.identity,
            issuer=ctx.livekit.issuer,
            now=int(time.time()),
            margin=settings.token_rotation_margin_seconds,
        ):
            if token is not None:
                logger.info("LiveKit token rotated (old one expires at %d)", token.expires_at)
            token = ctx.livekit.mint_token(
                room=camera.room, identity=camera.identity, name=camera.ref
            )
        # Both writes at once: a pod started before its Secret exists just waits for the mount.
        results = await asyncio.gather(
            _ensure_child(
                api,
                paths.secrets(ns),
                paths.secrets(ns, camera.secret_name),
                build_secret(camera, token),
                secret or {},
            ),
            _ensure_child(
                api,
                paths.deployments(ns),
                paths.deployments(ns, camera.deployment_name),
                build_deployment(camera, ctx.defaults, replicas=replicas),
                deployment or {},
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Conflict):
                # Someone created the child between our read and our create: next pass sees it.
                faults.append("conflict")
                ctx.metrics.errors.labels(kind="conflict").inc()
                logger.info("write conflict, will retry: %s", result)
            elif isinstance(result, KubeError):
                faults.append("kubernetes")
                ctx.metrics.errors.labels(kind="kubernetes").inc()
                logger.warning("Kubernetes API error: %s", result)
            elif isinstance(result, BaseException):
                raise result
        if not isinstance(results[1], BaseException):
            deployment = results[1]

    pod_state: dict[str, Any] = {}
    # A Deployment created in this pass has no pods yet: nothing to ask for.
    if deployment and not conflict and not created_now:
        selector = f"{c.LABEL_NAME}={c.APP_NAME},{c.LABEL_CAMERA}={camera.name}"
        try:
            pods = await api.list(paths.pods(ns), label_selector=selector, cached=True)
            pod_state = observe_pods(pods)
        except KubeError as exc:
            faults.append("kubernetes")
            logger.warning("cannot list ingest pods: %s", exc)
    pod_state.setdefault(
        "ready_replicas", int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    )
    observed = Observed(
        desired_replicas=replicas,
        publishing_video=room.publishing_video,
        attributes=room.attributes,
        conflict=conflict,
        livekit_error=livekit_error,
        **pod_state,
    )
    status = compute_status(camera, observed, previous_status, datetime.now(UTC))
    await _write_status(ctx, camera, body, previous_status, status, logger)

    if faults:
        raise kopf.TemporaryError(
            f"reconcile incomplete ({', '.join(sorted(set(faults)))})",
            delay=settings.transient_retry_delay_seconds,
        )


async def _write_status(
    ctx: Context,
    camera: Camera,
    body: kopf.Body,
    previous: Mapping[str, Any],
    status: Mapping[str, Any],
    logger: logging.Logger,
) -> None:
    ctx.metrics.set_phase(camera.uid, status["phase"])
    patch = status_patch(previous, status)
    if not patch:
        return
    try:
        await ctx.api().merge_patch(
            paths.camera_status(camera.namespace, camera.name), {"status": patch}
        )
    except KubeError as exc:
        ctx.metrics.errors.labels(kind="status").inc()
        raise kopf.TemporaryError(f"status not written: {exc}", delay=1) from exc
    old_phase, new_phase = previous.get("phase"), status["phase"]
    ready = next(cond for cond in status["conditions"] if cond["type"] == c.COND_READY)
    if old_phase != new_phase:
        logger.info("phase %s -> %s (%s)", old_phase or "-", new_phase, ready["reason"])
        kopf.event(
            body,
            type="Warning" if new_phase in WARNING_PHASES else "Normal",
            reason=c.EVENT_PHASE_CHANGED,
            message=f"{old_phase or 'New'} -> {new_phase}: {ready['reason']}: {ready['message']}",
        )
    previous_ready: Mapping[str, Any] = next(
        (x for x in previous.get("conditions") or [] if x.get("type") == c.COND_READY), {}
    )
    if ready["reason"] == c.REASON_CHILD_CONFLICT and previous_ready.get("reason") != (
        c.REASON_CHILD_CONFLICT
    ):
        kopf.event(body, type="Warning", reason=c.REASON_CHILD_CONFLICT, message=ready["message"])


async def finalize(ctx: Context, body: kopf.Body, retry: int, logger: logging.Logger) -> None:
    """Delete the room and the children; give up on LiveKit after bounded retries."""
    camera = Camera.from_body(body)
    settings = ctx.settings
    async with ctx.lock(camera.uid):
        rooms = {camera.room, str((body.get("status") or {}).get("room") or camera.room)}
        try:
            for room in sorted(rooms):
                await ctx.livekit.delete_room(room)
        except LiveKitUnavailable as exc:
            ctx.metrics.errors.labels(kind="livekit").inc()
            if retry < settings.delete_retries:
                raise kopf.TemporaryError(
                    f"LiveKit room not deleted yet: {exc}",
                    delay=settings.delete_retry_delay_seconds,
                ) from exc
            left = ", ".join(sorted(rooms))
            message = (
                f"LiveKit room(s) {left} left behind on {settings.api_url()} after "
                f"{retry + 1} attempts ({exc}); delete them by hand or let LiveKit's "
                "empty timeout close them"
            )
            logger.warning(message)
            kopf.event(body, type="Warning", reason=c.EVENT_CLEANUP_INCOMPLETE, message=message)
        api = ctx.api()
        # Garbage collection would remove the children too; deleting them here makes a Camera
        # deletion finish with its pods stopped instead of some time later.
        try:
            for path in (
                paths.deployments(camera.namespace, camera.deployment_name),
                paths.secrets(camera.namespace, camera.secret_name),
            ):
                child = await api.get(path)
                if child and owned_by(child, camera):
                    await api.delete(path, uid=child["metadata"]["uid"])
        except KubeError as exc:
            ctx.metrics.errors.labels(kind="kubernetes").inc()
            raise kopf.TemporaryError(f"children not deleted yet: {exc}", delay=1) from exc
    ctx.metrics.set_phase(camera.uid, None)
    ctx.locks.pop(camera.uid, None)
    ctx.timers_spread.discard(camera.uid)
    ctx.wakeups.pop(camera.uid, None)
    ctx.idle_since.pop(camera.uid, None)
    for room in [r for r, uid in ctx.rooms.items() if uid == camera.uid]:
        del ctx.rooms[room]
    ctx.cameras.pop((camera.namespace, camera.name), None)
