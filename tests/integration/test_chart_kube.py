"""The Helm chart on the test bed's real kube-apiserver.

Two releases are rendered (default values: cluster-wide; all-options: two watched namespaces,
shards, every optional object), validated by kubeconform against JSON schemas generated here
from the API server's own OpenAPI v3 (kubeconform cannot download its schemas here), applied
with server-side apply (dry-run, then for real), and their RBAC is measured with
SelfSubjectRulesReview and `kubectl auth can-i` as each ServiceAccount.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.tools import repo_root, tool

ROOT = repo_root()
CHART = ROOT / "charts" / "camfleet"
KUBE_VERSION = "1.35.4"
Doc = dict[str, Any]
Rule = tuple[str, str, str]  # (apiGroup, resource, verb)

# Default values, cluster-wide. Release names keep the cluster-scoped objects apart.
DEFAULT_NS, DEFAULT_RELEASE, DEFAULT_FULL = "cfdef", "cfdef", "cfdef-camfleet"
# All options: fullnameOverride "cfall", watching two namespaces, a third for ingest only.
ALL_NS, ALL_FULL = "cfall", "cfall"
WATCHED = ("cfall-cams-a", "cfall-cams-b")
EXTRA = "cfall-cams-c"

# Minimal stand-ins for the Prometheus Operator's CRDs, so the ServiceMonitor/PodMonitor objects
# of the all-options render can be applied (their own schema is not what is tested here).
MONITORING_CRDS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names:
    kind: ServiceMonitor
    plural: servicemonitors
    singular: servicemonitor
    listKind: ServiceMonitorList
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PodMonitor, plural: podmonitors, singular: podmonitor, listKind: PodMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def render(release: str, namespace: str, *values: Path) -> str:
    args = [tool("helm"), "template", release, str(CHART), "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION]
    for v in values:
        args += ["-f", str(v)]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout


def docs_of(manifest: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(manifest) if d]


# --- JSON schemas from the API server's OpenAPI v3, in kubeconform's file layout -------------


def _gvk(doc: Doc) -> tuple[str, str, str]:
    group, _, version = doc["apiVersion"].rpartition("/")
    return group, version, doc["kind"]


def schema_file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` for this GVK."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def _strict(node: Any) -> Any:
    """Refs to local definitions; objects reject unknown fields (like kubeconform's -strict
    schemas) unless the API itself preserves unknown fields there."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/definitions/")
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def write_schemas(kube: KubeCluster, gvks: set[tuple[str, str, str]], out: Path) -> None:
    index = json.loads(kube.kubectl("get", "--raw", "/openapi/v3").stdout)["paths"]
    for group, version in sorted({(g, v) for g, v, _ in gvks}):
        path = f"api/{version}" if not group else f"apis/{group}/{version}"
        assert path in index, f"the API server does not serve {path}"
        raw = kube.kubectl("get", "--raw", index[path]["serverRelativeURL"]).stdout
        schemas: dict[str, Any] = json.loads(raw)["components"]["schemas"]
        for name, schema in schemas.items():
            for declared in schema.get("x-kubernetes-group-version-kind", []):
                gvk = (declared["group"], declared["version"], declared["kind"])
                if gvk not in gvks:
                    continue
                needed, todo = {name}, [name]
                while todo:
                    for ref in _refs(schemas[todo.pop()]):
                        if ref not in needed:
                            needed.add(ref)
                            todo.append(ref)
                document = {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "$ref": f"#/definitions/{name}",
                    "definitions": {n: _strict(schemas[n]) for n in sorted(needed)},
                }
                (out / schema_file_name(*gvk)).write_text(json.dumps(document))


