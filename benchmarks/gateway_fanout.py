"""Overlay gateway fan-out benchmark: deliveries/s, latency, CPU and memory per connection.

Everything runs on loopback in separate processes: redis-server, the gateway
(`python -m overlay_gateway` settings, uvloop), a publisher (50 cameras x 10 events/s of
~400-byte contract-valid events, pipelined XADD) and a Node.js load generator
(`gateway_loadgen.js`: raw-socket WebSocket clients, each subscribed to K cameras).
For each client count, the same load runs against each server in turn:

- `shared`: the real gateway, each event serialised and framed once, the same bytes written to
  every subscriber;
- `naive`: the same gateway with only the fan-out replaced by per-client serialisation
  (`json.dumps` of the message for every subscriber, as aiohttp's `send_json` does, then framed
  per client), so the difference is the cost the shared-bytes path saves;
- optionally `node`: the Node.js `ws` peer of ../shared/bench/ws-baseline, adapted to the same
  stream keys and messages (`gateway_node_peer.js`; pass `--node-modules` with `ws` + `ioredis`).

Before that, the CPU per delivery of both fan-outs is measured in-process with no-op sockets,
a figure that other processes competing for the CPU do not distort.

Then idle memory: N subscribed clients that receive nothing; (RSS after - RSS before) / N, for
each server of `--idle-modes`.

`--ramp` replaces the fixed-rate runs: at each client count the offered event rate rises step
by step until p99 passes `--p99-bound` (50 ms); with `--pin 0:1` the server under test runs on
CPU 0 and Redis, the publisher and the load generator on CPU 1 (taskset), for every server.

    .venv/bin/python benchmarks/gateway_fanout.py                        # bounded, ~1.5 min
    .venv/bin/python benchmarks/gateway_fanout.py --clients 100,2000,10000 --idle 10000
    .venv/bin/python benchmarks/gateway_fanout.py --modes shared,node --node-modules DIR
    .venv/bin/python benchmarks/gateway_fanout.py --clients 100,1000 --modes shared --idle 2000 \
        --profile DIR    # py-spy stacks per run, tracemalloc of the idle connections
    .venv/bin/python benchmarks/gateway_fanout.py --clients "" --idle 10000 \
        --idle-modes shared,node --node-modules DIR      # idle memory, side by side
    .venv/bin/python benchmarks/gateway_fanout.py --clients 1000 --modes shared,node \
        --node-modules DIR --pin 0:1 --ramp 10,20,40,60,80,120,160 --idle 0

Prints one JSON line per scenario and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "gateway_loadgen.js"
TOKEN = "bench-" + secrets.token_hex(8)
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def camera(i: int) -> str:
    return f"bench/cam{i:02d}"


# --- the gateway under test (subprocess) ------------------------------------------------------


def serve(mode: str, trace: str = "") -> None:
    """Run the gateway from CAMFLEET_GATEWAY_* settings; `naive` swaps in per-client JSON.

    With `trace`, tracemalloc runs and each SIGUSR1 writes a snapshot to `trace`.N.
    """
    if trace:
        import signal
        import tracemalloc

        tracemalloc.start(12)
        taken = iter(range(1_000_000))

        def dump(_sig: int, _frame: object) -> None:
            tracemalloc.take_snapshot().dump(f"{trace}.{next(taken)}")

        signal.signal(signal.SIGUSR1, dump)
    from overlay_gateway import keys
    from overlay_gateway.app import init_app
    from overlay_gateway.app import serve as run_gateway
    from overlay_gateway.logs import configure
    from overlay_gateway.settings import Settings

    settings = Settings()
    configure(settings.log_level)
    app = init_app(settings)
    if mode == "naive":
        app[keys.HUB] = naive_hub(app[keys.METRICS])
    run_gateway(app, settings)


def naive_hub(metrics: Any) -> Any:
    """The gateway's hub with per-client serialisation instead of shared bytes."""
    import orjson

    from overlay_gateway.hub import Hub, text_frame

    class NaiveHub(Hub):
        def publish(self, camera: str, batch: list[tuple[str, bytes]], arrived: float) -> int:
            subs = self._subscribers.get(camera)
            if not subs or not batch:
                return 0
            # Parsing once is not what is compared: the naive path re-serialises per client.
            messages = [orjson.loads(payload) for _, payload in batch]
            delivered = dropped = 0
            for conn in subs:
                if conn.replaying.get(camera) is not None:
                    continue
                for message in messages:
                    data = json.dumps(message, separators=(",", ":")).encode()
                    dropped += conn.send(text_frame(data), camera)
                    delivered += 1
            self.metrics.events_out += delivered
            self.metrics.delivery_latency.observe(time.monotonic() - arrived)
            return delivered

    return NaiveHub(metrics)


