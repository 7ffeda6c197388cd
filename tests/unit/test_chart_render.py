"""The Helm chart, offline: lint, render, schema, settings contract, RBAC and policy shape.

Everything here runs helm (from .tools/bin) against charts/camfleet without a cluster; the
integration tests in tests/integration/test_chart_kube.py apply the same renders to a real
kube-apiserver.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from camfleet_dev.testbed.tools import repo_root, tool

ROOT = repo_root()
CHART = ROOT / "charts" / "camfleet"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
KIND_VALUES = CHART / "ci" / "kind-values.yaml"
KUBE_VERSION = "1.35.4"
Doc = dict[str, Any]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(*values: Path, sets: tuple[str, ...] = (), release: str = "camfleet") -> list[Doc]:
    args = ["template", release, str(CHART), "--namespace", "camfleet"]
    args += ["--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def env_of(deployment: Doc) -> dict[str, dict[str, Any]]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


@pytest.fixture(scope="module")
def default_docs() -> list[Doc]:
    return render()


@pytest.fixture(scope="module")
def all_docs() -> list[Doc]:
    return render(ALL_OPTIONS)


VALUE_FILES = {"default": None, "all-options": ALL_OPTIONS, "kind": KIND_VALUES}


@pytest.mark.parametrize("name", VALUE_FILES)
def test_helm_lint_strict(name: str) -> None:
    values = VALUE_FILES[name]
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    if values:
        args += ["-f", str(values)]
    result = helm(*args)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


def test_default_render_has_every_component(default_docs: list[Doc]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in default_docs}
    assert ("Deployment", "camfleet-operator") in kinds
    assert ("Deployment", "camfleet-gateway") in kinds
    assert ("Service", "camfleet-gateway") in kinds
    assert ("Service", "camfleet-operator-webhook") in kinds
    assert ("PodDisruptionBudget", "camfleet-gateway") in kinds
    assert ("ClusterKopfPeering", "camfleet") in kinds
    assert ("ClusterRole", "camfleet-viewer") in kinds
    assert ("ClusterRole", "camfleet-editor") in kinds
    assert ("ServiceAccount", "camfleet-ingest") in kinds
    # Optional parts stay off by default, and nothing needs a CRD the cluster may lack.
    for kind in ("Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "PodMonitor", "Secret"):
        assert not by_kind(default_docs, kind), kind


def test_all_options_render_has_the_optional_parts(all_docs: list[Doc]) -> None:
    kinds = {d["kind"] for d in all_docs}
    assert {"Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "PodMonitor"} <= kinds
    dashboard = json.loads(one(all_docs, "ConfigMap", "cfall-dashboard")["data"]["camfleet.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    assert all("camfleet_" in e for e in exprs)
    gateway = one(all_docs, "Deployment", "cfall-gateway")
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    assert one(all_docs, "Service", "cfall-gateway")["spec"]["ports"][0]["nodePort"] == 30080


def test_chart_crds_are_the_top_level_crds() -> None:
    top = (ROOT / "crds" / "camera.yaml").read_bytes()
    assert (CHART / "crds" / "camera.yaml").read_bytes() == top, (
        "crds/camera.yaml is the source: `make chart` regenerates the chart's and deploy/'s copies"
    )


def test_images_are_tagged_with_the_app_version(default_docs: list[Doc]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == "0.1.0"
    operator = one(default_docs, "Deployment", "camfleet-operator")
    gateway = one(default_docs, "Deployment", "camfleet-gateway")
    assert operator["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/camfleet/camfleet-operator:0.1.0"
    )
    assert gateway["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/camfleet/camfleet-gateway:0.1.0"
    )
    assert env_of(operator)["CAMFLEET_INGEST_IMAGE"]["value"] == (
        "ghcr.io/camfleet/camfleet-ingest:0.1.0"
    )
    # `make images` tags with the same appVersion.
    dry = subprocess.run(
        ["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for component in ("operator", "gateway", "ingest"):
        assert f"-f images/{component}/Dockerfile" in dry
        assert f"ghcr.io/camfleet/camfleet-{component}:0.1.0" in dry


def test_all_options_images_use_digests(all_docs: list[Doc]) -> None:
    operator = one(all_docs, "Deployment", "cfall-operator-a")
    image = operator["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/camfleet/camfleet-operator@sha256:" + "0" * 64
    gateway = one(all_docs, "Deployment", "cfall-gateway")
    assert gateway["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/camfleet/camfleet-gateway:0.1.0-rc1"
    )


def _settings_env(
    deployment: Doc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> set[str]:
    """Export the container's env as the kubelet would (Secrets → dummy values, files → tmp)."""
    names = set()
    for name, entry in env_of(deployment).items():
        if name == "POD_ID":
            continue
        assert name.startswith(prefix), name
        names.add(name.removeprefix(prefix).lower())
        if "value" in entry:
            value = entry["value"]
            if name.endswith("_FILE"):
                target = tmp_path / Path(value).name
                target.write_text("dummy-secret\n")
                value = str(target)
            monkeypatch.setenv(name, value)
        elif "fieldRef" in entry["valueFrom"]:
            monkeypatch.setenv(name, "pod-0")  # the downward API: the pod's name
        else:
            key = entry["valueFrom"]["secretKeyRef"]["key"]
            monkeypatch.setenv(name, "redis://redis:6379/0" if key == "url" else f"dummy-{key}")
    return names


