"""A real Kubernetes control plane on loopback: etcd + kube-apiserver + kube-controller-manager.

No kubelet and no scheduler run: Pods are created by the ReplicaSet controller but never run
(camfleet's local pod runner plays the kubelet's part where a test needs it).
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
import time
from pathlib import Path

import yaml

from camfleet_dev.testbed.process import ManagedProcess, free_port, http_ok
from camfleet_dev.testbed.tools import tool

# Controllers a test needs: garbage collection by ownerReferences, namespace deletion, the
# Deployment → ReplicaSet → Pod chain, and the default ServiceAccount in each namespace.
_CONTROLLERS = ",".join(
    [
        "garbage-collector-controller",
        "namespace-controller",
        "deployment-controller",
        "replicaset-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "root-ca-certificate-publisher-controller",
    ]
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(pki: Path, sans: tuple[str, ...] = ("IP:127.0.0.1", "IP:10.0.0.1")) -> None:
    """A CA, a serving certificate for ``sans`` (+ the kubernetes names), a service-account
    key pair and a client certificate in ``system:masters`` (the API server's to its kubelets)."""
    if (pki / "apiserver.crt").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650"),
        *("-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=camfleet-testbed-ca"),
        cwd=pki,
    )
    names = ("DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default.svc", *sans)
    (pki / "san.ext").write_text(f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key"),
        *("-out", "apiserver.csr", "-subj", "/CN=kube-apiserver"),
        cwd=pki,
    )
    _openssl(
        *("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-days", "3650", "-sha256", "-extfile", "san.ext"),
        *("-out", "apiserver.crt"),
        cwd=pki,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _make_kubelet_client_cert(pki: Path) -> None:
    """The API server's client certificate to kubelets (``kubectl logs/exec``), in system:masters.

    Separate from ``_make_pki`` so that a state directory made before it existed gets one too.
    """
    if (pki / "kubelet-client.crt").exists():
        return
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "kubelet-client.key"),
        *("-out", "kubelet-client.csr", "-subj", "/O=system:masters/CN=kube-apiserver-kubelet"),
        cwd=pki,
    )
    _openssl(
        *("x509", "-req", "-in", "kubelet-client.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-days", "3650", "-sha256", "-extfile", "client.ext"),
        *("-out", "kubelet-client.crt"),
        cwd=pki,
    )


def first_service_ip(cidr: str) -> str:
    """The ClusterIP of ``kubernetes.default``: the first address of the service range."""
    return str(ipaddress.ip_network(cidr)[1])


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "camfleet",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "camfleet", "context": {"cluster": "camfleet", "user": user}}],
        "current-context": "camfleet",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