def fanout_cpu(subscribers: int = 2000, events: int = 100) -> dict[str, float]:
    """In-process CPU per delivery of each fan-out, sockets replaced by no-op writers.

    Isolates the gateway's own work per delivery from syscalls and from other processes
    competing for the CPU (which dominate the end-to-end figures on a shared machine).
    """
    import asyncio

    from overlay_gateway.hub import Connection, Hub
    from overlay_gateway.metrics import Metrics
    from overlay_gateway.protocol import event_message

    class NullWriter:
        def write(self, data: bytes) -> None:
            pass

        def get_write_buffer_size(self) -> int:
            return 0

        def is_closing(self) -> bool:
            return False

    event = (
        b'{"v":1,"camera":"bench/cam00","ts":1764000000000,"frame":1,"source":"bench",'
        b'"objects":[{"id":"t1","label":"person","score":0.87,"box":[0.112,0.084,0.301,0.277]}],'
        b'"attributes":{"zone":"entrance-north","pad":"' + b"x" * 150 + b'"}}'
    )

    async def measure(hub: Hub) -> float:
        for i in range(subscribers):
            conn = Connection(
                hub,
                NullWriter(),
                ident=str(i),
                queue_size=64,
                high_water=1 << 18,
                slow_timeout=60,
                kick=lambda _r: None,
            )
            hub.add(conn)
            hub.subscribe(conn, "bench/cam00")
            hub.activate(conn, "bench/cam00", [], [], None)
        started = time.process_time()
        for i in range(events):
            # As the broker does: the client message is built once per event.
            payload = event_message("bench/cam00", f"{i}-0", event)
            hub.publish("bench/cam00", [(f"{i}-0", payload)], time.monotonic())
        return (time.process_time() - started) / (subscribers * events) * 1e9

    shared = asyncio.run(measure(Hub(Metrics())))
    naive = asyncio.run(measure(naive_hub(Metrics())))
    return {"shared_ns": round(shared), "naive_ns": round(naive), "ratio": round(naive / shared, 1)}


# --- the publisher (subprocess) --------------------------------------------------------------


def publish(redis_url: str, cams: int, rate: float) -> None:
    """XADD rate events/s to each of `cams` streams, pipelined every 5 ms, until killed."""
    import redis

    from camfleet.events import DEFAULT_RETENTION, STREAM_FIELD, stream_key

    r = redis.Redis.from_url(redis_url)
    keys = [stream_key(camera(i)) for i in range(cams)]
    pad = "x" * 150
    total = rate * cams
    sent, seq, ci = 0, 0, 0
    t0 = time.time()
    while True:
        now = time.time()
        owed = int((now - t0) * total) - sent
        if owed > 0:
            pipe = r.pipeline(transaction=False)
            ts = int(now * 1000)
            for _ in range(owed):
                # Built by hand (valid per the contract): the publisher must stay cheap.
                event = (
                    f'{{"v":1,"camera":"{camera(ci)}","ts":{ts},"frame":{seq},"source":"bench",'
                    f'"objects":[{{"id":"t{seq % 7}","label":"person","score":0.87,'
                    f'"box":[0.112,0.084,0.301,0.277]}}],'
                    f'"attributes":{{"zone":"entrance-north","pad":"{pad}"}}}}'
                )
                pipe.xadd(
                    keys[ci], {STREAM_FIELD: event}, maxlen=DEFAULT_RETENTION, approximate=True
                )
                ci = (ci + 1) % cams
                seq += 1
            pipe.execute()
            sent += owed
        time.sleep(0.005)