@pytest.mark.parametrize("values", ["default", "all-options"])
def test_operator_env_is_what_its_settings_read(
    values: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from camfleet_operator.settings import Settings

    docs = render(ALL_OPTIONS) if values == "all-options" else render()
    for deployment in by_kind(docs, "Deployment"):
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] != "operator":
            continue
        with monkeypatch.context() as mp:
            names = _settings_env(deployment, tmp_path, mp, "CAMFLEET_")
            assert names <= set(Settings.model_fields), names - set(Settings.model_fields)
            settings = Settings()  # type: ignore[call-arg]  # from the env, as in the pod
            assert settings.api_secret() == "dummy-secret"
            assert settings.ingest_image.endswith((":0.1.0", "@sha256:" + "0" * 64))
            if values == "all-options":
                assert settings.namespaces == ["cfall-cams-a", "cfall-cams-b"]
                assert settings.shard_selector in ("camfleet.io/shard=a", "!camfleet.io/shard")
                assert settings.peering_name in ("cfall-peering-a", "cfall-peering-rest")
                assert settings.webhook_port == 8099
            else:
                assert settings.namespaces == []
                assert settings.peering_name == "camfleet"
                assert settings.shard_selector == ""
                assert settings.webhook_port == 8088


@pytest.mark.parametrize("values", ["default", "all-options", "kind"])
def test_gateway_env_is_what_its_settings_read(
    values: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from overlay_gateway.settings import Settings

    file = VALUE_FILES[values]
    docs = render(file) if file else render()
    gateway = next(
        d
        for d in by_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    )
    names = _settings_env(gateway, tmp_path, monkeypatch, "CAMFLEET_GATEWAY_")
    assert names <= set(Settings.model_fields), names - set(Settings.model_fields)
    settings = Settings()
    assert settings.port == 8080
    assert settings.livekit_api_key is not None
    assert settings.redis_url.get_secret_value() == "redis://redis:6379/0"


def test_archiver_is_off_by_default_and_complete_when_enabled(
    default_docs: list[Doc], all_docs: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from camfleet_archiver.settings import Settings

    assert not [d for d in default_docs if "archiver" in d["metadata"]["name"]]
    assert "CAMFLEET_GATEWAY_POSTGRES_DSN_FILE" not in env_of(
        one(default_docs, "Deployment", "camfleet-gateway")
    )
    archiver = one(all_docs, "Deployment", "cfall-archiver")
    assert archiver["spec"]["replicas"] == 3
    names = _settings_env(archiver, tmp_path, monkeypatch, "CAMFLEET_ARCHIVER_")
    assert names <= set(Settings.model_fields), names - set(Settings.model_fields)
    pod = archiver["spec"]["template"]["spec"]
    (secret,) = [v for v in pod["volumes"] if v["name"] == "postgres"]
    assert secret["secret"] == {"secretName": "events-db", "items": [{"key": "uri", "path": "dsn"}]}
    monkeypatch.setenv("CAMFLEET_ARCHIVER_POSTGRES_DSN_FILE", str(tmp_path / "dsn"))
    settings = Settings()
    assert settings.consumer == "pod-0"
    assert settings.default_retention.days == 14
    assert settings.kube_enabled
    # The gateway reads the same Secret for the history API.
    gateway = one(all_docs, "Deployment", "cfall-gateway")
    assert (
        env_of(gateway)["CAMFLEET_GATEWAY_POSTGRES_DSN_FILE"]["value"]
        == "/etc/camfleet/postgres/dsn"
    )
    pdb = one(all_docs, "PodDisruptionBudget", "cfall-archiver")
    assert pdb["spec"]["maxUnavailable"] == 1
    # Cameras for their retention; Events for "archive behind": nothing else.
    assert _rules(one(all_docs, "ClusterRole", "cfall-archiver")) == {
        ("camfleet.io", "cameras", "get"),
        ("camfleet.io", "cameras", "list"),
        ("", "events", "create"),
    }
    policy = one(all_docs, "NetworkPolicy", "cfall-archiver")
    assert ("TCP", 5432) in _egress_ports(policy)
    assert ("TCP", 6379) in _egress_ports(policy)
    assert ("TCP", 5432) in _egress_ports(one(all_docs, "NetworkPolicy", "cfall-gateway"))
    assert ("TCP", 5432) not in _egress_ports(
        one(default_docs, "NetworkPolicy", "camfleet-gateway")
    )
    assert (
        one(all_docs, "ServiceMonitor", "cfall-archiver")["spec"]["endpoints"][0]["port"] == "http"
    )


@pytest.mark.parametrize("values", ["default", "all-options"])
def test_pods_are_locked_down(values: str) -> None:
    docs = render(ALL_OPTIONS) if values == "all-options" else render()
    deployments = by_kind(docs, "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["serviceAccountName"] != "default"
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]
            assert container["livenessProbe"]
            assert container["readinessProbe"]


def test_operator_shards_and_peering(all_docs: list[Doc], default_docs: list[Doc]) -> None:
    operators = [
        d
        for d in by_kind(all_docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert sorted(d["metadata"]["name"] for d in operators) == [
        "cfall-operator-a",
        "cfall-operator-rest",
    ]
    selectors = set()
    for deployment in operators:
        assert deployment["spec"]["replicas"] <= 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        selectors.add(deployment["spec"]["selector"]["matchLabels"]["camfleet.io/shard"])
    assert selectors == {"a", "rest"}, "each shard's Deployment selects only its own pods"
    peerings = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in all_docs
        if d["kind"] == "KopfPeering"
    }
    assert peerings == {
        (ns, name)
        for ns in ("cfall-cams-a", "cfall-cams-b")
        for name in ("cfall-peering-a", "cfall-peering-rest")
    }
    assert not by_kind(all_docs, "ClusterKopfPeering")
    standalone = render(sets=("operator.peering.enabled=false",))
    assert not by_kind(standalone, "ClusterKopfPeering")
    assert "CAMFLEET_PEERING_NAME" not in env_of(one(standalone, "Deployment", "camfleet-operator"))
    assert by_kind(default_docs, "ClusterKopfPeering")


def _container(deployment: Doc) -> Doc:
    container: Doc = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _webhook_services(docs: list[Doc]) -> dict[str, Doc]:
    return {
        d["metadata"]["name"]: d
        for d in by_kind(docs, "Service")
        if d["metadata"]["name"].endswith("-webhook")
    }


def test_operator_webhook_service_per_shard(default_docs: list[Doc], all_docs: list[Doc]) -> None:
    # Default: one shard ("all"), the operator serves the webhook on 8088 behind one Service.
    operator = one(default_docs, "Deployment", "camfleet-operator")
    assert env_of(operator)["CAMFLEET_WEBHOOK_PORT"]["value"] == "8088"
    ports = {p["name"]: p["containerPort"] for p in _container(operator)["ports"]}
    assert ports["webhook"] == 8088
    services = _webhook_services(default_docs)
    assert list(services) == ["camfleet-operator-webhook"]
    service = services["camfleet-operator-webhook"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"]["camfleet.io/shard"] == "all"
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 8088, "targetPort": "webhook", "protocol": "TCP"}
    ]
    pod_labels = operator["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert "annotations" not in service["metadata"]
    # Two shards: livekit-server posts every event to every URL and a shard ignores rooms it
    # does not own, so each shard has its own Service selecting only its own pods.
    services = _webhook_services(all_docs)
    assert sorted(services) == ["cfall-operator-a-webhook", "cfall-operator-rest-webhook"]
    for shard in ("a", "rest"):
        service = services[f"cfall-operator-{shard}-webhook"]
        assert service["spec"]["selector"]["camfleet.io/shard"] == shard
        assert service["spec"]["ports"][0]["port"] == 8099
        assert service["metadata"]["annotations"] == {"example.com/lb": "internal"}
        for name in ("a", "rest"):
            deployment = one(all_docs, "Deployment", f"cfall-operator-{name}")
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            selects = service["spec"]["selector"].items() <= labels.items()
            assert selects is (name == shard), (shard, name)
            assert env_of(deployment)["CAMFLEET_WEBHOOK_PORT"]["value"] == "8099"


def test_operator_webhook_can_be_disabled() -> None:
    docs = render(sets=("operator.webhook.enabled=false",))
    assert not _webhook_services(docs)
    operator = one(docs, "Deployment", "camfleet-operator")
    assert "CAMFLEET_WEBHOOK_PORT" not in env_of(operator)
    assert "webhook" not in {p["name"] for p in _container(operator)["ports"]}
    assert one(docs, "NetworkPolicy", "camfleet-operator")["spec"]["ingress"] == []


def test_operator_webhook_port_must_not_clash() -> None:
    result = helm(
        *("template", "x", str(CHART), "--kube-version", KUBE_VERSION),
        *("--set", "operator.webhook.port=9090"),
        check=False,
    )
    assert result.returncode != 0
    assert "operator.webhook.port must differ" in result.stderr


def _rules(doc: Doc) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_shape_is_least_privilege(default_docs: list[Doc], all_docs: list[Doc]) -> None:
    for docs in (default_docs, all_docs):
        for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
            for group, resource, verb in _rules(role):
                assert "*" not in (group, resource, verb), role["metadata"]["name"]
                if resource == "secrets":
                    assert verb in ("get", "create", "patch", "delete"), verb
    operator = _rules(one(default_docs, "ClusterRole", "camfleet-operator"))
    assert ("", "secrets", "list") not in operator
    assert ("camfleet.io", "cameras", "delete") not in operator
    gateway = _rules(one(default_docs, "ClusterRole", "camfleet-gateway"))
    writes = {r for r in gateway if r[2] not in ("get", "list", "watch")}
    assert writes == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    }
    # Namespaced mode: a Role per watched namespace, and no cluster-wide Secret access.
    assert {r["metadata"]["namespace"] for r in by_kind(all_docs, "Role")} == {
        "cfall-cams-a",
        "cfall-cams-b",
    }
    for role in by_kind(all_docs, "ClusterRole"):
        assert all(res != "secrets" for _, res, _ in _rules(role)), role["metadata"]["name"]
    for sa in by_kind(all_docs, "ServiceAccount"):
        expected = not sa["metadata"]["name"].endswith("-ingest")
        assert sa["automountServiceAccountToken"] is expected, sa["metadata"]


def _egress_ports(policy: Doc) -> set[tuple[str, int]]:
    return {
        (p["protocol"], p["port"])
        for rule in policy["spec"]["egress"]
        for p in rule.get("ports", [])
    }


def test_network_policies(default_docs: list[Doc], all_docs: list[Doc]) -> None:
    from camfleet_operator import constants

    ingest = one(default_docs, "NetworkPolicy", "camfleet-ingest")
    # Exactly the labels the operator's builders put on ingest pods.
    assert ingest["spec"]["podSelector"]["matchLabels"] == {
        constants.LABEL_NAME: constants.APP_NAME,
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
    }
    # Only the gateway's snapshot fetches reach an ingest pod, on its HTTP port.
    gateway_pods = {
        "app.kubernetes.io/name": "camfleet",
        "app.kubernetes.io/instance": "camfleet",
        "app.kubernetes.io/component": "gateway",
    }
    [snapshots] = ingest["spec"]["ingress"]
    assert snapshots["ports"] == [{"protocol": "TCP", "port": 8080}]
    [peer] = snapshots["from"]
    assert peer["podSelector"]["matchLabels"] == gateway_pods
    assert ("TCP", 554) in _egress_ports(ingest)
    assert ("UDP", 7882) in _egress_ports(ingest)
    assert ("TCP", 6379) not in _egress_ports(ingest)
    gateway = one(default_docs, "NetworkPolicy", "camfleet-gateway")
    assert _egress_ports(gateway) == {
        ("UDP", 53),
        ("TCP", 53),
        ("TCP", 443),
        ("TCP", 6443),
        ("TCP", 6379),
        ("TCP", 7880),  # LiveKit's server API (where a camera's ingest is, for snapshots)
        ("TCP", 7881),
        ("TCP", 8080),  # the ingest pods' /snapshot.jpg
    }
    [to_ingest] = [r for r in gateway["spec"]["egress"] if r["ports"][0]["port"] == 8080]
    assert [t["podSelector"]["matchLabels"] for t in to_ingest["to"]] == [
        {constants.LABEL_NAME: constants.APP_NAME, constants.LABEL_MANAGED_BY: constants.MANAGED_BY}
    ]
    # All options: one ingest policy per camera namespace; cameras only from the given CIDR.
    ingest_policies = [
        p for p in by_kind(all_docs, "NetworkPolicy") if p["metadata"]["name"] == "cfall-ingest"
    ]
    assert {p["metadata"]["namespace"] for p in ingest_policies} == {
        "cfall-cams-a",
        "cfall-cams-b",
        "cfall-cams-c",
    }
    camera_rules = [
        r
        for r in ingest_policies[0]["spec"]["egress"]
        if any("ipBlock" in peer for peer in r.get("to", []))
    ]
    assert camera_rules == [{"to": [{"ipBlock": {"cidr": "192.168.10.0/24"}}]}]
    assert ingest_policies[0]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]
    # The operator admits LiveKit's webhooks (from anyone by default: they are signed) and,
    # with `metrics.from`, the scrapers on the metrics port.
    operator = one(default_docs, "NetworkPolicy", "camfleet-operator")
    assert operator["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8088}]}]
    operator = one(all_docs, "NetworkPolicy", "cfall-operator")
    assert operator["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
            "ports": [{"protocol": "TCP", "port": 9090}],
        },
        {
            "ports": [{"protocol": "TCP", "port": 8099}],
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "livekit"}}}
            ],
        },
    ]


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("operator.replicas=2", "/operator/replicas"),
        ("operator.watchNamespaces[0]=team-*", "/operator/watchNamespaces/0"),
        ("livekit.url=http://livekit:7880", "/livekit/url"),
        ("gateway.authModes[0]=oauth", "/gateway/authModes/0"),
        ("operator.replica=1", "replica"),
        ("networkPolicy.cameras.cidrs=null", "missing property 'cidrs'"),
        ("operator.webhook.port=0", "/operator/webhook/port"),
        ("operator.webhook.service.type=NodePort", "additional properties 'type'"),
        ("networkPolicy.operatorWebhook.from=x", "/networkPolicy/operatorWebhook/from"),
    ],
)
def test_values_schema_refuses_bad_values(setting: str, words: str) -> None:
    args = ["template", "x", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert words in result.stderr


def test_secrets_are_required_when_created() -> None:
    result = helm(
        *("template", "x", str(CHART), "--kube-version", KUBE_VERSION),
        *("--set", "livekit.secret.create=true"),
        check=False,
    )
    assert result.returncode != 0
    assert "livekit.secret.apiKey is required" in result.stderr


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_chart_readme_values_table_is_current() -> None:
    result = run_script("render-chart-readme", "--check")
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text()
    assert "| `operator.watchNamespaces` | list | `[]` |" in readme


def test_readme_check_catches_an_undocumented_value(tmp_path: Path) -> None:
    # The script's own rules, applied to a values file with one comment missing.
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader(
        "render_chart_readme", str(ROOT / "scripts" / "render-chart-readme")
    )
    spec = importlib.util.spec_from_loader("render_chart_readme", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    text = "# -- documented\na: 1\nb:\n  # -- nested\n  c: x\n  d: 2\n"
    _, missing = module.table(text)
    assert missing == ["b.d"]


def test_kustomize_base_is_current_and_builds(default_docs: list[Doc]) -> None:
    result = run_script("render-deploy", "--check")
    assert result.returncode == 0, result.stderr
    built = subprocess.run(
        [tool("kubectl"), "kustomize", str(ROOT / "deploy")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert names == {(d["kind"], d["metadata"]["name"]) for d in default_docs} | {
        ("Namespace", "camfleet")
    }
    crds = subprocess.run(
        [tool("kubectl"), "kustomize", str(ROOT / "deploy" / "crds")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {d["metadata"]["name"] for d in yaml.safe_load_all(crds) if d} == {
        "cameras.camfleet.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


def _gitops_values() -> Iterator[tuple[str, Doc]]:
    for path in sorted((ROOT / "deploy" / "gitops").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Application":
                source = doc["spec"]["source"]
                assert (ROOT / source["path"] / "Chart.yaml").exists()
                yield path.name, source["helm"]["valuesObject"]
            elif doc and doc["kind"] == "HelmRelease":
                chart = doc["spec"]["chart"]["spec"]["chart"]
                assert (ROOT / chart / "Chart.yaml").exists()
                yield path.name, doc["spec"]["values"]


def test_gitops_examples_render(tmp_path: Path) -> None:
    seen = set()
    for name, values in _gitops_values():
        file = tmp_path / f"{name}.values.yaml"
        file.write_text(yaml.safe_dump(values))
        assert by_kind(render(file), "Deployment"), name
        seen.add(name)
    assert seen == {"argocd-application.yaml", "flux-helmrelease.yaml"}


def test_kind_config_maps_the_gateway_and_livekit_ports() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mappings = {
        (m["containerPort"], m["hostPort"], m["protocol"])
        for node in config["nodes"]
        for m in node.get("extraPortMappings", [])
    }
    kind_values = yaml.safe_load(KIND_VALUES.read_text())
    node_port = kind_values["gateway"]["service"]["nodePort"]
    assert (node_port, 8080, "TCP") in mappings
    assert {(7880, 7880, "TCP"), (7881, 7881, "TCP"), (7882, 7882, "UDP")} <= mappings


def test_helm_defaults_to_the_kubernetes_the_project_pins(tmp_path: Path) -> None:
    """A newcomer's `helm template t charts/camfleet` (no --kube-version) must render: the helm
    that scripts/setup builds is stamped with the pinned Kubernetes, not client-go's v1.20."""
    pinned = next(
        line.split("=", 1)[1].split()[0]
        for line in (ROOT / "scripts" / "setup").read_text().splitlines()
        if line.startswith("KUBERNETES_VERSION=")
    )
    major, minor = pinned.split(".")[:2]
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: '{{ .Capabilities.KubeVersion.Major }}."
        "{{ .Capabilities.KubeVersion.Minor }}'}\n"
    )
    rendered = yaml.safe_load(helm("template", "t", str(probe)).stdout)
    assert rendered["data"]["kube"] == f"{major}.{minor}"
    assert helm("template", "t", str(CHART)).stdout.count("kind: Deployment") >= 2
