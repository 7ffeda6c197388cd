"""The local pod runner: a kubelet stand-in for clusters without nodes (dev and tests only).

It watches the Pods that camfleet's ingest Deployments produce (through the real Deployment and
ReplicaSet controllers), binds each to a pretend node, runs its container command as a local
process with the same env and the Secret files below a per-pod directory, probes it, restarts it
with the kubelet's CrashLoopBackOff, and writes back what a kubelet would: phase, readiness,
restart count, the last termination message. The operator cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from camfleet_dev.localrunner.podspec import (
    PodSpecError,
    ProcessSpec,
    build_process_spec,
    referenced_objects,
)
from camfleet_dev.localrunner.status import ContainerState, Terminated, crash_backoff, pod_status
from camfleet_dev.testbed.process import die_with_parent, free_port

log = logging.getLogger("camfleet_dev.localrunner")

NODE_NAME = "camfleet-local"


@dataclass(frozen=True)
class RunnerOptions:
    work_dir: Path
    selector: str = "app.kubernetes.io/managed-by=camfleet-operator"
    namespace: str | None = None
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    secret_sync: float = 5.0
    extra_path: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class PodWorker:
    """Runs one Pod until it is deleted."""

    def __init__(self, api: client.ApiClient, pod: dict[str, Any], options: RunnerOptions):
        self.api = api
        self.core = client.CoreV1Api(api)
        self.pod = pod
        self.options = options
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        container = pod["spec"]["containers"][0]
        self.state = ContainerState(name=container["name"], image=container.get("image", ""))
        self.root = options.work_dir / self.namespace / self.name
        self.started = _now()
        self.host_ports: dict[int, int] = {
            int(p["containerPort"]): free_port() for p in container.get("ports", [])
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.deleting = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.crash_streak = 0

    # -- Kubernetes side --------------------------------------------------------------------
    async def _bind(self) -> None:
        if self.pod["spec"].get("nodeName"):
            return
        body: Any = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": self.name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
        }
        with contextlib.suppress(ApiException):
            # Raw response: the generated client cannot parse the Status this call returns.
            resp: Any = await self.core.create_namespaced_binding(
                self.namespace, body, _preload_content=False
            )
            resp.release()

    async def _report(self) -> None:
        status = pod_status(self.state, self.started, _now())
        try:
            await self.core.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("pod status patch failed: %s", exc.reason, extra=self._ctx())

    async def _fetch(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Secrets and ConfigMaps the pod refers to (absent ones are left out)."""
        secrets: dict[str, Any] = {}
        config_maps: dict[str, Any] = {}
        secret_names, cm_names = referenced_objects(self.pod)
        for name in secret_names:
            with contextlib.suppress(ApiException):
                secret = await self.core.read_namespaced_secret(name, self.namespace)
                secrets[name] = self._plain(secret)
        for name in cm_names:
            with contextlib.suppress(ApiException):
                cm = await self.core.read_namespaced_config_map(name, self.namespace)
                config_maps[name] = self._plain(cm)
        return secrets, config_maps

    async def _spec(self) -> ProcessSpec:
        secrets, config_maps = await self._fetch()
        return build_process_spec(
            self.pod,
            root=self.root,
            secrets=secrets,
            config_maps=config_maps,
            host_ports=self.host_ports,
        )

    def _plain(self, obj: Any) -> dict[str, Any]:
        """A typed client model as the plain dict the API server sent (camelCase keys)."""
        result: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return result

    def _ctx(self) -> dict[str, Any]:
        return {"pod": f"{self.namespace}/{self.name}"}

    # -- process side -----------------------------------------------------------------------
    def _write_files(self, spec: ProcessSpec) -> None:
        for path, data in spec.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_bytes() != data:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(data)
                tmp.chmod(0o600)
                tmp.replace(path)  # atomic, like the kubelet's symlink swap

    async def _probe(self, spec: ProcessSpec, session: aiohttp.ClientSession) -> None:
        """Readiness and liveness probes, as the kubelet runs them."""
        readiness, liveness = spec.readiness, spec.liveness
        failures = 0
        start = time.monotonic()
        period = (
            min(p.period for p in (readiness, liveness) if p is not None)
            if (readiness or liveness)
            else 1.0
        )
        while self.proc is not None and self.proc.returncode is None:
            await asyncio.sleep(min(period, 1.0))
            if readiness is not None and time.monotonic() - start >= readiness.initial_delay:
                ok = await _http_ok(session, readiness.port, readiness.path)
                if ok != self.state.ready:
                    self.state.ready = ok
                    await self._report()
            elif readiness is None and not self.state.ready:
                self.state.ready = True
                await self._report()
            if liveness is not None and time.monotonic() - start >= liveness.initial_delay:
                if await _http_ok(session, liveness.port, liveness.path):
                    failures = 0
                else:
                    failures += 1
                    if failures >= liveness.failure_threshold:
                        log.info("liveness probe failed; restarting", extra=self._ctx())
                        await self._terminate(spec.grace_seconds)
                        return

    async def _terminate(self, grace: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def _sync_secrets(self) -> None:
        """Refresh mounted Secret files while the process runs (token rotation)."""
        while True:
            await asyncio.sleep(self.options.secret_sync)
            with contextlib.suppress(PodSpecError, ApiException):
                self._write_files(await self._spec())

    async def run(self) -> None:
        await self._bind()
        await self._report()
        env_base = dict(os.environ)
        if self.options.extra_path:
            env_base["PATH"] = f"{self.options.extra_path}{os.pathsep}{env_base.get('PATH', '')}"
        async with aiohttp.ClientSession() as session:
            while not self.deleting.is_set():
                try:
                    spec = await self._spec()
                except PodSpecError as exc:
                    self.state.waiting_reason = "CreateContainerConfigError"
                    self.state.waiting_message = str(exc)
                    await self._report()
                    await self._sleep(5)
                    continue
                self._write_files(spec)
                spec.termination_log.parent.mkdir(parents=True, exist_ok=True)
                spec.termination_log.write_text("")
                log_file = (self.root / "container.log").open("ab")
                try:
                    self.proc = await asyncio.create_subprocess_exec(
                        *spec.argv,
                        env={**env_base, **spec.env},
                        stdout=log_file,
                        stderr=asyncio.subprocess.STDOUT,
                        stdin=asyncio.subprocess.DEVNULL,
                        start_new_session=True,
                        preexec_fn=die_with_parent(),
                        cwd=str(self.root),
                    )
                except OSError as exc:
                    log_file.close()
                    self.state.waiting_reason = "RunContainerError"
                    self.state.waiting_message = str(exc)
                    self.state.restart_count += 1
                    self.crash_streak += 1
                    await self._report()
                    await self._sleep(self._backoff())
                    continue
                log_file.close()
                # Where to reach the process (people and tests read it; kubectl logs can't).
                (self.root / "runner.json").write_text(
                    json.dumps({"pid": self.proc.pid, "ports": spec.ports, "argv0": spec.argv[0]})
                )
                started = _now()
                self.state.pid = self.proc.pid
                self.state.running_since = started
                self.state.ready = False
                self.state.waiting_reason = None
                self.state.waiting_message = None
                await self._report()
                log.info("started %s", spec.argv[0], extra=self._ctx())
                prober = asyncio.create_task(self._probe(spec, session))
                syncer = asyncio.create_task(self._sync_secrets())
                waiter = asyncio.create_task(self.proc.wait())
                deleted = asyncio.create_task(self.deleting.wait())
                await asyncio.wait({waiter, deleted}, return_when=asyncio.FIRST_COMPLETED)
                if self.deleting.is_set():
                    await self._terminate(spec.grace_seconds)
                for task in (prober, syncer, deleted, waiter):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                code = self.proc.returncode if self.proc.returncode is not None else -1
                ran = (_now() - started).total_seconds()
                message = ""
                with contextlib.suppress(OSError):
                    message = spec.termination_log.read_text(errors="replace").strip()
                self.state.last_terminated = Terminated(
                    exit_code=code if code >= 0 else 128 - code,
                    message=message,
                    started_at=started,
                    finished_at=_now(),
                    signal=-code if code < 0 else None,
                )
                self.state.running_since = None
                self.state.ready = False
                self.state.pid = None
                self.proc = None
                if self.deleting.is_set():
                    break
                # The kubelet forgets the back-off once a container ran long enough.
                self.crash_streak = 1 if ran > 60 else self.crash_streak + 1
                self.state.restart_count += 1
                delay = self._backoff()
                self.state.waiting_reason = "CrashLoopBackOff"
                self.state.waiting_message = (
                    f"back-off {delay:.0f}s restarting failed container={self.state.name}"
                )
                log.info("exited %s; restart in %.1fs", code, delay, extra=self._ctx())
                await self._report()
                await self._sleep(delay)
        await self._finish_delete()

    def _backoff(self) -> float:
        return crash_backoff(self.crash_streak, self.options.backoff_base, self.options.backoff_cap)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.deleting.wait(), timeout=seconds)

    async def _finish_delete(self) -> None:
        """Confirm the graceful deletion, as the kubelet does once the container stopped."""
        with contextlib.suppress(ApiException):
            await self.core.delete_namespaced_pod(self.name, self.namespace, grace_period_seconds=0)
        shutil.rmtree(self.root, ignore_errors=True)
        log.info("pod removed", extra=self._ctx())

    def start(self) -> None:
        self.task = asyncio.create_task(self._guarded(), name=f"pod:{self.namespace}/{self.name}")

    async def _guarded(self) -> None:
        """Run the pod; an unexpected error is logged and the pod tried again, never lost."""
        while not self.deleting.is_set():
            try:
                await self.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pod worker failed; retrying", extra=self._ctx())
                await self._terminate(5)
                await self._sleep(2)

    async def stop(self) -> None:
        self.deleting.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def _http_ok(session: aiohttp.ClientSession, port: int, path: str) -> bool:
    try:
        async with session.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=2)
        ) as resp:
            return 200 <= resp.status < 400
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


