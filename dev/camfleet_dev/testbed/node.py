"""A real single-node Kubernetes cluster for the test bed (root only).

etcd + kube-apiserver (on the node's bridge address, so pods reach it) + kube-controller-manager
(default controllers) + kube-scheduler, containerd + runc with the bridge CNI plugin on a bridge
of the test bed's own, kubelet, kube-proxy (nftables) and CoreDNS (a host process on the bridge
address, the node's ``clusterDNS``). The images come from ``scripts/build-images`` (no registry).

Everything lives in ``state_dir`` except what the kubelet and containerd insist on writing
elsewhere; ``host.json`` records, before anything changes, what the host looked like, and
``cleanup_host`` puts it back: processes, mounts, cgroups, nft/iptables rules, the bridge,
sysctls and new files outside ``state_dir``. A janitor process (own session, not tied to the
test run) runs the same cleanup when the process that started the node dies without stopping
it. One node per machine at a time (a lock file): kube-proxy owns one nftables table.

The containerd image store is kept in the per-user cache (``~/.cache/camfleet/node``) so that
the images are imported once per content hash, not once per test session; stale pods from a
killed session are removed from it at start.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.process import ManagedProcess, StartError, free_port, http_ok
from camfleet_dev.testbed.tools import MissingTool, tool, tools_dir

NODE_NAME = "camfleet-node"
CLUSTER_DOMAIN = "cluster.local"
LOCK_PATH = Path("/run/camfleet-testbed-node.lock")
CNI_BIN_DIR = "/usr/lib/cni"
NETWORK_NAME = "camfleet-node"
PROJECT_IMAGES = ("operator", "gateway", "ingest", "ai-worker")
# Paths outside state_dir that the kubelet, containerd and the CNI plugins write to whatever
# their configuration says; anything new below them is removed at cleanup.
WATCHED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
)
# Sysctls the kubelet, kube-proxy and the bridge plugin set; restored at cleanup.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
IPTABLES_TABLES = ("filter", "nat", "mangle")
MNT_DETACH = 2


class NodeError(RuntimeError):
    """The node cannot run here (not root, a tool missing, the lock held too long)."""


def image_manifest() -> dict[str, dict[str, Any]]:
    """``scripts/build-images``' record: image name → {ref, size}."""
    path = tools_dir() / "images.json"
    if not path.exists():
        raise MissingTool(f"{path} is missing: run scripts/setup as root (it builds the images)")
    data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return data


def containerd_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("CAMFLEET_CACHE", cache / "camfleet")) / "node" / "containerd"


# --- the host record and its cleanup -------------------------------------------------------------


@dataclass
class HostRecord:
    """What the host looked like before the node started, and what the node added."""

    state_dir: str
    bridge: str
    nft_tables: list[str]
    containerd_socket: str
    mount_roots: list[str]
    sysctls: dict[str, str] = field(default_factory=dict)
    watched: dict[str, list[str] | None] = field(default_factory=dict)
    iptables_chains: dict[str, list[str]] = field(default_factory=dict)
    nft_before: list[str] = field(default_factory=list)
    ipsets_before: list[str] = field(default_factory=list)
    pids: list[tuple[int, str]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> HostRecord:
        data = json.loads(path.read_text())
        data["pids"] = [tuple(p) for p in data.get("pids", [])]
        return cls(**data)


def _listing(path: str) -> list[str] | None:
    """Entries two levels below ``path`` (None when it does not exist)."""
    root = Path(path)
    if not root.exists():
        return None
    out: list[str] = []
    with contextlib.suppress(OSError):
        for child in root.iterdir():
            out.append(str(child))
            if child.is_dir() and not child.is_symlink():
                with contextlib.suppress(OSError):
                    out.extend(str(c) for c in child.iterdir())
    return sorted(out)


def _sysctl_read(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _iptables_chains(binary: str, table: str) -> list[str]:
    result = subprocess.run(
        [binary, "-w", "5", "-t", table, "-S"], capture_output=True, text=True, check=False
    )
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("-N ")]


def _nft_tables() -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]


def _ipsets() -> list[str]:
    """ipsets (the NetworkPolicy enforcer keeps pod addresses in them); none without ipset."""
    try:
        out = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return out.split()


