"""Pure translation of a Pod's container into a local process (no I/O).

The runner plays the kubelet on a machine without one, so a container becomes a process:

- ``command`` + ``args`` run as they are (``$(VAR)`` references expanded as the kubelet does);
- ``env`` is resolved, including ``secretKeyRef`` / ``configMapKeyRef`` / ``fieldRef``;
- every volume mount lives under the pod's own directory: a path inside a mount, in an env value
  or an argument, is rewritten to the same path below that directory, and so is the
  container's ``terminationMessagePath``;
- every declared ``containerPort`` gets a free host port: env values and arguments equal to the
  container port become the host port, and probes are sent there.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = Mapping[str, Any]

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class PodSpecError(ValueError):
    """The pod asks for something the local runner cannot provide (reported on the pod)."""


@dataclass(frozen=True)
class Probe:
    path: str
    port: int
    period: float
    failure_threshold: int
    initial_delay: float


@dataclass(frozen=True)
class ProcessSpec:
    argv: list[str]
    env: dict[str, str]
    files: dict[Path, bytes]
    termination_log: Path
    ports: dict[int, int]
    readiness: Probe | None
    liveness: Probe | None
    grace_seconds: float


def _port_of(value: int | str, container: Obj) -> int:
    if isinstance(value, int):
        return value
    for port in container.get("ports", []):
        if port.get("name") == value:
            return int(port["containerPort"])
    if value.isdigit():
        return int(value)
    raise PodSpecError(f"probe port {value!r} is not a declared container port")


def _probe(raw: Obj | None, container: Obj, ports: Mapping[int, int]) -> Probe | None:
    if not raw:
        return None
    http = raw.get("httpGet")
    if http is None:
        raise PodSpecError("only httpGet probes are supported by the local runner")
    port = _port_of(http["port"], container)
    return Probe(
        path=http.get("path", "/"),
        port=ports.get(port, port),
        period=float(raw.get("periodSeconds", 10)),
        failure_threshold=int(raw.get("failureThreshold", 3)),
        initial_delay=float(raw.get("initialDelaySeconds", 0)),
    )


def _expand(value: str, env: Mapping[str, str]) -> str:
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _decode(secret: Obj, key: str) -> bytes:
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key])
    string_data = secret.get("stringData") or {}
    if key in string_data:
        return str(string_data[key]).encode()
    raise PodSpecError(f"key {key!r} not found in Secret {secret['metadata']['name']!r}")


#: Every local "pod" runs on this host's loopback.
LOCAL_POD_IP = "127.0.0.1"


def _field(pod: Obj, path: str) -> str:
    if path == "status.podIP":
        return LOCAL_POD_IP  # what the runner reports once the process runs (status.py)
    node: Any = pod
    for part in re.findall(r"[^.\[\]']+", path):
        node = node.get(part, "") if isinstance(node, Mapping) else ""
    return str(node)


def referenced_objects(pod: Obj) -> tuple[set[str], set[str]]:
    """The Secrets and ConfigMaps the pod's container needs: what to fetch before building it."""
    spec = pod["spec"]
    secrets: set[str] = set()
    config_maps: set[str] = set()
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            secrets.add(volume["secret"]["secretName"])
        elif "configMap" in volume:
            config_maps.add(volume["configMap"]["name"])
        elif "projected" in volume:
            for source in volume["projected"].get("sources", []):
                if "configMap" in source:
                    config_maps.add(source["configMap"]["name"])
    for container in spec.get("containers", []):
        for item in container.get("env", []):
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source:
                secrets.add(source["secretKeyRef"]["name"])
            if "configMapKeyRef" in source:
                config_maps.add(source["configMapKeyRef"]["name"])
    return secrets, config_maps


