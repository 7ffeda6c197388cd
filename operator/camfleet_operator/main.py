"""kopf handler registration: decorators only, each delegating in one line."""

from typing import Any

import kopf

from camfleet import camera as cam
from camfleet_operator import constants as c
from camfleet_operator import follow, lifecycle, reconcile
from camfleet_operator.context import Context


def _label_filter(ctx: Context) -> dict[str, Any]:
    marks = {True: kopf.PRESENT, False: kopf.ABSENT}
    return {
        key: marks[value] if isinstance(value, bool) else value
        for key, value in ctx.settings.shard_labels().items()
    }


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """Register the Camera handlers on `registry`, bound to `ctx` (no module-level state)."""
    g, v, p = cam.GROUP, cam.VERSION, cam.PLURAL
    labels = _label_filter(ctx)
    interval = ctx.settings.reconcile_interval_seconds

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
        await lifecycle.startup(ctx, settings, logger)

    # A private registry does not get kopf's default login handlers. kopf's own piecewise
    # logins (in-cluster service account, else the kubeconfig): `login_via_client` needs the
    # official `kubernetes` library, which the operator image does not carry (it returned
    # nothing there, and the operator crash-looped on its first real node).
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await lifecycle.cleanup(ctx)

    @kopf.on.create(g, v, p, registry=registry, labels=labels, id="sync-on-create")
    async def created(body: kopf.Body, logger: Any, **_: Any) -> None:
        await reconcile.sync(ctx, body, logger)

    @kopf.on.update(g, v, p, registry=registry, labels=labels, id="sync-on-update")
    async def updated(body: kopf.Body, logger: Any, **_: Any) -> None:
        await reconcile.sync(ctx, body, logger)

    @kopf.on.resume(g, v, p, registry=registry, labels=labels, id="sync-on-resume")
    async def resumed(body: kopf.Body, logger: Any, **_: Any) -> None:
        await reconcile.sync(ctx, body, logger)

    # Level-triggered safety net: drift repair, token rotation, status from pods and LiveKit.
    @kopf.timer(
        g,
        v,
        p,
        registry=registry,
        labels=labels,
        id="resync",
        interval=interval,
        initial_delay=interval / 2,
    )
    async def resync(body: kopf.Body, logger: Any, **kwargs: Any) -> None:
        await reconcile.resync(ctx, body, logger, kwargs["stopped"])  # kopf's TimerFn omits it

    # Event-driven passes: LiveKit webhooks and ingest pod events wake each Camera's follower.
    @kopf.daemon(
        g,
        v,
        p,
        registry=registry,
        labels=labels,
        id="follow",
        cancellation_timeout=5.0,
    )
    async def follow_camera(
        body: kopf.Body, logger: Any, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        await follow.follow(ctx, body, logger, stopped)

    @kopf.on.event("", "v1", "pods", registry=registry, labels={c.LABEL_MANAGED_BY: c.MANAGED_BY})
    def ingest_pod(body: kopf.Body, type: str | None, **_: Any) -> None:
        ctx.pod_changed(body, deleted=type == "DELETED")

    @kopf.on.delete(g, v, p, registry=registry, labels=labels, id="finalize")
    async def deleted(body: kopf.Body, retry: int, logger: Any, **_: Any) -> None:
        await reconcile.finalize(ctx, body, retry, logger)
