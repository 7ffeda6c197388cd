"""Session-wide real servers on loopback: the test bed every tier of tests shares.

Each server starts once per session on free ports, is waited on until healthy, and is stopped
at the end, even when tests fail (and by an atexit hook if the session dies). Nothing here is a
mock: a missing tool is an error that points at ``scripts/setup``, never a skip.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from camfleet_dev.testbed.browser import launch_chromium
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.node import NodeCluster
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.s3 import S3Server
from camfleet_dev.testbed.tools import repo_root, tools_dir


@pytest.fixture(scope="session")
def testbed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("testbed")


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return tools_dir() / "media"


@pytest.fixture(scope="session")
def kube(testbed_dir: Path) -> Iterator[KubeCluster]:
    """etcd + kube-apiserver + kube-controller-manager (no kubelet, no scheduler)."""
    with KubeCluster(testbed_dir / "kube") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster(testbed_dir: Path) -> Iterator[NodeCluster]:
    """A real one-node cluster (kubelet, containerd, CNI, kube-proxy, CoreDNS) running the images
    scripts/setup built; started once per session, only when a test asks for it (needs root)."""
    with NodeCluster(testbed_dir / "node") as node:
        yield node


@pytest.fixture(scope="session")
def camera_crd(kube: KubeCluster) -> Path:
    """The Camera CRD applied to the test cluster and established."""
    crd = repo_root() / "crds" / "camera.yaml"
    kube.kubectl("apply", "--server-side", "-f", str(crd))
    kube.wait_established("cameras.camfleet.io")
    return crd


@pytest.fixture
def namespace(kube: KubeCluster) -> Iterator[str]:
    """A fresh namespace per test; deleted afterwards without waiting."""
    name = f"t-{secrets.token_hex(4)}"
    kube.create_namespace(name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def redis_server(testbed_dir: Path) -> Iterator[RedisServer]:
    with RedisServer(testbed_dir / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def postgres(testbed_dir: Path) -> Iterator[PostgresServer]:
    """PostgreSQL 15 (Debian's), database `camfleet`; tests that restart it restart this one."""
    with PostgresServer(testbed_dir / "postgres") as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(testbed_dir: Path) -> Iterator[S3Server]:
    """versitygw (S3-compatible, posix backend); tests that take the store away restart it."""
    with S3Server(testbed_dir / "s3") as server:
        yield server


@pytest.fixture(scope="session")
def livekit_server(testbed_dir: Path) -> Iterator[LiveKitServer]:
    with LiveKitServer(testbed_dir / "livekit") as server:
        yield server


@pytest.fixture(scope="session")
def rtsp_camera(testbed_dir: Path, media_dir: Path) -> Iterator[RtspCamera]:
    with RtspCamera(testbed_dir / "rtsp", media_dir) as camera:
        yield camera


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (no downloaded browser)."""
    async with async_playwright() as pw:
        chromium = await launch_chromium(pw)
        try:
            yield chromium
        finally:
            await chromium.close()
