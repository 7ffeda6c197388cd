"""``camfleet up``: the whole system on one machine, on loopback, with one command.

Starts the real servers of the test bed (kube-apiserver + etcd + kube-controller-manager, Redis,
livekit-server), then camfleet itself (operator, local pod runner, overlay gateway) and, unless
``--no-demo``, two synthetic RTSP cameras applied as ``Camera`` resources plus the example AI
worker. State lives in one directory (default ``./.camfleet``) and is reused by the next start,
so Cameras survive a restart; ``camfleet down`` stops a running stack and removes the state.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camfleet_archiver.settings import Settings as ArchiverSettings
from camfleet_dev.program_env import program_env, program_settings
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.postgres import PostgresServer, pg_bin
from camfleet_dev.testbed.process import ManagedProcess, StartError, free_port, http_ok
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.s3 import S3Server
from camfleet_dev.testbed.tools import MissingTool, repo_root, tool, tools_dir
from camfleet_operator.settings import Settings as OperatorSettings
from overlay_gateway.settings import Settings as GatewaySettings

DEMO_NAMESPACE = "demo"
DEMO_CAMERAS = {"lobby": "h264", "loading-dock": "h264"}

DEFAULT_PORTS = {
    "gateway": 8090,
    "kube": 16443,
    "livekit": 7880,
    "postgres": 15432,
    "redis": 16379,
    "rtsp": 8554,
    "s3": 17070,
}
#: The demo cameras record into this bucket of the local S3-compatible store (docs/recording.md).
RECORDING_BUCKET = "recordings"


class UpError(RuntimeError):
    """One clear line for a newcomer: what is wrong and what to do."""


@dataclass
class State:
    """What must be the same on every start of one state directory."""

    ports: dict[str, int]
    livekit_secret: str
    viewer_token: str
    cameras: list[str] = field(default_factory=list)

    @classmethod
    def load_or_create(cls, path: Path, ports: dict[str, int]) -> State:
        if path.exists():
            data = json.loads(path.read_text())
            state = cls(**data)
            state.ports.update({k: v for k, v in ports.items() if k not in state.ports})
            return state
        return cls(
            ports=ports,
            livekit_secret=secrets.token_hex(24),
            viewer_token=secrets.token_urlsafe(18),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2))
        path.chmod(0o600)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_ports(ports: dict[str, int]) -> None:
    for name, port in ports.items():
        if not port_free(port):
            flag = f"--{name}-port"
            raise UpError(
                f"port {port} ({name}) is in use: stop what uses it "
                f"(is another `camfleet up` running? try `camfleet down`) or pass {flag}"
            )


def check_tools() -> None:
    for name in ("kube-apiserver", "etcd", "kube-controller-manager", "kubectl"):
        tool(name)
    tool("livekit-server")
    tool("versitygw")
    tool("redis-server")
    pg_bin("postgres")


def camera_reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("rtsp", "rtsps") or not parsed.hostname:
        raise UpError(f"camera URL {redact(url)} is not an rtsp:// or rtsps:// URL")
    port = parsed.port or (322 if parsed.scheme == "rtsps" else 554)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def redact(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def camera_manifest(
    name: str, namespace: str, url: str, secret: str | None, *, record: bool = False
) -> str:
    source: dict[str, Any] = {"url": url}
    if secret:
        source["credentialsSecretRef"] = {"name": secret}
    spec: dict[str, Any] = {"source": source}
    if record:
        spec["recording"] = {"mode": "continuous", "retention": "1d"}
    return json.dumps(
        {
            "apiVersion": "camfleet.io/v1alpha1",
            "kind": "Camera",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """rtsp://user:pass@host/... → (rtsp://host/..., user, pass): the CRD refuses inline creds."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.username is None:
        return url, None, None
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    clean = urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    return (
        clean,
        urllib.parse.unquote(parsed.username),
        urllib.parse.unquote(parsed.password or ""),
    )


