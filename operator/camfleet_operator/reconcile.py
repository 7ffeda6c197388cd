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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from camfleet.camera import Camera, CameraStatus, ingest_deployment_name
from camfleet_operator import constants as c
from camfleet_operator import kube as paths
from camfleet_operator.builders.deployment import build_deployment, desired_replicas, records
from camfleet_operator.builders.secret import build_secret, issued_token, needs_rotation
from camfleet_operator.conditions import (
    Observed,
    compute_status,
    parse_status,
    refused_status,
    spec_problems,
    status_body,
    status_patch,
)
from camfleet_operator.context import Context
from camfleet_operator.kube import Conflict, Kube, KubeError
from camfleet_operator.livekit import LiveKitUnavailable, RoomState
from camfleet_operator.pods import observe_pods

WARNING_PHASES = frozenset({c.PHASE_DEGRADED, c.PHASE_FAILED})
WARNING_REASONS = frozenset(
    {c.REASON_CHILD_CONFLICT, c.REASON_INVALID_SPEC, c.REASON_MALFORMED_URL}
)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Is the Camera with `uid` the controller of `obj` (never adopt what is not ours)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


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
    ctx: Context, camera: Camera, previous: CameraStatus | None, logger: logging.Logger
) -> tuple[RoomState, str | None]:
    """Ensure the room (LiveKit closes idle rooms) and see who is in it; never raises."""
    try:
        await ctx.livekit.ensure_room(camera.room)
        room = await ctx.livekit.room_state(camera.room, camera.identity)
        old_room = previous.room if previous else None
        if old_room and old_room != camera.room:
            await ctx.livekit.delete_room(old_room)  # spec.room changed: retire the old one
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
        # The CRD schema should have refused it (an older CRD, or a Camera stored before its
        # rules): no retry fixes it, so it says why in its status until the spec is fixed.
        ctx.metrics.errors.labels(kind="spec").inc()
        await _refuse(ctx, body, exc, logger)
        return
    async with ctx.lock(camera.uid):
        started = time.perf_counter()
        try:
            await _sync(ctx, camera, body, logger)
        finally:
            ctx.metrics.reconcile_seconds.observe(time.perf_counter() - started)


async def _refuse(
    ctx: Context, body: kopf.Body, exc: ValidationError, logger: logging.Logger
) -> None:
    """A Camera the model refuses: Failed with the fields named, and its ingest (started by an
    operator that accepted the spec) scaled to zero; the room and Secret stay until deletion."""
    meta = body.get("metadata") or {}
    uid, namespace, name = str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name"))
    stored: Mapping[str, Any] = body.get("status") or {}
    previous = ctx.statuses.get(uid) or parse_status(stored)
    generation = int(meta.get("generation") or 1)
    status = refused_status(generation, spec_problems(exc), previous, datetime.now(UTC))
    async with ctx.lock(uid):
        api = ctx.api()
        path = paths.deployments(namespace, ingest_deployment_name(name))
        try:
            deployment = await api.get(path)
            if deployment and owned_by(deployment, uid) and deployment["spec"].get("replicas"):
                await api.merge_patch(path, {"spec": {"replicas": 0}})
        except KubeError as exc_:
            ctx.metrics.errors.labels(kind="kubernetes").inc()
            logger.warning("cannot stop the ingest of a refused Camera: %s", exc_)
        await _write_status(ctx, body, stored, previous, status, logger)


async def _sync(ctx: Context, camera: Camera, body: kopf.Body, logger: logging.Logger) -> None:
    api, settings = ctx.api(), ctx.settings
    ns = camera.namespace
    faults: list[str] = []
    conflict: str | None = None
    # The stored status as it is (the merge patch is computed against it) and as read back.
    stored_status: Mapping[str, Any] = body.get("status") or {}
    previous = ctx.statuses.get(camera.uid) or parse_status(stored_status)

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
            _read_children(api, camera), _observe_room(ctx, camera, previous, logger)
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
    ctx.track(camera)
    if camera.spec.on_demand:
        has_viewer = _within_grace(ctx, camera.uid, has_viewer, running=current_replicas > 0)
    replicas = desired_replicas(camera, has_viewer=has_viewer, defaults=ctx.defaults)

    # Ownership before any write; a name someone else holds is reported, never adopted (and a
    # Deployment must never mount a token Secret that is not ours).
    if secret and not owned_by(secret, camera.uid):
        conflict = conflict_message("Secret", camera, camera.secret_name)
    elif deployment and not owned_by(deployment, camera.uid):
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
                build_secret(
                    camera,
                    token,
                    settings.recording_secrets() if records(camera, ctx.defaults) else None,
                ),
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
        recording_store=ctx.defaults.recording is not None,
        **pod_state,
    )
    status = compute_status(camera, observed, previous, datetime.now(UTC))
    await _write_status(ctx, body, stored_status, previous, status, logger)

    if faults:
        raise kopf.TemporaryError(
            f"reconcile incomplete ({', '.join(sorted(set(faults)))})",
            delay=settings.transient_retry_delay_seconds,
        )


async def _write_status(
    ctx: Context,
    body: kopf.Body,
    stored: Mapping[str, Any],
    previous: CameraStatus | None,
    status: CameraStatus,
    logger: logging.Logger,
) -> None:
    meta = body.get("metadata") or {}
    uid, namespace, name = str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name"))
    assert status.phase is not None  # compute_status always sets it
    ctx.metrics.set_phase(uid, status.phase)
    patch = status_patch(stored, status_body(status))
    if not patch:
        ctx.statuses[uid] = status
        return
    try:
        await ctx.api().merge_patch(paths.camera_status(namespace, name), {"status": patch})
    except KubeError as exc:
        ctx.metrics.errors.labels(kind="status").inc()
        raise kopf.TemporaryError(f"status not written: {exc}", delay=1) from exc
    ctx.statuses[uid] = status
    old_phase, new_phase = (previous.phase if previous else None), status.phase
    ready = status.condition(c.COND_READY)
    assert ready is not None
    if old_phase != new_phase:
        logger.info("phase %s -> %s (%s)", old_phase or "-", new_phase, ready.reason)
        kopf.event(
            body,
            type="Warning" if new_phase in WARNING_PHASES else "Normal",
            reason=c.EVENT_PHASE_CHANGED,
            message=f"{old_phase or 'New'} -> {new_phase}: {ready.reason}: {ready.message}",
        )
    previous_ready = previous.condition(c.COND_READY) if previous else None
    # Reasons that need a person get a Warning of their own, once, when they appear.
    if ready.reason in WARNING_REASONS and (
        previous_ready is None or previous_ready.reason != ready.reason
    ):
        kopf.event(body, type="Warning", reason=ready.reason, message=ready.message)
    recording = status.condition(c.COND_RECORDING)
    before = previous.condition(c.COND_RECORDING) if previous else None
    if recording is None:
        return
    if recording.status == "False" and (
        before is None or (before.status, before.reason) != ("False", recording.reason)
    ):
        message = f"{recording.reason}: {recording.message}"
        kopf.event(body, type="Warning", reason=c.EVENT_RECORDING_GAP, message=message)
    elif recording.status == "True" and before is not None and before.status == "False":
        kopf.event(body, type="Normal", reason=c.EVENT_RECORDING_RESUMED, message=recording.message)


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
                if child and owned_by(child, camera.uid):
                    await api.delete(path, uid=child["metadata"]["uid"])
        except KubeError as exc:
            ctx.metrics.errors.labels(kind="kubernetes").inc()
            raise kopf.TemporaryError(f"children not deleted yet: {exc}", delay=1) from exc
    ctx.forget(camera)
