"""On-demand: the idle grace period and the webhook endpoint's signature check (in-process app)."""

import base64
import hashlib
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from livekit import api

from camfleet_operator.context import Context
from camfleet_operator.reconcile import _within_grace, grace_over
from camfleet_operator.settings import Settings
from camfleet_operator.webhook import WEBHOOK_PATH, init_app

SECRET = "s" * 32


def context(grace: float, secret_file: Path | None = None) -> Context:
    settings = Settings(
        livekit_url="ws://127.0.0.1:7880",
        livekit_api_key="key",
        livekit_api_secret=None if secret_file else SECRET,  # type: ignore[arg-type]
        livekit_api_secret_file=secret_file,
        on_demand_grace_seconds=grace,
    )
    return Context.create(settings)


def test_grace_counts_from_the_first_idle_look_and_resets_on_a_viewer() -> None:
    ctx = context(grace=0.2)
    assert _within_grace(ctx, "u", True, running=True)
    assert _within_grace(ctx, "u", False, running=True)  # idle from now: keep running
    assert not grace_over(ctx, "u")
    time.sleep(0.25)
    assert grace_over(ctx, "u")
    assert not _within_grace(ctx, "u", False, running=True)
    assert _within_grace(ctx, "u", True, running=True)  # a viewer came back: grace cleared
    assert not grace_over(ctx, "u")
    assert not _within_grace(ctx, "u", False, running=False)  # stopped: stays stopped


def signed(body: str, secret: str = SECRET) -> str:
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = api.AccessToken("key", secret).with_ttl(timedelta(minutes=5))
    token.claims.sha256 = digest
    return token.to_jwt()


@pytest.mark.parametrize("forged", [False, True])
async def test_webhook_wakes_the_room_only_when_signed(forged: bool) -> None:
    ctx = context(grace=30)
    ctx.rooms["site-a-door"] = "u1"
    body = '{"event": "participant_joined", "room": {"name": "site-a-door"}}'
    auth = signed(body, "x" * 32 if forged else SECRET)
    async with TestClient(TestServer(init_app(ctx))) as client:
        resp = await client.post(WEBHOOK_PATH, data=body, headers={"Authorization": auth})
        assert resp.status == (401 if forged else 200)
        unsigned = await client.post(WEBHOOK_PATH, data=body)
        assert unsigned.status == 401
    assert ctx.wakeup("u1").is_set() is not forged
    await ctx.livekit.close()


async def test_webhook_follows_a_rotated_secret_file(tmp_path: Path) -> None:
    """The mounted Secret changes: webhooks signed with the new secret pass, the old fail."""
    secret_file = tmp_path / "api-secret"
    secret_file.write_text(SECRET + "\n")
    ctx = context(grace=30, secret_file=secret_file)
    ctx.rooms["site-a-door"] = "u1"
    body = '{"event": "participant_left", "room": {"name": "site-a-door"}}'
    rotated = "r" * 32
    async with TestClient(TestServer(init_app(ctx))) as client:
        ok = await client.post(WEBHOOK_PATH, data=body, headers={"Authorization": signed(body)})
        assert ok.status == 200
        secret_file.write_text(rotated + "\n")
        old = await client.post(WEBHOOK_PATH, data=body, headers={"Authorization": signed(body)})
        assert old.status == 401
        new = await client.post(
            WEBHOOK_PATH, data=body, headers={"Authorization": signed(body, rotated)}
        )
        assert new.status == 200
    await ctx.livekit.close()


def ingest_pod(*, ready: bool, restarts: int = 0, uid: str = "p1", **meta: str) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": uid,
            "namespace": "site-a",
            "labels": {"camfleet.io/camera": "door"},
            **meta,
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": "ingest",
                    "ready": ready,
                    "restartCount": restarts,
                    "state": {"running": {"startedAt": "2026-11-26T12:00:00Z"}},
                }
            ],
        },
    }


def test_an_ingest_pod_wakes_its_camera_only_when_its_look_changes() -> None:
    ctx = context(grace=30)
    ctx.cameras[("site-a", "door")] = "u1"
    wakeup = ctx.wakeup("u1")
    assert not ctx.pod_changed(ingest_pod(ready=False))  # first sight: recorded only
    assert not ctx.pod_changed(ingest_pod(ready=False))  # a resync: same look
    assert not wakeup.is_set()
    assert ctx.pod_changed(ingest_pod(ready=True))  # readiness flipped
    assert wakeup.is_set()
    wakeup.clear()
    assert ctx.pod_changed(ingest_pod(ready=True, restarts=1))  # a restart
    assert ctx.pod_changed(ingest_pod(ready=True, restarts=1, deletionTimestamp="now"))
    assert "p1" not in ctx.pod_looks  # forgotten with the pod
    ctx.pod_changed(ingest_pod(ready=True, uid="p3"))
    assert ctx.pod_changed(ingest_pod(ready=True, uid="p3"), deleted=True)
    assert "p3" not in ctx.pod_looks
    # A pod of a Camera this process does not serve (another shard) wakes nothing.
    other = ingest_pod(ready=True, uid="p2")
    other["metadata"]["labels"] = {"camfleet.io/camera": "elsewhere"}
    assert not ctx.pod_changed(other)
