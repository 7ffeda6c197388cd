"""The viewer's media path, once per module: see `viewer_stack.ViewerStack`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from viewer_stack import ViewerStack

from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def viewer_stack(
    kube: KubeCluster,
    camera_crd: Path,
    redis_server: RedisServer,
    livekit_server: LiveKitServer,
    rtsp_camera: RtspCamera,
    testbed_dir: Path,
) -> AsyncIterator[ViewerStack]:
    stack = ViewerStack(kube, redis_server, livekit_server, rtsp_camera, testbed_dir / "viewer")
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()