def _nft_table_empty(table: str) -> bool:
    """Only base chains, no rules (what iptables-nft leaves after its chains are deleted)."""
    out = subprocess.run(
        ["nft", "list", "table", *table.split()], capture_output=True, text=True
    ).stdout
    skip = ("table ", "chain ", "type ", "}")
    return all(not line.strip() or line.strip().startswith(skip) for line in out.splitlines())


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _kill_pid(pid: int, start: str | None = None) -> None:
    if start is not None and _proc_start_time(pid) != start:
        return  # gone, or the number was reused by someone else's process
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _shim_pids(socket: str) -> list[int]:
    """containerd's shims for ``socket``: they daemonise out of our process group."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and socket.encode() in argv:
            pids.append(int(proc.name))
    return pids


def _cgroup_dirs() -> list[Path]:
    """Every ``kubepods`` hierarchy the kubelet made (cgroup v1 controllers and the v2 mount)."""
    found = []
    for controller in Path("/sys/fs/cgroup").iterdir():
        candidate = controller / "kubepods"
        if candidate.is_dir():
            found.append(candidate)
    return found


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    for procs in root.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(x) for x in procs.read_text().split())
    return pids


def _rmdir_tree(root: Path) -> None:
    dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for d in [*dirs, root]:
        with contextlib.suppress(OSError):
            d.rmdir()


def _mounts_under(prefixes: list[str]) -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
                points.append(point)
    return sorted(set(points), key=lambda p: -p.count("/"))


def _umount_all(prefixes: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(3):  # stacked mounts show up again after the top one goes
        points = _mounts_under(prefixes)
        if not points:
            return
        for point in points:
            libc.umount2(point.encode(), MNT_DETACH)


def _remove(path: str) -> None:
    p = Path(path)
    if p.is_symlink() or p.is_file():
        with contextlib.suppress(OSError):
            p.unlink()
    elif p.is_dir():
        subprocess.run(["rm", "-rf", "--one-file-system", str(p)], check=False)


def _delete_iptables_chains(binary: str, table: str, chains: set[str]) -> None:
    """Unhook ``chains`` from every chain that jumps to them, flush them all, then delete them
    (chains that jump to each other cannot go one at a time)."""
    if not chains:
        return
    rules = subprocess.run(
        [binary, "-w", "5", "-t", table, "-S"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    for rule in rules:
        parts = shlex.split(rule)  # comments hold spaces
        if parts[:1] != ["-A"] or parts[1] in chains or "-j" not in parts:
            continue
        if parts[parts.index("-j") + 1] in chains:
            subprocess.run([binary, "-w", "5", "-t", table, "-D", *parts[1:]], check=False)
    for flag in ("-F", "-X"):
        for chain in sorted(chains):
            subprocess.run(
                [binary, "-w", "5", "-t", table, flag, chain], capture_output=True, check=False
            )


def cleanup_host(record: HostRecord) -> list[str]:
    """Undo everything the node did to the host; returns what it removed (for the logs)."""
    done: list[str] = []
    # 1. Processes: the control plane and node daemons, containerd's shims, the containers.
    for pid, start in record.pids:
        _kill_pid(pid, start)
    for pid in _shim_pids(record.containerd_socket):
        _kill_pid(pid)
        done.append(f"shim {pid}")
    for _ in range(20):
        pids = set().union(*(_cgroup_pids(d) for d in _cgroup_dirs())) if _cgroup_dirs() else set()
        if not pids:
            break
        for pid in pids:
            _kill_pid(pid)
        time.sleep(0.1)
    # 2. Mounts under the state dir, the image store, the kubelet's and containerd's fixed paths.
    new_netns = [
        e
        for w in ("/run/netns", "/var/run/netns")
        for e in (_listing(w) or [])
        if e not in (record.watched.get(w) or [])
    ]
    _umount_all([*record.mount_roots, *new_netns])
    # 3. cgroups.
    for d in _cgroup_dirs():
        _rmdir_tree(d)
        done.append(f"cgroup {d}")
    # 4. Files the daemons wrote outside the state dir.
    for path, before in record.watched.items():
        now = _listing(path)
        if now is None:
            continue
        if before is None:
            _remove(path)
            done.append(path)
            continue
        for entry in now:
            if entry not in before and Path(entry).exists():
                _remove(entry)
                done.append(entry)
    # 5. Rules: kube-proxy's tables, ours, the kubelet's iptables chains.
    existing = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    for table in record.nft_tables:
        if f"table {table}" in existing:
            subprocess.run(["nft", "delete", "table", *table.split()], check=False)
            done.append(f"nft table {table}")
    for key, before_chains in record.iptables_chains.items():
        binary, table = key.split(":")
        new = set(_iptables_chains(binary, table)) - set(before_chains)
        _delete_iptables_chains(binary, table, new)
        done += [f"{binary} -t {table} {chain}" for chain in sorted(new)]
    for name in set(_ipsets()) - set(record.ipsets_before):
        subprocess.run(["ipset", "destroy", name], capture_output=True, check=False)
        done.append(f"ipset {name}")
    # iptables-nft leaves the tables it created for those chains behind, empty.
    for table in _nft_tables():
        if table not in record.nft_before and _nft_table_empty(table):
            subprocess.run(["nft", "delete", "table", *table.split()], check=False)
            done.append(f"nft table {table}")
    # 6. The bridge and the sysctls.
    if Path("/sys/class/net", record.bridge).exists():
        subprocess.run(["ip", "link", "delete", record.bridge], check=False)
        done.append(f"bridge {record.bridge}")
    for name, value in record.sysctls.items():
        if _sysctl_read(name) not in (None, value):
            with contextlib.suppress(OSError):
                Path("/proc/sys", name).write_text(value)
            done.append(f"sysctl {name}={value}")
    return done


def leftovers(record: HostRecord) -> list[str]:
    """What of the node is still on the host: empty after a clean stop (the cleanup test)."""
    found: list[str] = []
    if _shim_pids(record.containerd_socket):
        found.append("containerd shims")
    for pid, start in record.pids:
        if _proc_start_time(pid) == start:
            found.append(f"process {pid}")
    found += [f"mount {m}" for m in _mounts_under(record.mount_roots)]
    found += [f"cgroup {d}" for d in _cgroup_dirs()]
    for path, before in record.watched.items():
        now = _listing(path)
        if now is not None and (before is None or set(now) - set(before)):
            found.append(f"files in {path}")
    found += [f"nft table {t}" for t in _nft_tables() if t not in record.nft_before]
    found += [f"ipset {n}" for n in sorted(set(_ipsets()) - set(record.ipsets_before))]
    for key, before_chains in record.iptables_chains.items():
        binary, table = key.split(":")
        extra = set(_iptables_chains(binary, table)) - set(before_chains)
        found += [f"{binary} -t {table} chain {c}" for c in sorted(extra)]
    if Path("/sys/class/net", record.bridge).exists():
        found.append(f"bridge {record.bridge}")
    for name, value in record.sysctls.items():
        if _sysctl_read(name) not in (None, value):
            found.append(f"sysctl {name}")
    return found


# --- the node -----------------------------------------------------------------------------------


def _pick_subnet() -> int:
    """A free 10.213.N.0/24 (pods) whose 10.214.N.0/24 (services) is free too."""
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-4", "addr", "show"], capture_output=True, text=True).stdout
    used = routes + addrs
    for n in range(10, 250):
        if f"10.213.{n}." not in used and f"10.214.{n}." not in used:
            return n
    raise NodeError("no free 10.213.N.0/24 for the node's bridge")


class NodeCluster:
    """A one-node cluster: control plane + containerd + kubelet + kube-proxy + CoreDNS.

    ``kube`` is the control plane (a ``KubeCluster`` bound to the bridge address); ``kubectl``
    and ``apply`` delegate to it. ``images`` maps image names (``operator``, ``ingest``, …) to
    the local references the node has.
    """

    #: The API server's port on the node address: NetworkPolicies (the chart's allow 443/6443
    #: to the API server) see the port after the Service's DNAT.
    API_PORT = 6443

    def __init__(
        self, state_dir: Path, *, subnet: int | None = None, network_policy: bool = True
    ) -> None:
        if os.geteuid() != 0:
            raise NodeError("the test bed's node needs root (kubelet, containerd, a bridge)")
        self.state_dir = state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.state_dir / "logs"
        self.subnet_index = subnet
        self.network_policy = network_policy
        self.procs: dict[str, ManagedProcess] = {}
        self.record: HostRecord | None = None
        self.record_path = self.state_dir / "host.json"
        self.images: dict[str, str] = {}
        self.image_sizes: dict[str, int] = {}
        self._lock: TextIO | None = None
        self._janitor: subprocess.Popen[bytes] | None = None
        self.kube: KubeCluster | None = None
        self.timings: dict[str, float] = {}

    # addresses -------------------------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"cfnode{self.subnet_index}"

    @property
    def pod_cidr(self) -> str:
        return f"10.213.{self.subnet_index}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.214.{self.subnet_index}.0/24"

    @property
    def _nft_table(self) -> str:
        return f"camfleet-node{self.subnet_index}"

    @property
    def node_ip(self) -> str:
        return f"10.213.{self.subnet_index}.1"

    @property
    def kubeconfig(self) -> Path:
        assert self.kube is not None
        return self.kube.kubeconfig

    @property
    def containerd_socket(self) -> Path:
        return self.state_dir / "containerd" / "containerd.sock"

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        for name in ("kubelet", "kube-proxy", "kube-scheduler", "coredns", "crictl"):
            tool(name)
        if self.network_policy:
            tool("kube-router")
            tool("ipset")
        for name in ("containerd", "ctr", "runc", "nft", "iptables", "podman"):
            tool(name)
        manifest = image_manifest()
        self.images = {name: str(entry["ref"]) for name, entry in manifest.items()}
        self.image_sizes = {name: int(entry["size"]) for name, entry in manifest.items()}
        self._take_lock()
        if self.subnet_index is None:
            self.subnet_index = _pick_subnet()
        self._record_host()
        self._start_janitor()
        self._network()
        self.kube = KubeCluster(
            self.state_dir / "kube",
            address=self.node_ip,
            api_port=self.API_PORT,
            service_cidr=self.service_cidr,
            controllers="*",
            # The node's name is not in any DNS: logs/exec/attach go to its address.
            extra_apiserver_args=("--kubelet-preferred-address-types=InternalIP",),
        )
        self.kube.start()
        for proc in self.kube.procs:
            self._track(proc)
        self.timings["control_plane"] = time.monotonic() - t0
        self._scheduler()
        self._containerd()
        self.timings["containerd"] = time.monotonic() - t0
        self._import_images()
        self.timings["images"] = time.monotonic() - t0
        self._coredns()
        self._kube_proxy()
        self._kubelet()
        self._wait_node_ready(120)
        if self.network_policy:
            self._kube_router()  # it needs the Node object
        self.timings["ready"] = time.monotonic() - t0

    def stop(self) -> None:
        if self.record is None:
            return
        kubelet = self.procs.pop("kubelet", None)
        if kubelet is not None:
            kubelet.stop(timeout=10)
        if "containerd" in self.procs and self.procs["containerd"].running:
            # Stop and remove every pod while containerd can still do it cleanly (CNI DEL frees
            # the addresses, the network namespaces and mounts go with their sandboxes).
            self.crictl("rmp", "--all", "--force", check=False, timeout=60)
        for name in ("kube-router", "kube-proxy", "coredns", "containerd", "kube-scheduler"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop(timeout=10)
        if self.kube is not None:
            self.kube.stop()
        self.procs.clear()
        cleanup_host(self.record)
        if self._janitor is not None:
            with contextlib.suppress(ProcessLookupError):
                self._janitor.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._janitor.wait(timeout=10)
            self._janitor = None
        self.record_path.unlink(missing_ok=True)
        self.record = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> NodeCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # control ---------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        assert self.kube is not None
        return self.kube.kubectl(*args, input=input, check=check, timeout=timeout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        assert self.kube is not None
        self.kube.apply(manifest, namespace)

    def crictl(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tool("crictl"), f"--runtime-endpoint=unix://{self.containerd_socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"crictl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def restart_kubelet(self) -> None:
        """Stop the kubelet (its pods keep running, as on a real node) and start it again."""
        self.procs["kubelet"].stop(timeout=10)
        self._kubelet()
        self._wait_node_ready(60)

    # pieces ----------------------------------------------------------------------------------
    def _track(self, proc: ManagedProcess) -> None:
        self.procs[proc.name] = proc
        assert self.record is not None
        start = _proc_start_time(proc.pid)
        if start is not None:
            self.record.pids.append((proc.pid, start))
            self.record.save(self.record_path)

    def _run(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        proc = ManagedProcess(name, argv, log_dir=self.log_dir, env=env)
        proc.start()
        self._track(proc)

    def _take_lock(self, timeout: float = 600) -> None:
        self._lock = LOCK_PATH.open("a")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeError(f"another test bed node holds {LOCK_PATH}") from None
                time.sleep(1)

    def _record_host(self) -> None:
        nft_before = _nft_tables()  # before iptables -S, which creates tables of its own
        chains = {}
        for binary in ("iptables", "ip6tables"):
            for table in IPTABLES_TABLES:
                chains[f"{binary}:{table}"] = _iptables_chains(binary, table)
        self.record = HostRecord(
            state_dir=str(self.state_dir),
            bridge=self.bridge,
            nft_tables=["ip kube-proxy", "ip6 kube-proxy", f"inet {self._nft_table}"],
            containerd_socket=str(self.containerd_socket),
            mount_roots=[str(self.state_dir), str(containerd_root()), "/run/containerd"],
            sysctls={n: v for n in SYSCTLS if (v := _sysctl_read(n)) is not None},
            watched={p: _listing(p) for p in WATCHED_PATHS},
            iptables_chains=chains,
            nft_before=nft_before,
            ipsets_before=_ipsets(),
        )
        self.record.save(self.record_path)

    def _start_janitor(self) -> None:
        """A watcher in its own session: if this process dies without ``stop``, it cleans up."""
        with (self.state_dir / "janitor.log").open("ab") as log:
            self._janitor = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "camfleet_dev.testbed.node",
                    "janitor",
                    str(self.record_path),
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _network(self) -> None:
        """The node's bridge, and a forward filter: pods talk to each other and to the host,
        never through it to anything else (no masquerade, no route off the machine)."""
        br = self.bridge
        subprocess.run(["ip", "link", "add", "name", br, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{self.node_ip}/24", "dev", br], check=True)
        subprocess.run(["ip", "link", "set", br, "up"], check=True)
        table = self._nft_table
        rules = (
            f"table inet {table} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority -10; policy accept;\n"
            f'    iifname "{br}" oifname "{br}" accept\n'
            f'    iifname "{br}" drop\n'
            f'    oifname "{br}" drop\n'
            "  }\n"
            "}\n"
        )
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        cni = self.state_dir / "cni" / "net.d"
        cni.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": br,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr, "gateway": self.node_ip}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.state_dir / "cni" / "ipam"),
                    },
                }
            ],
        }
        (cni / "10-camfleet.conflist").write_text(json.dumps(conflist, indent=1))

    def _scheduler(self) -> None:
        self._run(
            "kube-scheduler",
            [
                tool("kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=0",
            ],
        )

    def _containerd(self) -> None:
        d = self.state_dir / "containerd"
        d.mkdir(parents=True, exist_ok=True)
        root = containerd_root()
        root.mkdir(parents=True, exist_ok=True)
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        config = f"""version = 2
root = "{root}"
state = "{d / "state"}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[metrics]
  address = ""
{cri}
  sandbox_image = "{self.images["pause"]}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
{cri[:-1]}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false
{cri[:-1]}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri[:-1]}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{d / "runc"}"
{cri[:-1]}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.state_dir / "cni" / "net.d"}"
  max_conf_num = 1
