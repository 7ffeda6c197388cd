"""Kubernetes I/O for the reconcile: plain JSON over kubernetes_asyncio's authenticated client.

Objects stay dicts end to end (the builders' output goes out as-is, responses come back as-is),
which skips the generated models' (de)serialisation cost at thousands of Cameras.
"""

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client, config

from camfleet import camera as cam
from camfleet_operator import constants as c

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Conflict(KubeError):
    """409: AlreadyExists on create, or a write that raced another writer."""


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    @classmethod
    async def connect(cls, *, pool_size: int = 100, kubeconfig: str | None = None) -> "Kube":
        """In-cluster credentials when present, else the kubeconfig (KUBECONFIG or ~/.kube)."""
        configuration = client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(
                config_file=kubeconfig or os.environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
                persist_config=False,
            )
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self._api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
    ) -> dict[str, Any] | None:
        """One API call; None for 404, KubeError/Conflict for other failures."""
        try:
            response = await self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params={"Accept": JSON, "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=30,
            )
            try:
                raw = await response.read()
                status = response.status
            finally:
                response.release()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Transport trouble (overloaded or restarting API server) is a transient fault
            # like a 5xx, not a bug: callers retry it the same way.
            raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if status == 404:
            return None
        if status >= 400:
            message = _error_message(raw)
            if status == 409:
                raise Conflict(status, message)
            raise KubeError(status, message)
        data: dict[str, Any] = json.loads(raw) if raw else {}
        return data

    async def get(self, path: str, *, cached: bool = False) -> dict[str, Any] | None:
        """`cached` reads the API server's watch cache (resourceVersion=0) instead of etcd:
        possibly a little stale, which a level-triggered reconcile tolerates, and far cheaper
        for the API server at thousands of objects."""
        return await self.request("GET", path, query={"resourceVersion": "0"} if cached else None)

    async def create(self, collection: str, body: Mapping[str, Any]) -> dict[str, Any]:
        created = await self.request("POST", collection, body=body)
        if created is None:  # the namespace vanished under us
            raise KubeError(404, f"{collection} not found")
        return created

    async def apply(self, path: str, body: Mapping[str, Any]) -> None:
        """Server-side apply as the operator's field manager: owns exactly what it sends."""
        await self.request(
            "PATCH",
            path,
            body=body,
            query={"fieldManager": c.FIELD_MANAGER, "force": "true"},
            content_type=APPLY_PATCH,
        )

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> None:
        await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def delete(self, path: str, *, uid: str | None = None) -> None:
        """Delete (background propagation); `uid` guards against deleting a same-named newcomer."""
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        # A failed uid precondition (409) means that object is not the one we meant.
        with contextlib.suppress(Conflict):
            await self.request("DELETE", path, body=options)

    async def list(
        self, collection: str, *, label_selector: str, cached: bool = False
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector}
        if cached:
            query["resourceVersion"] = "0"
        listed = await self.request("GET", collection, query=query)
        return list((listed or {}).get("items") or [])


def _error_message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("message") or raw[:200].decode(errors="replace"))
    except ValueError:
        return raw[:200].decode(errors="replace")


def q(name: str) -> str:
    return quote(name, safe="")


def deployments(namespace: str, name: str | None = None) -> str:
    base = f"/apis/apps/v1/namespaces/{q(namespace)}/deployments"
    return f"{base}/{q(name)}" if name else base


def secrets(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{q(namespace)}/secrets"
    return f"{base}/{q(name)}" if name else base


def pods(namespace: str) -> str:
    return f"/api/v1/namespaces/{q(namespace)}/pods"


def cameras(namespace: str) -> str:
    return f"/apis/{cam.GROUP}/{cam.VERSION}/namespaces/{q(namespace)}/{cam.PLURAL}"


def camera(namespace: str, name: str) -> str:
    return f"{cameras(namespace)}/{q(name)}"


def camera_status(namespace: str, name: str) -> str:
    return f"{camera(namespace, name)}/status"
