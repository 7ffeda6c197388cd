"""The whole media path for the viewer tests and the drift benchmark, on the test bed's servers.

RTSP test camera → `camfleet-ingest` (subprocess) → livekit-server → Chromium, and
`examples/ai_worker.py` (subprocess, reads the same room) → Redis → the gateway (in-process,
Kubernetes bearer-token auth against the real kube-apiserver) → the page's WebSocket.

The page is reached through `TcpProxy`, a byte pump in front of the gateway that a test can cut
(all connections dropped, new ones refused) to play a network outage between browser and gateway;
WebRTC goes straight to livekit-server and keeps playing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from camfleet_dev.gateway import RunningGateway, run_gateway
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.process import ManagedProcess, free_port, http_ok
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.tools import repo_root
from overlay_gateway.settings import AuthMode, Settings

INGEST = str(Path(sys.executable).with_name("camfleet-ingest"))
CAMERA_NAME = "lobby"

VIEWER_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: viewer, namespace: {ns}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: outsider, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: camera-viewer, namespace: {ns}}}
rules:
  - apiGroups: [camfleet.io]
    resources: [cameras/view]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: viewer-can-view, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: camera-viewer}}
subjects:
  - {{kind: ServiceAccount, name: viewer, namespace: {ns}}}
"""


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` plays a network outage."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.down = False
        self.links: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.links.discard(dst)
            dst.transport.abort()

    def cut(self) -> None:
        """Drop every connection (as a dead link would) and refuse new ones until `restore`."""
        self.down = True
        for w in list(self.links):
            w.transport.abort()
        self.links.clear()

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self.cut()
        for task in list(self.tasks):
            task.cancel()
        if self.server is not None:
            # Not wait_closed(): it would wait for every proxied connection's handler.
            self.server.close()


@dataclass
class ViewerStack:
    kube: KubeCluster
    redis: RedisServer
    livekit: LiveKitServer
    rtsp: RtspCamera
    workdir: Path
    namespace: str = field(default_factory=lambda: f"v-{secrets.token_hex(3)}")
    ingest: ManagedProcess | None = None
    worker: ManagedProcess | None = None
    gateway: RunningGateway | None = None
    proxy: TcpProxy | None = None
    _gateway_cm: contextlib.AbstractAsyncContextManager[RunningGateway] | None = None
    ingest_port: int = field(default_factory=free_port)
    # What the camera streams (a clip of the test camera) and extra ingest settings, e.g. the
    # audio variant with CAMFLEET_INGEST_AUDIO=auto; with_worker=False runs no AI worker.
    clip: str = "h264"
    ingest_env: dict[str, str] = field(default_factory=dict)
    with_worker: bool = True

    def __post_init__(self) -> None:
        self.workdir = self.workdir / self.namespace

    @property
    def camera(self) -> str:
        return f"{self.namespace}/{CAMERA_NAME}"

    @property
    def room(self) -> str:
        return f"{self.namespace}-{CAMERA_NAME}"

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def token(self, account: str) -> str:
        return self.kube.service_account_token(self.namespace, account)

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._kube_objects)
        self._start_ingest()
        if self.with_worker:
            self._start_worker()
        settings = Settings(
            port=0,
            redis_url=SecretStr(self.redis.url),
            auth_modes=[AuthMode.KUBERNETES],
            kubeconfig=self.kube.kubeconfig,
            livekit_url=self.livekit.url,
            livekit_api_key=SecretStr(self.livekit.api_key),
            livekit_api_secret=SecretStr(self.livekit.api_secret),
        )
        self._gateway_cm = run_gateway(settings)
        self.gateway = await self._gateway_cm.__aenter__()
        port = int(self.gateway.url.rsplit(":", 1)[1])
        self.proxy = TcpProxy("127.0.0.1", port)
        await self.proxy.start()
        assert self.ingest is not None
        await asyncio.to_thread(
            self.ingest.wait_until,
            lambda: http_ok(f"http://127.0.0.1:{self.ingest_port}/healthz"),
            60,
            "frames flowing (/healthz)",
        )

    def _kube_objects(self) -> None:
        self.kube.create_namespace(self.namespace)
        self.kube.apply(VIEWER_RBAC.format(ns=self.namespace))
        camera = {
            "apiVersion": "camfleet.io/v1alpha1",
            "kind": "Camera",
            "metadata": {"name": CAMERA_NAME, "namespace": self.namespace},
            "spec": {"source": {"url": self.rtsp.url(self.clip)}},
        }
        self.kube.apply(json.dumps(camera))
        # No operator runs here: the phase it would report is set by hand.
        self.kube.kubectl(
            *("patch", "camera", CAMERA_NAME, "-n", self.namespace),
            *("--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Live"}}'),
        )

    def _start_ingest(self) -> None:
        identity = f"ingest-{self.namespace}-{CAMERA_NAME}"
        token = self.livekit.token(self.room, identity, publish=True)
        token_file = self.workdir / "publish-token"
        token_file.write_text(token)
        env = dict(
            os.environ,
            CAMFLEET_INGEST_CAMERA=self.camera,
            CAMFLEET_INGEST_SOURCE_URL=self.rtsp.url(self.clip),
            CAMFLEET_INGEST_MODE="passthrough",
            CAMFLEET_INGEST_LIVEKIT_URL=self.livekit.url,
            CAMFLEET_INGEST_TOKEN_FILE=str(token_file),
            CAMFLEET_INGEST_ROOM=self.room,
            CAMFLEET_INGEST_HTTP_HOST="127.0.0.1",
            CAMFLEET_INGEST_HTTP_PORT=str(self.ingest_port),
            CAMFLEET_INGEST_TERMINATION_LOG=str(self.workdir / "termination-log"),
            **self.ingest_env,
        )
        self.ingest = ManagedProcess("ingest", [INGEST], log_dir=self.workdir / "logs", env=env)
        self.ingest.start()

    def _start_worker(self) -> None:
        env = dict(
            os.environ,
            LIVEKIT_API_KEY=self.livekit.api_key,
            LIVEKIT_API_SECRET=self.livekit.api_secret,
        )
        self.worker = ManagedProcess(
            "ai-worker",
            [
                sys.executable,
                str(repo_root() / "examples" / "ai_worker.py"),
                *("--camera", self.camera, "--livekit-url", self.livekit.url),
                *("--redis-url", self.redis.url),
            ],
            log_dir=self.workdir / "logs",
            env=env,
        )
        self.worker.start()

    def ingest_metrics(self) -> str:
        url = f"http://127.0.0.1:{self.ingest_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(resp.read().decode())
        except (urllib.error.URLError, OSError):
            return ""

    def logs(self) -> str:
        parts = []
        for proc in (self.ingest, self.worker):
            if proc is not None:
                parts.append(f"--- {proc.name} ---\n{proc.log_tail(40)}")
        return "\n".join(parts)

    async def stop(self) -> None:
        """Stop everything, each step bounded and independent of the others' failures."""
        for proc in (self.worker, self.ingest):
            if proc is not None:
                await asyncio.to_thread(proc.stop, 5.0)
        if self.proxy is not None:
            self.proxy.close()
        if self._gateway_cm is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._gateway_cm.__aexit__(None, None, None), 15)
        await asyncio.to_thread(
            self.kube.kubectl, "delete", "namespace", self.namespace, "--wait=false", check=False
        )