"""
        path = d / "config.toml"
        path.write_text(config)
        self._run("containerd", [tool("containerd"), "--config", str(path)])
        proc = self.procs["containerd"]
        proc.wait_until(self._cri_ready, 60, "CRI ready")
        # Pods of a session that was killed are still in the persistent store: remove them
        # before the kubelet sees them.
        self.crictl("rmp", "--all", "--force", check=False, timeout=60)

    def _cri_ready(self) -> bool:
        try:
            return self.crictl("info", check=False, timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _ctr(self, *args: str, input_fd: int | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("ctr"), "--address", str(self.containerd_socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            stdin=input_fd,
        )

    def _import_images(self) -> None:
        present = set(self._ctr("images", "ls", "-q").stdout.split())
        env = dict(os.environ)
        podman = containerd_root().parent.parent / "podman"
        env["CONTAINERS_STORAGE_CONF"] = str(podman / "storage.conf")
        env["CONTAINERS_CONF"] = str(podman / "containers.conf")
        for name, ref in self.images.items():
            if ref in present or name.startswith("base-"):
                continue
            save = subprocess.Popen(
                [tool("podman"), "save", "--format", "docker-archive", ref],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            assert save.stdout is not None
            result = self._ctr("images", "import", "-", input_fd=save.stdout.fileno())
            save.stdout.close()
            save.wait()
            if result.returncode != 0 or save.returncode != 0:
                raise StartError(f"importing {ref} into containerd failed: {result.stderr}")
        # The chart names every camfleet image <registry>/camfleet-<component>:<one tag>; the
        # images have a content hash each, so the node also knows them by one tag for the set.
        present = set(self._ctr("images", "ls", "-q").stdout.split())
        for name in PROJECT_IMAGES:
            alias = self.images_alias(name)
            if alias not in present:
                self._ctr("images", "tag", "--force", self.images[name], alias)
        # Older builds go, so that the persistent image store does not grow with every change.
        wanted = {*self.images.values(), *(self.images_alias(n) for n in PROJECT_IMAGES)}
        stale = [r for r in present if r.startswith(self.registry + "/") and r not in wanted]
        if stale:
            self._ctr("images", "rm", *stale)

    @property
    def registry(self) -> str:
        return self.images["operator"].rsplit("/", 1)[0]

    def images_alias(self, name: str) -> str:
        """``<registry>/camfleet-<name>:<release tag>``: how the chart names a project image."""
        return f"{self.registry}/camfleet-{name}:{self.release_tag}"

    @property
    def release_tag(self) -> str:
        """One tag for the operator, gateway, ingest and AI worker images of this build."""
        refs = " ".join(self.images[n] for n in PROJECT_IMAGES)
        return "test-" + hashlib.sha256(refs.encode()).hexdigest()[:12]

    def _coredns(self) -> None:
        health, ready = free_port(), free_port()
        corefile = self.state_dir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {self.node_ip}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.kubeconfig} camfleet
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"""
        )
        self._run("coredns", [tool("coredns"), "-conf", str(corefile)])
        self.procs["coredns"].wait_until(
            lambda: http_ok(f"http://127.0.0.1:{ready}/ready"), 60, "ready"
        )

    def _kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": self.node_ip,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": self.pod_cidr,
            "nodePortAddresses": [f"{self.node_ip}/32"],
            # Leave the host's conntrack settings alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.state_dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._run("kube-proxy", [tool("kube-proxy"), f"--config={path}", "--v=0"])

    def _kube_router(self) -> None:
        """kube-router's NetworkPolicy controller only (iptables + ipsets): the bridge CNI
        plugin enforces no policy, and the chart ships them."""
        health = free_port()
        self._run(
            "kube-router",
            [
                tool("kube-router"),
                f"--kubeconfig={self.kubeconfig}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                f"--hostname-override={NODE_NAME}",
                f"--health-port={health}",
                f"--service-cluster-ip-range={self.service_cidr}",
            ],
        )
        self.procs["kube-router"].wait_until(
            lambda: http_ok(f"http://127.0.0.1:{health}/healthz"), 60, "healthz"
        )

    def _kubelet(self) -> None:
        assert self.kube is not None
        root = self.state_dir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        resolv = self.state_dir / "resolv.conf"
        resolv.write_text("# test bed node: no upstream DNS, cluster names only\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine: cgroup v1, swap allowed, hard nofile limit 20000.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "maxOpenFiles": 20000,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.node_ip,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.kube.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [self.node_ip],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "registerNode": True,
            # Never collect the images: there is no registry to pull them back from.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusReportFrequency": "10s",
        }
        path = self.state_dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        self._run(
            "kubelet",
            [
                tool("kubelet"),
                f"--config={path}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={self.state_dir / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.node_ip}",
                "--v=0",
            ],
        )

    def _node_ready(self) -> bool:
        try:
            out = self.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                check=False,
                timeout=10,
            )
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0 and out.stdout.strip() == "True"

    def _wait_node_ready(self, timeout: float) -> None:
        self.procs["kubelet"].wait_until(self._node_ready, timeout, f"node {NODE_NAME} Ready")

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return items


def _janitor(record_path: Path, parent: int) -> int:
    """Wait for ``parent`` to die; if it did not stop the node (record still there), clean up."""
    stop = False

    def _on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_term)
    while not stop:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    if stop or not record_path.exists():
        return 0
    time.sleep(1)  # let the children die of their parent-death signal first
    record = HostRecord.load(record_path)
    done = cleanup_host(record)
    print(json.dumps({"event": "janitor cleanup", "removed": done}), flush=True)
    record_path.unlink(missing_ok=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["janitor"] and len(argv) == 3:
        return _janitor(Path(argv[1]), int(argv[2]))
    if argv[:1] == ["cleanup"] and len(argv) == 2:
        record_path = Path(argv[1])
        print(json.dumps(cleanup_host(HostRecord.load(record_path))))
        record_path.unlink(missing_ok=True)
        return 0
    print("usage: python -m camfleet_dev.testbed.node janitor RECORD PID | cleanup RECORD")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
