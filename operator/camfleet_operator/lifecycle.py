"""Operator start-up and shutdown: kopf's own settings, clients, the metrics endpoint."""

import logging
from typing import Any

import kopf

from camfleet_operator import constants as c
from camfleet_operator import webhook
from camfleet_operator.context import Context
from camfleet_operator.kube import Kube


async def startup(ctx: Context, operator_settings: kopf.OperatorSettings, logger: Any) -> None:
    settings = ctx.settings
    # Progress and diff-base in annotations only: status belongs to the Camera's API contract.
    operator_settings.persistence.finalizer = settings.finalizer()
    operator_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=settings.kopf_prefix()
    )
    operator_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=settings.kopf_prefix(), key="last-handled-configuration"
    )
    # Only our own Events (phase transitions, conflicts, clean-up) reach `kubectl describe`,
    # not one per handler run.
    operator_settings.posting.level = logging.WARNING
    # A kopf worker holds its slot for `idle_timeout` after its object went quiet; with the
    # default 5 s, 100 slots cap a burst of new Cameras at ~15/s. 1 s keeps batching of rapid
    # events per object while letting a slot serve the next Camera quickly.
    operator_settings.queueing.worker_limit = settings.max_workers
    operator_settings.queueing.idle_timeout = 1.0
    operator_settings.networking.request_timeout = 60
    # Ingest pods only, filtered by the API server: their events wake their Camera's pass.
    operator_settings.watching.label_selectors["", "v1", "pods"] = (
        f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY}"
    )
    operator_settings.watching.server_timeout = 300
    operator_settings.watching.client_timeout = 330
    ctx.kube = await Kube.connect(pool_size=min(settings.max_workers, 100))
    ctx.metrics.serve(settings.metrics_port)
    runner = await webhook.start(ctx)
    if runner is not None:
        ctx.closers.append(runner.cleanup)
    logger.info(
        "camfleet operator started: namespaces=%s shard=%r interval=%ss livekit=%s",
        settings.namespaces or "*",
        settings.shard_selector,
        settings.reconcile_interval_seconds,
        settings.api_url(),
    )


async def cleanup(ctx: Context) -> None:
    while ctx.closers:
        await ctx.closers.pop()()
    await ctx.livekit.close()
    if ctx.kube is not None:
        await ctx.kube.close()
        ctx.kube = None
