"""The shipped form on the test bed's real node: Redis and livekit-server as pods, the chart
installed with helm from the images scripts/setup built, the RTSP camera on the host.

One node and one installation per session (`node_release`); tests that break something put it
back before they end, so that the next test finds the installation as `helm install` left it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from nodekit import VIEWER_TOKEN

from camfleet_dev.testbed.node import NodeCluster
from camfleet_dev.testbed.release import (
    CAMERA_PORT,
    Infra,
    Release,
    deploy_infra,
    install,
    release_values,
)
from camfleet_dev.testbed.rtsp import RtspCamera


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The cleanup test starts nodes of its own: it runs before the session's node exists."""
    first = [i for i in items if "test_node_cleanup" in i.nodeid]
    items[:] = first + [i for i in items if i not in first]


@pytest.fixture(scope="session")
def node_camera(cluster: NodeCluster, testbed_dir: Path, media_dir: Path) -> Iterator[RtspCamera]:
    """The RTSP test camera on the host, listening on the node's bridge address."""
    with RtspCamera(
        testbed_dir / "node-rtsp", media_dir, host=cluster.node_ip, port=CAMERA_PORT
    ) as camera:
        yield camera


@pytest.fixture(scope="session")
def node_infra(cluster: NodeCluster) -> Infra:
    return deploy_infra(cluster)


@pytest.fixture(scope="session")
def node_release(
    cluster: NodeCluster, node_infra: Infra, node_camera: RtspCamera, testbed_dir: Path
) -> Release:
    """`helm install` of charts/camfleet with the locally built images (pullPolicy Never)."""
    values_file = testbed_dir / "node-values.yaml"
    values_file.write_text(yaml.safe_dump(release_values(cluster, node_infra, VIEWER_TOKEN)))
    output = install(cluster, node_infra, values_file)
    return Release(cluster, node_infra, node_camera, values_file, output)