class LocalPodRunner:
    """Watches Pods and keeps one PodWorker per live Pod."""

    def __init__(self, api: client.ApiClient, options: RunnerOptions) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.options = options
        self.workers: dict[str, PodWorker] = {}

    async def run(self) -> None:
        self.options.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                try:
                    await self._watch()
                except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("pod watch interrupted: %s; retrying", exc)
                    await asyncio.sleep(1)
        finally:
            await asyncio.gather(*(w.stop() for w in self.workers.values()))

    async def _watch(self) -> None:
        kwargs: dict[str, Any] = {"label_selector": self.options.selector}
        if self.options.namespace:
            listing = await self.core.list_namespaced_pod(self.options.namespace, **kwargs)
        else:
            listing = await self.core.list_pod_for_all_namespaces(**kwargs)
        seen = set()
        for item in listing.items:
            pod: dict[str, Any] = self.api.sanitize_for_serialization(item)
            seen.add(self._key(pod))
            await self._on_event("ADDED", pod)
        for key in set(self.workers) - seen:
            await self.workers.pop(key).stop()
        func = (
            self.core.list_namespaced_pod
            if self.options.namespace
            else self.core.list_pod_for_all_namespaces
        )
        args = (self.options.namespace,) if self.options.namespace else ()
        w = watch.Watch()
        async with w.stream(
            func,
            *args,
            resource_version=listing.metadata.resource_version,
            timeout_seconds=300,
            **kwargs,
        ) as stream:
            async for event in stream:
                await self._on_event(event["type"], event["raw_object"])

    @staticmethod
    def _key(pod: dict[str, Any]) -> str:
        return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"

    async def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        key = self._key(pod)
        worker = self.workers.get(key)
        gone = kind == "DELETED" or pod["metadata"].get("deletionTimestamp")
        if gone:
            if worker is not None:
                self.workers.pop(key)
                asyncio.create_task(worker.stop())  # noqa: RUF006 - awaited by worker.task
            elif kind != "DELETED":
                # Bound earlier (e.g. by a runner that restarted): confirm the deletion.
                with contextlib.suppress(ApiException):
                    await self.core.delete_namespaced_pod(
                        pod["metadata"]["name"],
                        pod["metadata"]["namespace"],
                        grace_period_seconds=0,
                    )
            return
        if worker is None and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            worker = PodWorker(self.api, pod, self.options)
            self.workers[key] = worker
            worker.start()
        elif worker is not None:
            worker.pod = pod


async def run_runner(kubeconfig: Path | None, options: RunnerOptions) -> None:
    api = await config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
    try:
        await LocalPodRunner(api, options).run()
    finally:
        await api.close()