# --- orchestration ---------------------------------------------------------------------------


# `--pin`: the server under test on one core, everything else (Redis, publisher, load
# generator) on the other, the same for every server. Empty: no pinning.
SERVER_CPUS: list[str] = []
OTHER_CPUS: list[str] = []
# `--nice N`: every process of the benchmark at that niceness (negative: ahead of the other
# work on a shared machine), the same for every server.
NICE: list[str] = []


class Proc:
    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        stdin: bool = False,
        server: bool = False,
    ):
        cpus = SERVER_CPUS if server else OTHER_CPUS
        self.p = subprocess.Popen(
            [*NICE, *cpus, *args],
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.p.pid

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def readline(self) -> str:
        assert self.p.stdout is not None
        return self.p.stdout.readline().strip()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered")
        time.sleep(0.1)


def metric(base: str, name: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def start_node_peer(redis_url: str, cams: int, node_modules: str) -> tuple[Proc, str]:
    port = free_port()
    env = {
        "PORT": str(port),
        "REDIS_PORT": redis_url.rsplit(":", 1)[1].split("/")[0],
        "CAMS": str(cams),
        "NODE_PATH": node_modules,
    }
    peer = Proc(["node", str(HERE / "gateway_node_peer.js")], env, server=True)
    if peer.readline() != "ready":  # printed once its readers are created
        raise RuntimeError("the Node peer did not start")
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("the Node peer does not listen")
        time.sleep(0.05)
    return peer, f"http://127.0.0.1:{port}"


def start_gateway(mode: str, redis_url: str, trace: str = "") -> tuple[Proc, str]:
    port = free_port()
    env = {
        "CAMFLEET_GATEWAY_HOST": "127.0.0.1",
        "CAMFLEET_GATEWAY_PORT": str(port),
        "CAMFLEET_GATEWAY_REDIS_URL": redis_url,
        "CAMFLEET_GATEWAY_AUTH_MODES": "static",
        "CAMFLEET_GATEWAY_STATIC_TOKEN": TOKEN,
        "CAMFLEET_GATEWAY_KUBE_ENABLED": "false",
        "CAMFLEET_GATEWAY_MAX_CONNECTIONS": "20000",
        "CAMFLEET_GATEWAY_HEARTBEAT_SECONDS": "60",
        "CAMFLEET_GATEWAY_LOG_LEVEL": "WARNING",
    }
    args = [sys.executable, str(Path(__file__)), "serve", "--mode", mode]
    gw = Proc(args + (["--trace", trace] if trace else []), env, server=True)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/readyz", timeout=90 if trace else 20)  # tracemalloc slows start-up
    return gw, base


def run_clients(
    base: str,
    n: int,
    cams: int,
    per_client: int,
    warmup: float,
    measure: float,
    gw: Proc,
    pub_args: list[str],
    metrics: bool = True,
    profile: Path | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    lg = Proc(
        [
            "node",
            str(LOADGEN),
            base.replace("http", "ws") + "/ws",
            str(n),
            str(cams),
            str(per_client),
            TOKEN,
        ],
        stdin=True,
    )
    pub: Proc | None = None
    try:
        line = lg.readline()
        if not line.startswith("CONNECTED"):
            raise RuntimeError(f"load generator: {line!r}")
        connected, connect_s = int(line.split()[1]), float(line.split()[2])
        if metrics:
            # Connected is not subscribed: let the server finish the subscriptions first.
            deadline = time.monotonic() + 120
            while metric(base, "camfleet_gateway_subscriptions") < connected * per_client:
                if time.monotonic() > deadline:
                    raise RuntimeError("the gateway never finished the subscriptions")
                time.sleep(0.1)
            connect_s = round(time.monotonic() - started, 2)
        # Events flow only once every client is in: connecting is measured on its own, and
        # the warm-up then covers the publisher's start.
        pub = Proc(pub_args)
        time.sleep(warmup)
        reads0 = metric(base, "camfleet_gateway_redis_reads_total") if metrics else 0.0
        events0 = metric(base, "camfleet_gateway_events_in_total") if metrics else 0.0
        lg.send("start")
        cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
        spy = None if profile is None else py_spy(gw.pid, measure, profile)
        time.sleep(measure)
        lg.send("stop")
        cpu1, t1 = cpu_seconds(gw.pid), time.monotonic()
        if spy is not None:
            spy.wait(30)
        pub.stop()
        stats: dict[str, Any] = json.loads(lg.readline())
        if metrics:
            # Wake-ups of the event path: XREAD replies per event read from Redis.
            reads = metric(base, "camfleet_gateway_redis_reads_total") - reads0
            events = metric(base, "camfleet_gateway_events_in_total") - events0
            stats.update(
                reads_per_s=round(reads / (t1 - t0)),
                events_per_read=round(events / max(reads, 1), 2),
            )
        stats.update(
            clients=n,
            connected=connected,
            connect_s=connect_s,
            gw_cpu_pct=round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            gw_rss_mb=round(rss_bytes(gw.pid) / 2**20, 1),
            dropped=metric(base, "camfleet_gateway_events_dropped_total") if metrics else None,
        )
        lg.send("exit")
        lg.p.wait(10)
        return stats
    finally:
        if pub is not None:
            pub.stop()
        lg.stop()


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample the server's stacks (native frames included) during the measured window.

    `--format raw` writes collapsed stacks (one line per distinct stack and its sample count),
    which `benchmarks/profile_summary.py` (or any flame-graph tool) turns into a breakdown.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), "--duration", str(int(seconds))),
            *("--rate", "100", "--native", "--format", "raw", "--output", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def idle_rss(
    redis_url: str, n: int, trace: str = "", mode: str = "shared", node_modules: str = ""
) -> dict[str, Any]:
    if mode == "node":
        gw, base = start_node_peer(redis_url, 50, node_modules)
    else:
        gw, base = start_gateway(mode, redis_url, trace)
    try:
        # One client first, so that per-process warm-up (imports, first reader) is not counted.
        warm = run_idle(base, 1)
        time.sleep(0.5)
        before = rss_bytes(gw.pid)
        if trace:
            os.kill(gw.pid, signal.SIGUSR1)
            time.sleep(3)
        lg = run_idle(base, n)
        time.sleep(2)
        after = rss_bytes(gw.pid)
        if trace:
            os.kill(gw.pid, signal.SIGUSR1)
            time.sleep(10)
            trace_report(trace, n)
        conns = metric(base, "camfleet_gateway_connections") if mode != "node" else None
        lg.stop()
        warm.stop()
        return {
            "mode": mode,
            "idle_clients": n,
            "connections": conns,
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "kb_per_connection": round((after - before) / n / 1024, 1),
        }
    finally:
        gw.stop()


def ramp(
    base: str,
    n: int,
    rates: list[float],
    args: argparse.Namespace,
    gw: Proc,
    redis_url: str,
    metrics: bool,
    redis_pid: int,
) -> list[dict[str, Any]]:
    """Raise the offered event rate with `n` clients connected until p99 passes the bound.

    One step per rate: a fresh publisher at that rate, `--warmup` s, then `--measure` s
    measured. The load generator takes a p99 per 5 s window; a step is sustained when the
    median of its windows' p99 is within `--p99-bound` ms (one window hit by another process
    on the shared machine does not decide it) and it delivers at least 95 % of what was
    offered. Stops after `--ramp-misses` steps in a row that are not (one step spoilt by the
    shared machine does not end the ramp).
    """
    lg = Proc(
        [
            *("node", str(LOADGEN), base.replace("http", "ws") + "/ws"),
            *(str(n), str(args.cams), str(args.cams_per_client), TOKEN),
        ],
        stdin=True,
    )
    steps: list[dict[str, Any]] = []
    misses = 0
    try:
        line = lg.readline()
        if not line.startswith("CONNECTED"):
            raise RuntimeError(f"load generator: {line!r}")
        if metrics:
            deadline = time.monotonic() + 120
            while metric(base, "camfleet_gateway_subscriptions") < n * args.cams_per_client:
                if time.monotonic() > deadline:
                    raise RuntimeError("the gateway never finished the subscriptions")
                time.sleep(0.1)
        for rate in rates:
            pub = Proc(
                [
                    *(sys.executable, str(Path(__file__)), "publish", "--redis", redis_url),
                    *("--cams", str(args.cams), "--rate", str(rate)),
                ]
            )
            try:
                time.sleep(args.warmup)
                lg.send("start")
                pids = (gw.pid, redis_pid, pub.pid)
                cpu0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
                time.sleep(args.measure)
                lg.send("stop")
                cpu1, t1 = [cpu_seconds(p) for p in pids], time.monotonic()
            finally:
                pub.stop()
            stats: dict[str, Any] = json.loads(lg.readline())
            offered = rate * n * args.cams_per_client
            step = {
                "clients": n,
                "rate_per_camera": rate,
                "offered": offered,
                "rate": round(stats["rate"]),
                "p50": stats["p50"],
                "p99": stats["p99"],
                "server_cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / (t1 - t0), 1),
                "redis_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / (t1 - t0), 1),
                "pub_cpu_pct": round(100 * (cpu1[2] - cpu0[2]) / (t1 - t0), 1),
                "lg_cpu_pct": round(stats["cpu_pct"], 1),
                "lg_loop_p99": round(stats["lg_loop_p99"], 1),
                "load1": float(Path("/proc/loadavg").read_text().split()[0]),
            }
            windows = sorted(stats["win_p99"]) or [stats["p99"]]
            step["p99_windows"] = stats["win_p99"]
            step["p99_median_window"] = windows[len(windows) // 2]
            step["sustained"] = (
                step["p99_median_window"] <= args.p99_bound and step["rate"] >= 0.95 * offered
            )
            steps.append(step)
            print(json.dumps(step), flush=True)
            time.sleep(1)  # the queues drain before the next step
            misses = 0 if step["sustained"] else misses + 1
            if misses >= args.ramp_misses:
                break
        lg.send("exit")
        lg.p.wait(10)
        return steps
    finally:
        lg.stop()


def trace_report(trace: str, n: int, top: int = 25) -> None:
    """What the idle connections hold, per allocation site (tracemalloc, Python objects only)."""
    import tracemalloc

    before, after = (tracemalloc.Snapshot.load(f"{trace}.{i}") for i in (0, 1))
    diff = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in diff)
    print(f"# tracemalloc: {total / n:.0f} B of Python objects per idle connection", flush=True)
    for d in diff[:top]:
        frame = d.traceback[0]
        where = f"{'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno}"
        print(f"#   {d.size_diff / n:7.0f} B  {d.count_diff / n:5.1f} blocks  {where}", flush=True)


def run_idle(base: str, n: int) -> Proc:
    # Subscribed to a camera nobody publishes to: connected, authenticated, idle.
    lg = Proc(
        ["node", str(LOADGEN), base.replace("http", "ws") + "/ws", str(n), "1", "1", TOKEN],
        stdin=True,
    )
    line = lg.readline()
    if not line.startswith("CONNECTED"):
        raise RuntimeError(f"load generator: {line!r}")
    return lg


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem} MiB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}, load average at start {' '.join(load)}"
    )


