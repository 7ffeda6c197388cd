"""The Kubernetes client maps transport failures to KubeError, which the reconcile retries."""

from pathlib import Path

import pytest
import yaml

from camfleet_dev.testbed.process import free_port
from camfleet_operator.kube import Kube, KubeError, camera_status, deployments, secrets


async def test_unreachable_api_server_is_a_kube_error(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    kube = await Kube.connect(kubeconfig=str(kubeconfig))
    try:
        with pytest.raises(KubeError) as caught:
            await kube.get(secrets("default", "x"))
        assert caught.value.status == 0
    finally:
        await kube.close()


def test_paths_quote_names() -> None:
    assert deployments("ns", "door-ingest") == "/apis/apps/v1/namespaces/ns/deployments/door-ingest"
    assert secrets("ns") == "/api/v1/namespaces/ns/secrets"
    assert camera_status("ns", "a/b").endswith("/cameras/a%2Fb/status")
