"""The archiver's Kubernetes side: each Camera's `spec.history.retention`, and a Warning Event
on a Camera whose archive falls behind its stream's retention."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from camfleet.camera import API_VERSION, GROUP, KIND, PLURAL, VERSION, parse_retention
from camfleet_archiver.retention import Policy

log = logging.getLogger(__name__)


class CameraRetention:
    """Lists Cameras cluster-wide (`list` on cameras) and builds the retention policy."""

    def __init__(self, api: Any) -> None:
        self._api = api

    @classmethod
    async def connect(cls, kubeconfig: Path | None) -> CameraRetention:
        configuration = client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(
                config_file=str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG"),
                client_configuration=configuration,
                persist_config=False,
            )
        return cls(client.ApiClient(configuration))

    async def policy(self, default: timedelta) -> Policy:
        api = client.CustomObjectsApi(self._api)
        listed = await api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return policy_from_cameras(listed.get("items", []), default)

    async def warn_behind(self, camera: str, backlog: int, length: int, instance: str) -> None:
        """A Warning Event `ArchiveBehind` on the Camera (best effort: failures are logged)."""
        namespace, name = camera.split("/", 1)
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": name,
                "namespace": namespace,
            },
            "type": "Warning",
            "reason": "ArchiveBehind",
            "message": (
                f"{backlog} of the {length} events in this camera's Redis stream are not archived "
                "yet; trimming is about to drop events before they reach PostgreSQL"
            ),
            "source": {"component": "camfleet-archiver"},
            "reportingComponent": "camfleet-archiver",
            "reportingInstance": instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await client.CoreV1Api(self._api).create_namespaced_event(namespace, body)
        except Exception as exc:  # an Event is a courtesy; the metric and the log remain
            log.warning("could not create the ArchiveBehind event", extra={"error": str(exc)})

    async def close(self) -> None:
        await self._api.close()


def policy_from_cameras(items: list[dict[str, Any]], default: timedelta) -> Policy:
    cameras: dict[str, timedelta] = {}
    for obj in items:
        meta = obj.get("metadata") or {}
        value = ((obj.get("spec") or {}).get("history") or {}).get("retention")
        if value is None:
            continue
        try:
            cameras[f"{meta.get('namespace')}/{meta.get('name')}"] = parse_retention(value)
        except ValueError:
            log.warning("ignoring invalid retention", extra={"camera": meta.get("name")})
    return Policy(default, cameras)