class Progress:
    """One line per component: waiting, then up (with how long it took) or failed."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        start = time.monotonic()
        print(f"  [wait] {name} {detail}".rstrip(), file=self.out, flush=True)
        try:
            yield
        except BaseException:
            print(f"  [fail] {name}", file=self.out, flush=True)
            raise
        took = time.monotonic() - start
        print(f"  [ up ] {name} ({took:.1f}s)", file=self.out, flush=True)


@dataclass
class UpOptions:
    state_dir: Path
    ports: dict[str, int]
    demo: bool = True
    cameras: list[str] = field(default_factory=list)
    ai_worker: bool = True


class Stack:
    def __init__(self, options: UpOptions) -> None:
        self.options = options
        self.state_dir = options.state_dir.resolve()
        self.log_dir = self.state_dir / "logs"
        self.stack = contextlib.ExitStack()
        self.progress = Progress()
        self.state: State | None = None
        self.kube: KubeCluster | None = None
        self.viewer_url = ""

    def _process(
        self, name: str, argv: list[str], env: dict[str, str], ready: Callable[[], bool]
    ) -> ManagedProcess:
        proc = ManagedProcess(
            name, argv, log_dir=self.log_dir, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        )
        proc.start()
        self.stack.callback(proc.stop)
        proc.wait_until(ready, 90, "ready")
        return proc

    def start(self) -> None:
        opts = self.options
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state_file = self.state_dir / "state.json"
        state = State.load_or_create(state_file, dict(opts.ports))
        self.state = state
        check_tools()
        check_ports(state.ports)
        for url in opts.cameras:
            if not camera_reachable(url):
                raise UpError(f"camera {redact(url)} does not answer (TCP connect failed)")
        state.save(state_file)
        (self.state_dir / "up.pid").write_text(str(os.getpid()))
        self.stack.callback(lambda: (self.state_dir / "up.pid").unlink(missing_ok=True))
        ports = state.ports
        py = sys.executable

        print(f"camfleet up: state in {self.state_dir}", flush=True)
        with self.progress.step("kube-apiserver + etcd + kube-controller-manager"):
            kube = self.stack.enter_context(
                KubeCluster(self.state_dir / "kube", api_port=ports["kube"])
            )
            self.kube = kube
            kube.kubectl("apply", "--server-side", "-f", str(repo_root() / "crds" / "camera.yaml"))
            kube.wait_established("cameras.camfleet.io")
        with self.progress.step("redis-server", f"redis://127.0.0.1:{ports['redis']}"):
            redis = self.stack.enter_context(
                RedisServer(self.state_dir / "redis", port=ports["redis"])
            )
        with self.progress.step("postgresql", f"127.0.0.1:{ports['postgres']}"):
            postgres = self.stack.enter_context(
                PostgresServer(self.state_dir / "postgres", port=ports["postgres"])
            )
        with self.progress.step("archiver"):
            archiver_port = free_port()
            self._process(
                "archiver",
                [py, "-m", "camfleet_archiver"],
                {
                    **program_env(
                        program_settings(
                            ArchiverSettings,
                            {
                                "host": "127.0.0.1",
                                "port": archiver_port,
                                "redis_url": redis.url,
                                "postgres_dsn": postgres.dsn,
                                "consumer": "camfleet-up",
                                "kube_enabled": True,
                                "kubeconfig": kube.kubeconfig,
                            },
                        )
                    ),
                },
                lambda: http_ok(f"http://127.0.0.1:{archiver_port}/healthz"),
            )
        with self.progress.step("S3-compatible store (recordings)", f"127.0.0.1:{ports['s3']}"):
            s3 = self.stack.enter_context(S3Server(self.state_dir / "s3", port=ports["s3"]))
            s3.create_bucket(RECORDING_BUCKET)
        # livekit-server posts room events to the operator (on-demand cameras start at once).
        webhook = free_port()
        with self.progress.step("livekit-server", f"ws://127.0.0.1:{ports['livekit']}"):
            livekit = self.stack.enter_context(
                LiveKitServer(
                    self.state_dir / "livekit",
                    port=ports["livekit"],
                    api_secret=state.livekit_secret,
                    webhook_urls=[f"http://127.0.0.1:{webhook}/livekit/webhook"],
                )
            )
        with self.progress.step("operator"):
            health = free_port()
            operator = program_settings(
                OperatorSettings,
                {
                    "livekit_url": livekit.url,
                    "livekit_api_key": livekit.api_key,
                    "livekit_api_secret": livekit.api_secret,
                    "metrics_port": free_port(),
                    "liveness_endpoint": f"http://127.0.0.1:{health}/healthz",
                    "reconcile_interval_seconds": 10,
                    "webhook_host": "127.0.0.1",
                    "webhook_port": webhook,
                    "recording_store_url": f"s3://{RECORDING_BUCKET}/camfleet-up",
                    "recording_s3_endpoint": s3.endpoint,
                    "recording_s3_region": s3.region,
                    "recording_s3_access_key_id": s3.access_key_id,
                    "recording_s3_secret_access_key": s3.secret_access_key,
                    "recording_index_dsn": postgres.dsn,
                },
            )
            self._process(
                "operator",
                [py, "-m", "camfleet_operator"],
                {**program_env(operator), "KUBECONFIG": str(kube.kubeconfig)},
                lambda: http_ok(f"http://127.0.0.1:{health}/healthz"),
            )
        with self.progress.step("local pod runner"):
            self._process(
                "localrunner",
                [
                    *(py, "-m", "camfleet_dev.cli", "localrunner"),
                    *("--kubeconfig", str(kube.kubeconfig)),
                    *("--work-dir", str(self.state_dir / "pods")),
                ],
                {},
                lambda: True,
            )
        gateway = ports["gateway"]
        with self.progress.step("overlay gateway", f"http://127.0.0.1:{gateway}"):
            self._process(
                "gateway",
                [py, "-m", "overlay_gateway"],
                program_env(
                    program_settings(
                        GatewaySettings,
                        {
                            "host": "127.0.0.1",
                            "port": gateway,
                            "redis_url": redis.url,
                            "auth_modes": ["static"],
                            "static_token": state.viewer_token,
                            "kubeconfig": kube.kubeconfig,
                            "livekit_url": livekit.url,
                            "livekit_api_key": livekit.api_key,
                            "livekit_api_secret": livekit.api_secret,
                            "postgres_dsn": postgres.dsn,
                            "recording_store_url": f"s3://{RECORDING_BUCKET}/camfleet-up",
                            "recording_s3_public_endpoint": s3.endpoint,
                            "recording_s3_region": s3.region,
                            "recording_s3_access_key_id": s3.access_key_id,
                            "recording_s3_secret_access_key": s3.secret_access_key,
                        },
                    )
                ),
                lambda: http_ok(f"http://127.0.0.1:{gateway}/healthz"),
            )
        if opts.demo:
            with self.progress.step("demo RTSP camera", f"rtsp://127.0.0.1:{ports['rtsp']}"):
                camera = self.stack.enter_context(
                    RtspCamera(self.state_dir / "rtsp", tools_dir() / "media", port=ports["rtsp"])
                )
            kube.kubectl("create", "namespace", DEMO_NAMESPACE, check=False)
            for name, clip in DEMO_CAMERAS.items():
                kube.apply(
                    camera_manifest(name, DEMO_NAMESPACE, camera.url(clip), None, record=True)
                )
                state.cameras = sorted({*state.cameras, f"{DEMO_NAMESPACE}/{name}"})
        for i, url in enumerate(opts.cameras):
            clean, user, password = split_credentials(url)
            name = f"camera-{i + 1}"
            secret = None
            if user is not None:
                secret = f"{name}-credentials"
                kube.kubectl(
                    *("create", "secret", "generic", secret, "-n", "default"),
                    f"--from-literal=username={user}",
                    f"--from-literal=password={password}",
                    check=False,
                )
            kube.apply(camera_manifest(name, "default", clean, secret))
        state.save(state_file)
        if opts.demo and opts.ai_worker:
            worker = repo_root() / "examples" / "ai_worker.py"
            for cam in (f"{DEMO_NAMESPACE}/{n}" for n in DEMO_CAMERAS):
                with self.progress.step(f"example AI worker ({cam})"):
                    self._process(
                        f"ai-worker-{cam.replace('/', '-')}",
                        [py, str(worker), "--camera", cam, "--redis-url", redis.url],
                        {
                            "LIVEKIT_URL": livekit.url,
                            "LIVEKIT_API_KEY": livekit.api_key,
                            "LIVEKIT_API_SECRET": livekit.api_secret,
                        },
                        lambda: True,
                    )
        self.viewer_url = f"http://127.0.0.1:{gateway}/#token={state.viewer_token}"

    def stop(self) -> None:
        self.stack.close()


def run_up(options: UpOptions) -> int:
    stack = Stack(options)
    try:
        stack.start()
    except (UpError, MissingTool, StartError) as exc:
        first = str(exc).splitlines()[0]
        print(f"camfleet: {first}", file=sys.stderr)
        if isinstance(exc, StartError):
            print(f"camfleet: logs are in {stack.log_dir}", file=sys.stderr)
        stack.stop()
        return 1
    except BaseException:
        stack.stop()
        raise
    assert stack.kube is not None
    print()
    print(f"Viewer:      {stack.viewer_url}")
    print(f"Kubeconfig:  {stack.kube.kubeconfig}")
    print(f"Try:         kubectl --kubeconfig {stack.kube.kubeconfig} get cam -A")
    print(f"Logs:        {stack.log_dir}")
    print("camfleet is up; Ctrl-C stops everything.", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            time.sleep(0.2)
    finally:
        print("stopping ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return 0


def run_down(state_dir: Path, keep_state: bool = False) -> int:
    """Stop a running ``camfleet up`` of this state directory, then remove its state."""
    state_dir = state_dir.resolve()
    pid_file = state_dir / "up.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().strip() or 0)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.2)
            print(f"camfleet: {pid} did not stop in 60 s", file=sys.stderr)
            return 1
        print(f"stopped camfleet up ({pid})")
    if not keep_state and state_dir.exists():
        import shutil

        shutil.rmtree(state_dir)
        print(f"removed {state_dir}")
    elif not state_dir.exists():
        print(f"nothing to clean up in {state_dir}")
    return 0