class KubeCluster:
    """etcd + kube-apiserver (+ kube-controller-manager), state kept in ``state_dir``.

    Reusing a ``state_dir`` keeps etcd's data, PKI and the admin token: objects survive a restart
    (``camfleet up`` relies on it). Ports are fresh on each start unless given.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        api_port: int | None = None,
        controller_manager: bool = True,
        address: str = "127.0.0.1",
        service_cidr: str = "10.0.0.0/24",
        controllers: str = _CONTROLLERS,
        extra_sans: tuple[str, ...] = (),
        extra_apiserver_args: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.address = address
        self.service_cidr = service_cidr
        self.controllers = controllers
        self.sans: tuple[str, ...] = (
            "IP:127.0.0.1",
            f"IP:{address}",
            f"IP:{first_service_ip(service_cidr)}",
        )
        self.sans += extra_sans
        self.extra_apiserver_args = extra_apiserver_args
        self.log_dir = state_dir / "logs"
        self.pki = state_dir / "pki"
        self.api_port = api_port or free_port()
        self.with_controller_manager = controller_manager
        self.kubeconfig = state_dir / "kubeconfig"
        self.procs: list[ManagedProcess] = []
        token_file = state_dir / "admin.token"
        state_dir.mkdir(parents=True, exist_ok=True)
        if not token_file.exists():
            token_file.write_text(secrets.token_hex(24))
            token_file.chmod(0o600)
        self.token = token_file.read_text().strip()

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    def start(self) -> None:
        _make_pki(self.pki, self.sans)
        _make_kubelet_client_cert(self.pki)
        tokens = self.state_dir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        tokens.chmod(0o600)
        etcd_client, etcd_peer = free_port(), free_port()
        etcd = ManagedProcess(
            "etcd",
            [
                tool("etcd"),
                "--data-dir",
                str(self.state_dir / "etcd"),
                "--name",
                "camfleet",
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_client}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_client}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"camfleet=http://127.0.0.1:{etcd_peer}",
                "--listen-metrics-urls",
                "",
                "--log-level",
                "warn",
                # Tests write little but fast; a small snapshot count keeps the WAL short.
                "--snapshot-count",
                "10000",
                "--unsafe-no-fsync",
            ],
            log_dir=self.log_dir,
        )
        self.procs.append(etcd)
        etcd.start()
        etcd.wait_until(lambda: http_ok(f"http://127.0.0.1:{etcd_client}/health"), 30, "health")

        apiserver = ManagedProcess(
            "kube-apiserver",
            [
                tool("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={self.pki / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki / 'apiserver.key'}",
                f"--client-ca-file={self.pki / 'ca.crt'}",
                f"--token-auth-file={tokens}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.pki / 'sa.pub'}",
                f"--service-account-signing-key-file={self.pki / 'sa.key'}",
                f"--service-cluster-ip-range={self.service_cidr}",
                f"--kubelet-client-certificate={self.pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={self.pki / 'kubelet-client.key'}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=0",
                *self.extra_apiserver_args,
            ],
            log_dir=self.log_dir,
        )
        self.procs.append(apiserver)
        apiserver.start()
        write_kubeconfig(self.kubeconfig, self.server, self.ca_file, self.token, "admin")
        apiserver.wait_until(self._ready, 120, "/readyz")

        if self.with_controller_manager:
            kcm = ManagedProcess(
                "kube-controller-manager",
                [
                    tool("kube-controller-manager"),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--leader-elect=false",
                    f"--controllers={self.controllers}",
                    f"--service-cluster-ip-range={self.service_cidr}",
                    f"--service-account-private-key-file={self.pki / 'sa.key'}",
                    f"--root-ca-file={self.pki / 'ca.crt'}",
                    "--concurrent-gc-syncs=5",
                    "--v=0",
                ],
                log_dir=self.log_dir,
            )
            self.procs.append(kcm)
            kcm.start()
            kcm.wait_until(self._default_sa_exists, 60, "the default ServiceAccount")

    def _probe(self, *args: str) -> subprocess.CompletedProcess[str] | None:
        """A readiness probe: an answer, or None when kubectl got none in time (a starting or
        busy API server is not ready yet; the caller's wait decides when to give up)."""
        try:
            return self.kubectl(*args, check=False, timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def _ready(self) -> bool:
        result = self._probe("get", "--raw", "/readyz")
        return result is not None and result.returncode == 0 and result.stdout.strip() == "ok"

    def _default_sa_exists(self) -> bool:
        result = self._probe("get", "sa", "default", "-n", "default")
        return result is not None and result.returncode == 0

    def wait_established(self, crd: str, within: float = 60) -> None:
        """Wait until the CRD named `crd` (e.g. `cameras.camfleet.io`) serves its resource.

        `kubectl wait --for=condition=Established` fails at once, instead of waiting, when it
        reads the CRD before the API server wrote its first status (`.status.conditions
        accessor error`); a busy machine makes that likely, so the condition is polled here."""
        query = '{.status.conditions[?(@.type=="Established")].status}'
        deadline = time.monotonic() + within
        while True:
            result = self._probe("get", f"crd/{crd}", "-o", f"jsonpath={query}")
            if result is not None and result.returncode == 0 and result.stdout.strip() == "True":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {crd} not Established within {within:.0f}s")
            time.sleep(0.2)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises with stderr when ``check`` and it fails."""
        result = subprocess.run(
            [tool("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=manifest)

    def create_namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name)

    def service_account_token(self, namespace: str, name: str, duration: str = "1h") -> str:
        """A real bearer token for a ServiceAccount, minted by the TokenRequest API."""
        out = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}")
        return out.stdout.strip()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def __enter__(self) -> KubeCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
