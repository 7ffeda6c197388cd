"""LiveKit's webhooks: who joined or left which room, so on-demand cameras start and stop fast.

livekit-server POSTs signed JSON to `POST /livekit/webhook`; `livekit-api`'s `WebhookReceiver`
checks the signature (a JWT with the body's sha256, made with our API key/secret) before
anything is trusted. A verified event only wakes the camera's reconcile: the reconcile asks
LiveKit (`list_participants`) itself, so a lost or reordered webhook cannot leave a wrong state,
and the timer's pass remains the safety net.
"""

import logging

from aiohttp import web
from livekit import api

from camfleet_operator.context import Context

log = logging.getLogger("camfleet_operator.webhook")
WEBHOOK_PATH = "/livekit/webhook"
CONTEXT: web.AppKey[Context] = web.AppKey("context", Context)
# Events that can change whether a room has a viewer or a publishing ingest.
ROOM_EVENTS = frozenset(
    {
        "participant_joined",
        "participant_left",
        "participant_connection_aborted",
        "track_published",
        "track_unpublished",
        "room_finished",
    }
)


async def receive(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await request.text()
    try:
        event = _receiver(ctx).receive(body, request.headers.get("Authorization", ""))
    except Exception as exc:  # any verification failure: a bad or missing signature
        ctx.metrics.errors.labels(kind="webhook").inc()
        log.warning("webhook refused: %s", type(exc).__name__)
        return web.Response(status=401, text="invalid signature\n")
    if event.event in ROOM_EVENTS and ctx.wake(event.room.name):
        log.debug("webhook %s in room %s", event.event, event.room.name)
    return web.Response(text="ok\n")


def _receiver(ctx: Context) -> api.WebhookReceiver:
    """A receiver with the secret as it is now: a rotated Secret needs no operator restart.

    Webhooks come a few per viewer join or leave, so re-reading the mounted file costs nothing.
    """
    settings = ctx.settings
    return api.WebhookReceiver(api.TokenVerifier(settings.livekit_api_key, settings.api_secret()))


def init_app(ctx: Context) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[CONTEXT] = ctx
    app.router.add_post(WEBHOOK_PATH, receive)
    return app


async def start(ctx: Context) -> web.AppRunner | None:
    """Serve the endpoint (port 0 disables it); the caller cleans the runner up at shutdown."""
    settings = ctx.settings
    if not settings.webhook_port:
        return None
    runner = web.AppRunner(init_app(ctx), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.webhook_host, settings.webhook_port).start()
    log.info("LiveKit webhooks on :%d%s", settings.webhook_port, WEBHOOK_PATH)
    return runner
