"""TCP connections still in their handshake: a deadline each, and a count for the limit.

aiohttp waits for a request on a new connection for as long as the client likes, and a socket
that never finishes its request headers is not a WebSocket yet, so it counted toward nothing.
`Admission` sees every accepted connection (`AdmissionSite` wraps the server's protocol
factory), gives it `timeout` seconds to get through the handshake and counts it as pending
until then: the /ws handler adds the pending ones to the open WebSockets against
`max_connections` (503 beyond it), and connections more than `ACCEPT_HEADROOM` beyond it are
closed as soon as they are accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from overlay_gateway.metrics import Metrics

__all__ = ["ACCEPT_HEADROOM", "Admission", "AdmissionSite"]

ACCEPT_HEADROOM = 64


class Admission:
    def __init__(self, timeout: float, limit: int, metrics: Metrics) -> None:
        self.timeout = timeout
        self.limit = limit
        self.metrics = metrics
        self.websockets: Callable[[], int] = lambda: 0  # set by the app: open WebSockets
        self._pending: dict[RequestHandler, asyncio.TimerHandle] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def over_limit(self, extra: int = 0) -> bool:
        """Whether open WebSockets + pending handshakes + `extra` exceed the limit."""
        if self.websockets() + len(self._pending) + extra <= self.limit:
            return False
        self._forget_closed()  # only near the limit: an O(pending) sweep
        return self.websockets() + len(self._pending) + extra > self.limit

    def holds(self, handler: object) -> bool:
        return handler in self._pending

    def accepted(self, handler: RequestHandler) -> RequestHandler:
        loop = asyncio.get_running_loop()
        # A few over the limit are let in: an upgrade learns why from a 503 rather than from a
        # reset, and the kubelet's health probes still get through at full capacity.
        if self.over_limit(extra=-ACCEPT_HEADROOM):
            self.metrics.connections_refused.labels("capacity").inc()
            loop.call_soon(_abort, handler)
            return handler
        self._pending[handler] = loop.call_later(self.timeout, self._expire, handler)
        self.metrics.handshakes.set(len(self._pending))
        return handler

    def admit(self, handler: object) -> None:
        """The connection got through its handshake (or is a plain HTTP request)."""
        timer = self._pending.pop(handler, None)  # type: ignore[call-overload]
        if timer is not None:
            timer.cancel()
            self.metrics.handshakes.set(len(self._pending))

    def _expire(self, handler: RequestHandler) -> None:
        if self._pending.pop(handler, None) is not None:
            self.metrics.handshakes.set(len(self._pending))
            if handler.transport is not None:
                self.metrics.handshake_timeouts.inc()
                handler.transport.abort()

    def _forget_closed(self) -> None:
        for handler in [h for h in self._pending if _lost(h)]:
            self._pending.pop(handler).cancel()
        self.metrics.handshakes.set(len(self._pending))

    def close(self) -> None:
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()


def _lost(handler: RequestHandler) -> bool:
    # No transport both before connection_made and after connection_lost; aiohttp drops the
    # handler's manager (the server) only in the latter.
    return handler.transport is None and handler._manager is None


def _abort(handler: RequestHandler, tries: int = 3) -> None:
    if handler.transport is not None:
        handler.transport.abort()
    elif tries and not _lost(handler):
        # The transport schedules connection_made after the factory returned: look again.
        asyncio.get_running_loop().call_soon(_abort, handler, tries - 1)


class AdmissionSite(web.BaseSite):
    """A TCP site (as `web.TCPSite`) whose accepted connections go through `Admission` first."""

    __slots__ = ("_admission", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, admission: Admission, host: str, port: int, *, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._admission = admission
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        admission = self._admission

        def factory() -> RequestHandler:
            return admission.accepted(server())

        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
