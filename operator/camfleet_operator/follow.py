"""Each Camera's follower: a kopf daemon that runs a pass as soon as something it depends on
changes (LiveKit webhooks for its room, its ingest pod's events), so that the status follows
the media path in seconds while the reconcile timer stays a slow safety net."""

import asyncio
import logging
import time

import kopf
from pydantic import ValidationError

from camfleet.camera import CameraSpec
from camfleet_operator import constants as c
from camfleet_operator.conditions import parse_status
from camfleet_operator.context import Context
from camfleet_operator.reconcile import grace_over, sync

# Not every change the status depends on comes with an event (the ingest's participant
# attributes do not): a Camera whose ingest runs but is not Live is looked at again after this
# long, doubling up to the cap while nothing changes. Pending needs no look: its pod's start is
# an event.
UNSETTLED_PHASES = frozenset({c.PHASE_CONNECTING, c.PHASE_DEGRADED})
UNSETTLED_POLL_SECONDS = 5.0
UNSETTLED_POLL_MAX_SECONDS = 60.0
ON_DEMAND_CHECK_SECONDS = 1.0


def _look(body: kopf.Body) -> tuple[bool, str | None]:
    """The Camera's `onDemand` and its stored phase, read through the contract models; a spec
    the models refuse counts as not on demand (the pass itself reports it in the status)."""
    try:
        on_demand = CameraSpec.model_validate(dict(body.get("spec") or {})).on_demand
    except ValidationError:
        on_demand = False
    status = parse_status(body.get("status"))
    return on_demand, (status.phase if status else None)


async def _woken(wakeup: asyncio.Event, stopped: kopf.DaemonStopped, within: float | None) -> bool:
    """Wait for a wake-up, the daemon's stop or the timeout; True only for a wake-up."""

    async def stop() -> None:
        await stopped.wait()

    waiters = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stop())]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return wakeup.is_set()


async def follow(
    ctx: Context, body: kopf.Body, logger: logging.Logger, stopped: kopf.DaemonStopped
) -> None:
    """A Camera's daemon: a pass as soon as something it depends on changed, so that the status
    follows the media path in seconds while the timer stays a slow safety net.

    Woken by LiveKit's webhooks for its room (viewers joining or leaving, the ingest's track)
    and by its ingest pod's events (readiness, restarts, termination); idle otherwise. Runs in
    the Camera's own kopf context, so the pass posts Events like any handler; its faults are
    left to the timer's next pass rather than retried here.
    """
    uid = str((body.get("metadata") or {}).get("uid"))
    wakeup = ctx.wakeup(uid)
    last_pass, poll, last_phase = time.monotonic(), UNSETTLED_POLL_SECONDS, None
    while not stopped:
        # kopf keeps `body` current: the spec as edited now, the phase our last pass wrote.
        on_demand, phase = _look(body)
        if phase != last_phase:
            last_phase, poll = phase, UNSETTLED_POLL_SECONDS
        timeout: float | None = None
        if phase in UNSETTLED_PHASES:
            timeout = max(0.0, last_pass + poll - time.monotonic())
        if on_demand:  # to stop an idle ingest when its grace period ends
            check = ON_DEMAND_CHECK_SECONDS
            timeout = check if timeout is None else min(timeout, check)
        if not await _woken(wakeup, stopped, timeout):
            if stopped:
                return
            if phase in UNSETTLED_PHASES and time.monotonic() - last_pass >= poll:
                poll = min(poll * 2, UNSETTLED_POLL_MAX_SECONDS)
            elif not (on_demand and grace_over(ctx, uid)):
                continue
        wakeup.clear()
        last_pass = time.monotonic()
        try:
            await sync(ctx, body, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            logger.info("event pass incomplete, the timer retries: %s", exc)
