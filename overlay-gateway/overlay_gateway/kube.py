"""The few Kubernetes API calls the gateway makes, over aiohttp.

TokenReview (who is this bearer?), SubjectAccessReview (may they view this camera?), and
get/list of Camera objects. A hand-rolled client keeps this small and fully typed; the
connection comes from the in-cluster service account or from a kubeconfig file.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import yaml

from camfleet.camera import GROUP, PLURAL, VERSION

__all__ = [
    "KubeClient",
    "KubeConfig",
    "KubeError",
]

_SA_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"kubernetes API {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class KubeConfig:
    server: str
    token: str | None
    ssl: ssl.SSLContext | bool
    token_file: Path | None = None

    @classmethod
    def in_cluster(cls) -> KubeConfig:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        ctx = ssl.create_default_context(cafile=str(_SA_DIR / "ca.crt"))
        # Bound service account tokens rotate: re-read the file rather than caching it.
        return cls(f"https://{host}:{port}", None, ctx, token_file=_SA_DIR / "token")

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeConfig:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        ctx_name = doc.get("current-context")
        context = _named(doc.get("contexts", []), ctx_name)["context"]
        cluster = _named(doc.get("clusters", []), context["cluster"])["cluster"]
        user = _named(doc.get("users", []), context["user"])["user"] if context.get("user") else {}
        server: str = cluster["server"]
        sslctx: ssl.SSLContext | bool
        if cluster.get("insecure-skip-tls-verify"):
            sslctx = False
        else:
            sslctx = ssl.create_default_context()
            if "certificate-authority-data" in cluster:
                sslctx.load_verify_locations(
                    cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
                )
            elif "certificate-authority" in cluster:
                sslctx.load_verify_locations(cafile=cluster["certificate-authority"])
        if "client-certificate-data" in user or "client-certificate" in user:
            if sslctx is False:
                sslctx = ssl.create_default_context()
                sslctx.check_hostname = False
                sslctx.verify_mode = ssl.CERT_NONE
            assert isinstance(sslctx, ssl.SSLContext)
            _load_client_cert(sslctx, user)
        token = user.get("token")
        if token is None and "tokenFile" in user:
            token = Path(user["tokenFile"]).read_text(encoding="utf-8").strip()
        return cls(server.rstrip("/"), token, sslctx)

    @classmethod
    def load(cls, kubeconfig: Path | None) -> KubeConfig:
        if kubeconfig is not None:
            return cls.from_kubeconfig(kubeconfig)
        if "KUBERNETES_SERVICE_HOST" in os.environ:
            return cls.in_cluster()
        env = os.environ.get("KUBECONFIG")
        if env:
            return cls.from_kubeconfig(Path(env.split(os.pathsep)[0]))
        return cls.from_kubeconfig(Path.home() / ".kube" / "config")

    def bearer(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip()
        return self.token


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise ValueError(f"kubeconfig has no entry named {name!r}")


def _load_client_cert(ctx: ssl.SSLContext, user: dict[str, Any]) -> None:
    if "client-certificate" in user:
        ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        return
    # ssl only loads certificates from files; keep them in a private temp dir just long enough.
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        ctx.load_cert_chain(str(cert), str(key))


class KubeClient:
    def __init__(self, config: KubeConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self._session = session

    @classmethod
    def create(cls, config: KubeConfig) -> KubeClient:
        connector = aiohttp.TCPConnector(ssl=config.ssl, limit=64)
        timeout = aiohttp.ClientTimeout(total=10)
        return cls(config, aiohttp.ClientSession(connector=connector, timeout=timeout))

    async def close(self) -> None:
        await self._session.close()

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        headers = {"Accept": "application/json"}
        bearer = self.config.bearer()
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        async with self._session.request(
            method, self.config.server + path, json=body, headers=headers
        ) as resp:
            if resp.status == 404:
                return None
            if resp.status >= 400:
                text = (await resp.text())[:300]
                raise KubeError(resp.status, text)
            data: dict[str, Any] = await resp.json()
            return data

    async def token_review(self, token: str) -> dict[str, Any]:
        """The TokenReview status: {"authenticated": bool, "user": {...}, ...}."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        result = await self._request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)
        status: dict[str, Any] = (result or {}).get("status", {})
        return status

    async def can_view(
        self, user: str, groups: list[str], uid: str | None, namespace: str, name: str
    ) -> bool:
        spec: dict[str, Any] = {
            "user": user,
            "groups": groups,
            "resourceAttributes": {
                "namespace": namespace,
                "verb": "get",
                "group": GROUP,
                "resource": PLURAL,
                "subresource": "view",
                "name": name,
            },
        }
        if uid:
            spec["uid"] = uid
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        result = await self._request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body
        )
        return bool((result or {}).get("status", {}).get("allowed", False))

    async def get_camera(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request(
            "GET",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
        )

    async def list_cameras(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        base = f"/apis/{GROUP}/{VERSION}/{PLURAL}?limit=500"
        path = base
        while True:
            result = await self._request("GET", path)
            if result is None:
                return items
            items.extend(result.get("items", []))
            cont = result.get("metadata", {}).get("continue")
            if not cont:
                return items
            path = f"{base}&continue={quote(cont)}"

    async def ping(self) -> bool:
        try:
            await self._request("GET", "/version")
        except (aiohttp.ClientError, KubeError, TimeoutError):
            return False
        return True