def kubeconform(schemas: Path, manifest: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            tool("kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-schema-location",
            f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    report["returncode"] = result.returncode
    return report


# --- the two releases, validated and applied once per module ------------------------------


@dataclass
class Installed:
    kube: KubeCluster
    schemas: Path
    manifests: dict[str, Path]
    applied: set[str]

    def ensure(self, values: str) -> None:
        """Apply a render once (the RBAC tests need it there, in any order they run)."""
        if values not in self.applied:
            _apply(self.kube, self.manifests[values])
            self.applied.add(values)


def _apply(kube: KubeCluster, manifest: Path, *extra: str) -> None:
    kube.kubectl(
        "apply", "--server-side", "--field-manager=helm-chart-test", *extra, "-f", str(manifest)
    )


@pytest.fixture(scope="module")
def installed(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("chart")
    kube.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    kube.apply(MONITORING_CRDS)
    for crd in (
        "cameras.camfleet.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
    ):
        kube.wait_established(crd)
    manifests = {
        "default": tmp / "default.yaml",
        "all-options": tmp / "all-options.yaml",
    }
    manifests["default"].write_text(render(DEFAULT_RELEASE, DEFAULT_NS))
    manifests["all-options"].write_text(
        render("cfall", ALL_NS, CHART / "ci" / "all-options-values.yaml")
    )
    gvks = {_gvk(d) for m in manifests.values() for d in docs_of(m.read_text())}
    schemas = tmp / "schemas"
    schemas.mkdir()
    write_schemas(kube, gvks, schemas)
    for ns in (DEFAULT_NS, ALL_NS, *WATCHED, EXTRA):
        kube.create_namespace(ns)
    return Installed(kube, schemas, manifests, set())


@pytest.mark.parametrize("values", ["default", "all-options"])
def test_render_validates_against_the_api_servers_schemas(
    installed: Installed, values: str
) -> None:
    report = kubeconform(installed.schemas, installed.manifests[values])
    bad = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert report["returncode"] == 0, bad
    assert not bad
    summary = report["summary"]
    assert summary["valid"] == len(docs_of(installed.manifests[values].read_text()))
    assert summary["invalid"] == summary["errors"] == summary["skipped"] == 0


def test_kubeconform_with_these_schemas_catches_mistakes(
    installed: Installed, tmp_path: Path
) -> None:
    # A misspelt field, a wrong type and a kind the schemas do not know must all fail.
    docs = docs_of(installed.manifests["default"].read_text())
    deployment = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    service = copy.deepcopy(next(d for d in docs if d["kind"] == "Service"))
    service["spec"]["ports"][0]["port"] = "eighty"
    camera = {
        "apiVersion": "camfleet.io/v1alpha1",
        "kind": "Camera",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"source": {"url": "rtsp://10.0.0.1/s"}},
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([deployment, service, camera]))
    report = kubeconform(installed.schemas, bad)
    statuses = {r["kind"]: r["status"] for r in report["resources"]}
    assert report["returncode"] != 0
    assert statuses["Deployment"] == "statusInvalid"
    assert statuses["Service"] == "statusInvalid"
    assert statuses["Camera"] == "statusError"  # no schema: not part of the rendered kinds


@pytest.mark.parametrize("values", ["default", "all-options"])
def test_render_applies_server_side(installed: Installed, values: str) -> None:
    manifest = installed.manifests[values]
    _apply(installed.kube, manifest, "--dry-run=server")
    _apply(installed.kube, manifest)
    installed.applied.add(values)
    # Re-applying the same render is accepted: no field-manager conflicts with itself.
    again = installed.kube.kubectl(
        "apply", "--server-side", "--field-manager=helm-chart-test", "-f", str(manifest)
    )
    assert "serverside-applied" in again.stdout
    listed = installed.kube.kubectl("get", "-f", str(manifest), "-o", "name").stdout.split()
    assert len(listed) == len(docs_of(manifest.read_text()))


def test_camera_crd_serves_and_peering_objects_exist(installed: Installed) -> None:
    kube = installed.kube
    installed.ensure("all-options")
    kube.apply(
        yaml.safe_dump(
            {
                "apiVersion": "camfleet.io/v1alpha1",
                "kind": "Camera",
                "metadata": {"name": "chart-lobby", "labels": {"camfleet.io/shard": "a"}},
                "spec": {"source": {"url": "rtsp://192.168.10.20:554/stream1"}},
            }
        ),
        namespace=WATCHED[0],
    )
    got = json.loads(
        kube.kubectl("get", "cam", "chart-lobby", "-n", WATCHED[0], "-o", "json").stdout
    )
    assert got["spec"]["source"]["transport"] == "tcp"  # defaulted by the CRD's schema
    resources = kube.kubectl("api-resources", "--api-group=camfleet.io", "-o", "name").stdout
    assert resources.split() == ["cameras.camfleet.io"]
    peerings = kube.kubectl("get", "kopfpeerings.kopf.dev", "-n", WATCHED[1], "-o", "name").stdout
    assert sorted(peerings.split()) == [
        "kopfpeering.kopf.dev/cfall-peering-a",
        "kopfpeering.kopf.dev/cfall-peering-rest",
    ]
    # Leave nothing for an operator another test may run cluster-wide to pick up.
    kube.kubectl("delete", "cam", "chart-lobby", "-n", WATCHED[0], "--wait=false")
    installed.ensure("default")
    cluster = kube.kubectl("get", "clusterkopfpeerings.kopf.dev", DEFAULT_FULL, "-o", "name")
    assert cluster.stdout.strip() == f"clusterkopfpeering.kopf.dev/{DEFAULT_FULL}"


# --- RBAC, measured as each ServiceAccount ---------------------------------------------------


def sa(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def rules_of(kube: KubeCluster, user: str, namespace: str) -> set[Rule]:
    """Every (group, resource, verb) `user` may use in `namespace` (SelfSubjectRulesReview)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    out = kube.kubectl(
        "create",
        f"--as={user}",
        "--validate=false",
        "-f",
        "-",
        "-o",
        "json",
        input=json.dumps(review),
    ).stdout
    status = json.loads(out)["status"]
    assert not status.get("incomplete"), status
    rules: set[Rule] = set()
    for rule in status["resourceRules"]:
        assert not rule.get("resourceNames"), rule
        for group in rule.get("apiGroups", []):
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    rules.add((group, resource, verb))
    return rules


def granted(kube: KubeCluster, user: str, namespace: str) -> set[Rule]:
    """What the chart granted: the rules minus those every authenticated account has."""
    baseline = rules_of(kube, sa(namespace, "default"), namespace)
    return rules_of(kube, user, namespace) - baseline


def can(kube: KubeCluster, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    answer = kube.kubectl(*args, check=False).stdout.strip()
    assert answer in ("yes", "no"), answer
    return answer == "yes"


def expand(*entries: tuple[str, str, str]) -> set[Rule]:
    return {(g, r, v) for g, r, verbs in entries for v in verbs.split()}


OPERATOR_NAMESPACED = expand(
    ("camfleet.io", "cameras", "get list watch patch"),
    ("camfleet.io", "cameras/status", "get patch"),
    ("camfleet.io", "cameras/finalizers", "update"),
    ("apps", "deployments", "get create patch delete"),
    ("", "secrets", "get create patch delete"),
    ("", "pods", "list watch"),
    ("", "events", "create patch"),
)
KOPF_CRDS = expand(("apiextensions.k8s.io", "customresourcedefinitions", "list watch"))


def test_operator_cluster_wide_rbac_is_exactly_what_it_needs(installed: Installed) -> None:
    kube = installed.kube
    installed.ensure("default")
    operator = sa(DEFAULT_NS, f"{DEFAULT_FULL}-operator")
    expected = (
        OPERATOR_NAMESPACED
        | KOPF_CRDS
        | expand(("kopf.dev", "clusterkopfpeerings", "get list watch patch"))
    )
    for namespace in ("default", WATCHED[0]):
        assert granted(kube, operator, namespace) == expected, namespace
    assert can(kube, operator, "patch", "cameras/status", "default")
    assert can(kube, operator, "get", "secrets", "kube-system")  # cluster-wide mode: by design
    for verb, resource in (
        ("list", "secrets"),
        ("watch", "secrets"),
        ("delete", "namespaces"),
        ("create", "pods"),
        ("delete", "cameras"),
        ("create", "clusterrolebindings"),
        ("update", "customresourcedefinitions"),
    ):
        assert not can(kube, operator, verb, resource, "default"), f"{verb} {resource}"


def test_operator_namespaced_rbac_stays_in_its_namespaces(installed: Installed) -> None:
    kube = installed.kube
    installed.ensure("all-options")
    operator = sa(ALL_NS, f"{ALL_FULL}-operator")
    framework = KOPF_CRDS | expand(("", "namespaces", "list watch"))
    peering = expand(("kopf.dev", "kopfpeerings", "get list watch patch"))
    for namespace in WATCHED:
        assert granted(kube, operator, namespace) == OPERATOR_NAMESPACED | peering | framework
    for namespace in (EXTRA, "default", "kube-system", ALL_NS):
        assert granted(kube, operator, namespace) == framework, namespace
        assert not can(kube, operator, "get", "secrets", namespace)
        assert not can(kube, operator, "create", "deployments", namespace)
    assert not can(kube, operator, "get", "secrets", None)
    assert not can(kube, operator, "list", "cameras", None)
    assert not can(kube, operator, "patch", "clusterkopfpeerings.kopf.dev", None)


@pytest.mark.parametrize("release", ["default", "all-options"])
def test_gateway_only_reviews_and_reads_cameras(installed: Installed, release: str) -> None:
    kube = installed.kube
    installed.ensure(release)
    gateway = (
        sa(DEFAULT_NS, f"{DEFAULT_FULL}-gateway")
        if release == "default"
        else sa(ALL_NS, f"{ALL_FULL}-gateway")
    )
    expected = expand(
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("camfleet.io", "cameras", "get list watch"),
    )
    for namespace in ("default", WATCHED[0]):
        assert granted(kube, gateway, namespace) == expected
    assert can(kube, gateway, "list", "cameras", None)  # the viewer's camera list
    # The rules above are exact; a few direct questions make the point readable.
    for verb, resource in (
        ("create", "cameras"),
        ("patch", "cameras/status"),
        ("delete", "secrets"),
        ("create", "deployments"),
        ("update", "configmaps"),
    ):
        assert not can(kube, gateway, verb, resource, WATCHED[0]), f"{verb} {resource}"
    assert not can(kube, gateway, "get", "secrets", WATCHED[0])


def test_ingest_service_account_can_do_nothing(installed: Installed) -> None:
    kube = installed.kube
    installed.ensure("all-options")
    installed.ensure("default")
    for namespace, name in (
        (DEFAULT_NS, f"{DEFAULT_FULL}-ingest"),
        *((ns, f"{ALL_FULL}-ingest") for ns in (*WATCHED, EXTRA)),
    ):
        account = json.loads(kube.kubectl("get", "sa", name, "-n", namespace, "-o", "json").stdout)
        assert account["automountServiceAccountToken"] is False
        user = sa(namespace, name)
        assert granted(kube, user, namespace) == set()
        assert not can(kube, user, "get", "cameras", namespace)
        assert not can(kube, user, "get", "secrets", namespace)


def test_viewer_and_editor_roles(installed: Installed) -> None:
    kube = installed.kube
    installed.ensure("default")
    namespace = WATCHED[0]
    for user, role in (("alice", "viewer"), ("bob", "editor")):
        kube.apply(
            yaml.safe_dump(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": f"chart-test-{user}"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": f"{DEFAULT_FULL}-{role}",
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                    ],
                }
            ),
            namespace=namespace,
        )
    view = ["auth", "can-i", "get", "cameras", "--subresource=view", "-n", namespace]
    assert kube.kubectl(*view, "--as=alice", check=False).stdout.strip() == "yes"
    assert kube.kubectl(*view, "--as=bob", check=False).stdout.strip() == "yes"
    assert kube.kubectl(*view, "--as=carol", check=False).stdout.strip() == "no"
    assert not can(kube, "alice", "create", "cameras", namespace)
    assert can(kube, "bob", "create", "cameras", namespace)
    assert not can(kube, "bob", "get", "secrets", namespace)
    assert not can(kube, "alice", "get", "cameras", "default")  # bound in one namespace only
    labels = json.loads(
        kube.kubectl("get", "clusterrole", f"{DEFAULT_FULL}-viewer", "-o", "json").stdout
    )["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-view"] == "true"


def test_schema_file_names_match_kubeconform() -> None:
    # kubeconform derives KindSuffix from the first label of the group and the version.
    assert schema_file_name("", "v1", "Service") == "service-v1.json"
    assert schema_file_name("apps", "v1", "Deployment") == "deployment-apps-v1.json"
    assert schema_file_name("camfleet.io", "v1alpha1", "Camera") == "camera-camfleet-v1alpha1.json"
    assert re.fullmatch(
        r"[a-z]+-rbac-v1\.json", schema_file_name("rbac.authorization.k8s.io", "v1", "Role")
    )


def test_helm_install_upgrade_uninstall(installed: Installed) -> None:
    """The real Helm lifecycle against the API server: NOTES, upgrade, CRDs kept on uninstall."""
    kube = installed.kube

    def helm(*args: str) -> str:
        result = subprocess.run(
            [tool("helm"), f"--kubeconfig={kube.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    base = ("cfhelm", str(CHART), "-n", "cfhelm")
    out = helm("install", *base, "--create-namespace")
    assert "kubectl -n cfhelm create secret generic camfleet-livekit" in out
    assert "port-forward svc/cfhelm-camfleet-gateway 8080:80" in out
    assert "http://cfhelm-camfleet-operator-webhook.cfhelm.svc:8088/livekit/webhook" in out
    helm("upgrade", *base, "--set", "gateway.replicas=3", "--set", "operator.replicas=0")
    gateway = json.loads(
        kube.kubectl(
            "get", "deploy", "cfhelm-camfleet-gateway", "-n", "cfhelm", "-o", "json"
        ).stdout
    )
    assert gateway["spec"]["replicas"] == 3
    operator = kube.kubectl(
        "get",
        "deploy",
        "cfhelm-camfleet-operator",
        "-n",
        "cfhelm",
        "-o",
        "jsonpath={.spec.replicas}",
    )
    assert operator.stdout == "0"
    helm("uninstall", "cfhelm", "-n", "cfhelm", "--wait")
    gone = kube.kubectl("get", "clusterrole", "cfhelm-camfleet-operator", check=False)
    assert gone.returncode != 0
    kube.kubectl("get", "crd", "cameras.camfleet.io")  # Helm never deletes CRDs
