"""The node leaves nothing behind: after `stop`, and when the process that started it is killed.

Each case starts a node of its own in a subprocess (the session's node does not exist yet: the
node conftest runs this module first), runs a pod on it, then checks the host against the
record the node wrote before it changed anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from camfleet_dev.testbed.node import HostRecord, leftovers

SCRIPT = """
import sys, time, json
from pathlib import Path
from camfleet_dev.testbed.node import NodeCluster
node = NodeCluster(Path(sys.argv[1]))
node.start()
node.apply(json.dumps({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "sleeper", "namespace": "default"},
    "spec": {"containers": [{"name": "s", "image": node.images["pause"],
                             "imagePullPolicy": "Never"}]},
}))
node.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=90s", timeout=100)
print("READY", flush=True)
if sys.argv[2] == "stop":
    node.stop()
    print("STOPPED", flush=True)
else:
    time.sleep(3600)
"""


def run_node(state: Path, mode: str) -> tuple[subprocess.Popen[str], HostRecord]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(state), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 240
    record: HostRecord | None = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if record is None and (state / "host.json").exists():
            record = HostRecord.load(state / "host.json")
        if line.startswith("READY"):
            break
    assert record is not None, "".join(lines[-40:])
    assert lines, "the node process printed nothing"
    assert lines[-1].startswith("READY"), "".join(lines[-40:])
    return proc, record


def test_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    proc, record = run_node(tmp_path / "node", "stop")
    assert leftovers(record), "a running node should be visible in the host's state"
    out, _ = proc.communicate(timeout=120)
    assert "STOPPED" in out, out[-3000:]
    assert proc.returncode == 0
    assert leftovers(record) == []


def test_a_killed_session_is_cleaned_up_by_the_janitor(tmp_path: Path) -> None:
    proc, record = run_node(tmp_path / "node", "sleep")
    assert leftovers(record)
    os.killpg(proc.pid, signal.SIGKILL)  # no atexit, no finally: only the janitor is left
    proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()
    deadline = time.monotonic() + 90
    while leftovers(record) and time.monotonic() < deadline:
        time.sleep(1)
    assert leftovers(record) == []
    assert not (tmp_path / "node" / "host.json").exists()