def build_process_spec(
    pod: Obj,
    *,
    root: Path,
    secrets: Mapping[str, Obj],
    config_maps: Mapping[str, Obj],
    host_ports: Mapping[int, int],
) -> ProcessSpec:
    """The process for the pod's first container, its files under ``root``, ports remapped."""
    spec = pod["spec"]
    containers = spec.get("containers") or []
    if len(containers) != 1:
        raise PodSpecError("the local runner runs pods with exactly one container")
    container = containers[0]
    if not container.get("command"):
        raise PodSpecError("the container has no command (images are not run locally)")

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts: list[tuple[str, Path]] = []
    files: dict[Path, bytes] = {}
    for mount in container.get("volumeMounts", []):
        mount_path = mount["mountPath"]
        local = root / mount_path.lstrip("/")
        mounts.append((mount_path.rstrip("/"), local))
        volume = volumes.get(mount["name"])
        if volume is None:
            raise PodSpecError(f"volumeMount {mount['name']!r} has no volume")
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            secret = secrets.get(name)
            if secret is None:
                if volume["secret"].get("optional"):
                    continue
                raise PodSpecError(f"Secret {name!r} not found")
            items = volume["secret"].get("items")
            keys = (
                [(i["key"], i["path"]) for i in items]
                if items
                else [(k, k) for k in {**(secret.get("data") or {})}]
            )
            for key, rel in keys:
                files[local / rel] = _decode(secret, key)
        elif "configMap" in volume:
            cm = config_maps.get(volume["configMap"]["name"]) or {}
            for key, value in (cm.get("data") or {}).items():
                files[local / key] = str(value).encode()
        elif "emptyDir" in volume:
            files.setdefault(local / ".keep", b"")
        elif "projected" in volume:
            # The API access volume: Secrets/ConfigMaps are copied, the service-account token
            # is not minted (local processes get no in-cluster credentials).
            for source in volume["projected"].get("sources", []):
                if "configMap" in source:
                    cm = config_maps.get(source["configMap"]["name"]) or {}
                    for key, value in (cm.get("data") or {}).items():
                        files[local / key] = str(value).encode()
            files.setdefault(local / ".keep", b"")
        else:
            raise PodSpecError(f"volume {mount['name']!r}: only secret/configMap/emptyDir")

    termination_path = container.get("terminationMessagePath", "/dev/termination-log")
    termination_log = root / termination_path.lstrip("/")
    container_ports = {int(p["containerPort"]) for p in container.get("ports", [])}
    ports = {p: host_ports[p] for p in container_ports if p in host_ports}

    def localise(value: str) -> str:
        if value == termination_path:
            return str(termination_log)
        for mount_path, local in mounts:
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(local) + value[len(mount_path) :]
        if value.isdigit() and int(value) in ports:
            return str(ports[int(value)])
        return value

    env: dict[str, str] = {}
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = localise(_expand(str(item["value"]), env))
            continue
        source = item.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = secrets.get(ref["name"])
            if secret is None:
                if ref.get("optional"):
                    continue
                raise PodSpecError(f"Secret {ref['name']!r} not found")
            env[name] = _decode(secret, ref["key"]).decode()
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = config_maps.get(ref["name"]) or {}
            if ref["key"] in (cm.get("data") or {}):
                env[name] = str(cm["data"][ref["key"]])
            elif not ref.get("optional"):
                raise PodSpecError(f"ConfigMap {ref['name']!r} has no key {ref['key']!r}")
        elif "fieldRef" in source:
            env[name] = _field(pod, source["fieldRef"]["fieldPath"])
        else:
            raise PodSpecError(f"env {name!r}: unsupported valueFrom")

    argv = [
        localise(_expand(str(a), env)) for a in [*container["command"], *container.get("args", [])]
    ]
    return ProcessSpec(
        argv=argv,
        env=env,
        files=files,
        termination_log=termination_log,
        ports=ports,
        readiness=_probe(container.get("readinessProbe"), container, ports),
        liveness=_probe(container.get("livenessProbe"), container, ports),
        grace_seconds=float(spec.get("terminationGracePeriodSeconds", 30)),
    )
