"""Typed application keys: what the handlers may find in the app."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from aiohttp import web

from overlay_gateway.admission import Admission
from overlay_gateway.auth import Authenticator, Authorizer
from overlay_gateway.broker import Broker
from overlay_gateway.channel import Channels
from overlay_gateway.freshness import Freshness
from overlay_gateway.history import History
from overlay_gateway.hub import Hub
from overlay_gateway.kube import KubeClient
from overlay_gateway.metrics import Metrics
from overlay_gateway.recordings import Recordings
from overlay_gateway.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
HUB = web.AppKey("hub", Hub)
REDIS = web.AppKey("redis", aioredis.Redis)
BROKER = web.AppKey("broker", Broker)
KUBE: web.AppKey[KubeClient | None] = web.AppKey("kube")
AUTHENTICATORS: web.AppKey[Sequence[Authenticator]] = web.AppKey("authenticators")
AUTHORIZER = web.AppKey("authorizer", Authorizer)
ADMISSION = web.AppKey("admission", Admission)
FRESHNESS = web.AppKey("freshness", Freshness)
HISTORY: web.AppKey[History | None] = web.AppKey("history")
CHANNELS = web.AppKey("channels", Channels)  # the open /ws connections
RECORDINGS: web.AppKey[Recordings | None] = web.AppKey("recordings")