def orchestrate(args: argparse.Namespace) -> None:
    if shutil.which("node") is None:
        raise SystemExit("node is required for the load generator")
    clients = [int(c) for c in args.clients.split(",") if c]  # "": only the idle run
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
    if args.pin:
        server_cpu, other_cpu = args.pin.split(":")
        SERVER_CPUS[:] = ["taskset", "-c", server_cpu]
        OTHER_CPUS[:] = ["taskset", "-c", other_cpu]
    with tempfile.TemporaryDirectory() as tmp:
        rport = free_port()
        redis = Proc(
            [
                "redis-server",
                "--port",
                str(rport),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ]
        )
        redis_url = f"redis://127.0.0.1:{rport}/0"
        results: list[dict[str, Any]] = []
        idles: list[dict[str, Any]] = []
        try:
            time.sleep(0.3)
            pub_args = [
                sys.executable,
                str(Path(__file__)),
                "publish",
                "--redis",
                redis_url,
                "--cams",
                str(args.cams),
                "--rate",
                str(args.rate),
            ]
            print(f"# {machine()}", flush=True)
            cpu = fanout_cpu()
            print(json.dumps({"fanout_cpu_per_delivery": cpu}), flush=True)
            rates = [float(r) for r in args.ramp.split(",") if r]
            ramps: list[dict[str, Any]] = []
            for n in clients:
                for mode in args.modes.split(","):
                    if mode == "node":
                        gw, base = start_node_peer(redis_url, args.cams, args.node_modules)
                    else:
                        gw, base = start_gateway(mode, redis_url)
                    try:
                        if rates:
                            for step in ramp(
                                base, n, rates, args, gw, redis_url, mode != "node", redis.pid
                            ):
                                ramps.append({**step, "mode": mode})
                            continue
                        stats = run_clients(
                            base,
                            n,
                            args.cams,
                            args.cams_per_client,
                            args.warmup,
                            args.measure,
                            gw,
                            pub_args,
                            metrics=mode != "node",
                            profile=(
                                Path(args.profile) / f"{mode}-{n}.txt"
                                if args.profile and mode != "node"
                                else None
                            ),
                        )
                    finally:
                        gw.stop()
                    stats["mode"] = mode
                    stats["load1"] = float(Path("/proc/loadavg").read_text().split()[0])
                    results.append(stats)
                    print(json.dumps(stats), flush=True)
            trace = str(Path(args.profile) / "idle-tracemalloc") if args.profile else ""
            for mode in args.idle_modes.split(",") if args.idle else ():
                one = idle_rss(redis_url, args.idle, trace, mode, args.node_modules)
                idles.append(one)
                print(json.dumps(one), flush=True)
        finally:
            redis.stop()
    print()
    print(
        f"Load: {args.cams} cameras x {args.rate:g} events/s, {args.cams_per_client} camera(s)"
        f" per client, warm-up {args.warmup:g} s, measured {args.measure:g} s."
    )
    print()
    print(
        "| clients | server | deliveries/s | p50 ms | p99 ms | server CPU % | server RSS MB "
        "| drops | load-gen CPU % | machine load1 |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        drops = "-" if r["dropped"] is None else f"{r['dropped']:.0f}"
        print(
            f"| {r['clients']} | {r['mode']} | {r['rate']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f}"
            f" | {r['gw_cpu_pct']:.0f} | {r['gw_rss_mb']:.0f} | {drops}"
            f" | {r['cpu_pct']:.0f} | {r['load1']:.1f} |"
        )
    print()
    print(
        f"Fan-out CPU per delivery, in-process (no sockets): shared {cpu['shared_ns']} ns, "
        f"naive {cpu['naive_ns']} ns ({cpu['ratio']}x)."
    )
    for idle in idles:
        print()
        print(
            f"Idle ({idle['mode']}): {idle['idle_clients']} subscribed clients, RSS "
            f"{idle['rss_before_mb']} → {idle['rss_after_mb']} MB = "
            f"**{idle['kb_per_connection']} KB per connection**."
        )
    if ramps:
        print()
        print(f"Ramp (p99 bound {args.p99_bound:g} ms, pinned: {args.pin or 'no'}):")
        print()
        print(
            "| clients | server | events/s per camera | offered/s | deliveries/s | p50 ms | p99 ms "
            "| p99 per 5 s window, ms | server CPU % | load-gen CPU % | Redis + publisher CPU % "
            "| load-gen loop p99 ms | machine load1 | sustained |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
        for r in ramps:
            print(
                f"| {r['clients']} | {r['mode']} | {r['rate_per_camera']:g} | {r['offered']:,.0f}"
                f" | {r['rate']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f}"
                f" | {', '.join(f'{w:.0f}' for w in r['p99_windows'])}"
                f" | {r['server_cpu_pct']:.0f} | {r['lg_cpu_pct']:.0f}"
                f" | {r['redis_cpu_pct']:.0f} + {r['pub_cpu_pct']:.0f} | {r['lg_loop_p99']:.0f}"
                f" | {r['load1']:.1f} | {'yes' if r['sustained'] else 'no'} |"
            )
        print()
        for n in clients:
            best = {
                mode: max(
                    (
                        r["rate"]
                        for r in ramps
                        if r["clients"] == n and r["mode"] == mode and r["sustained"]
                    ),
                    default=0,
                )
                for mode in args.modes.split(",")
            }
            print(f"Max sustained deliveries/s at {n} clients: {best}")


def main() -> None:
    parser = argparse.ArgumentParser(description="camfleet overlay gateway fan-out benchmark")
    sub = parser.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("--mode", choices=["shared", "naive"], default="shared")
    s.add_argument("--trace", default="", help="tracemalloc snapshots on SIGUSR1 to TRACE.N")
    p = sub.add_parser("publish")
    p.add_argument("--redis", required=True)
    p.add_argument("--cams", type=int, default=50)
    p.add_argument("--rate", type=float, default=10)
    parser.add_argument("--clients", default="100,1000,2000")
    parser.add_argument(
        "--modes",
        default="shared,naive",
        help="shared, naive, and node (the Node.js ws peer; needs --node-modules)",
    )
    parser.add_argument(
        "--node-modules",
        default="",
        help="a node_modules with ws and ioredis (npm install in a copy of ws-baseline)",
    )
    parser.add_argument("--cams", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10, help="events/s per camera")
    parser.add_argument("--cams-per-client", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--measure", type=float, default=6)
    parser.add_argument(
        "--profile",
        default="",
        help="a folder: py-spy stacks of the gateway per run (raw), tracemalloc of the idle run",
    )
    parser.add_argument("--idle", type=int, default=2000, help="idle clients for RSS (0: skip)")
    parser.add_argument(
        "--idle-modes", default="shared", help="servers measured idle: shared and/or node"
    )
    parser.add_argument(
        "--ramp",
        default="",
        help="events/s per camera, rising (e.g. 10,20,40,80): at each --clients count, raise the "
        "offered rate until p99 passes --p99-bound; replaces the fixed-rate runs",
    )
    parser.add_argument("--p99-bound", type=float, default=50.0, help="ms, for --ramp")
    parser.add_argument(
        "--ramp-misses", type=int, default=1, help="unsustained steps in a row that end a ramp"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of every process started (root may go below 0), the same for all servers",
    )
    parser.add_argument(
        "--pin",
        default="",
        help="SERVER_CPUS:OTHER_CPUS for taskset, e.g. 0:1: the server under test on the first, "
        "Redis, the publisher and the load generator on the second",
    )
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.mode, args.trace)
    elif args.cmd == "publish":
        with contextlib.suppress(KeyboardInterrupt):
            publish(args.redis, args.cams, args.rate)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
