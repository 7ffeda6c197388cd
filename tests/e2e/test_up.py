"""`camfleet up` exactly as the README runs it: a subprocess, its printed URL, Ctrl-C, restart."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from camfleet_dev.testbed.process import free_port
from camfleet_dev.testbed.tools import tool

THIRD_CAMERA = """
apiVersion: camfleet.io/v1alpha1
kind: Camera
metadata: {name: third, namespace: demo}
spec:
  source: {url: "rtsp://127.0.0.1:%d/h264"}
"""


@dataclass
class Up:
    proc: subprocess.Popen[str]
    viewer_url: str
    kubeconfig: Path
    output: list[str]


def _ports() -> list[str]:
    args = []
    for name in ("gateway", "kube", "livekit", "postgres", "redis", "rtsp", "s3"):
        args += [f"--{name}-port", str(free_port())]
    return args


def start_up(state_dir: Path, ports: list[str], timeout: float = 180) -> Up:
    proc = subprocess.Popen(
        [sys.executable, "-m", "camfleet_dev.cli", "up", "--state-dir", str(state_dir), *ports],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    output: list[str] = []
    viewer = kubeconfig = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line.rstrip())
        if m := re.match(r"Viewer:\s+(\S+)", line):
            viewer = m.group(1)
        if m := re.match(r"Kubeconfig:\s+(\S+)", line):
            kubeconfig = Path(m.group(1))
        if "Ctrl-C stops everything" in line:
            break
    if viewer is None or kubeconfig is None:
        proc.kill()
        pytest.fail("camfleet up did not come up:\n" + "\n".join(output))
    return Up(proc, viewer, kubeconfig, output)


def stop_up(up: Up) -> None:
    up.proc.send_signal(signal.SIGINT)
    rest, _ = up.proc.communicate(timeout=90)
    up.output += rest.splitlines()
    assert up.proc.returncode == 0, "\n".join(up.output)


def kubectl(up: Up, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        [tool("kubectl"), f"--kubeconfig={up.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            raw = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in raw and str(os.getpid()) != cmdline.parent.name:
            found.append(f"{cmdline.parent.name}: {raw[:200]}")
    return found


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "camfleet-state"
    yield path
    subprocess.run(
        [sys.executable, "-m", "camfleet_dev.cli", "down", "--state-dir", str(path)],
        capture_output=True,
        check=False,
    )


async def _page_stats(page: Page, camera: str) -> dict[str, Any]:
    result: dict[str, Any] | None = await page.evaluate(
        # null until the lazily loaded test-hooks chunk has defined it
        "c => window.camfleetViewer ? window.camfleetViewer.stats(c) : null",
        camera,
    )
    return result or {}


async def _until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {within:.0f}s")
        await asyncio.sleep(0.25)


async def _demo_plays_with_boxes(browser: Browser, up: Up, rtsp_port: int) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        # The printed URL, with the viewer's test hooks (window.camfleetViewer) switched on.
        base, _, fragment = up.viewer_url.partition("#")
        await page.goto(f"{base}?testhooks#{fragment}")
        demo = ["demo/loading-dock", "demo/lobby"]

        seen: dict[str, dict[str, Any]] = {}

        async def playing_with_boxes() -> bool:
            for camera in demo:
                s = seen[camera] = await _page_stats(page, camera)
                if not (s.get("videoWidth") == 1920 and s.get("framesDisplayed", 0) > 25):
                    return False
                if not s.get("lastDrawn"):
                    return False
            return True

        try:
            await _until(playing_with_boxes, 120, "both demo cameras playing with boxes")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the page saw {seen}") from None
        before = await _page_stats(page, demo[0])
        await asyncio.sleep(1)
        after = await _page_stats(page, demo[0])
        assert after["framesDisplayed"] > before["framesDisplayed"]
        assert after["lastFrameId"] > before["lastFrameId"]

        # A third Camera applied with kubectl appears on the page by itself.
        kubectl(up, "apply", "-f", "-", stdin=THIRD_CAMERA % rtsp_port)

        async def listed() -> bool:
            cams = await page.evaluate("() => window.camfleetViewer.cameras()")
            return "demo/third" in cams

        await _until(listed, 60, "the third camera on the page")
    finally:
        await page.close()


async def _demo_records(up: Up) -> None:
    """The demo cameras record: the operator passed the store to the ingests (through their
    Secrets), segments reach the local S3 store and the index, and the gateway hands out
    signed URLs that the store answers with an fMP4 segment."""
    base, _, fragment = up.viewer_url.partition("#")
    token = fragment.removeprefix("token=")
    url = f"{base.rstrip('/')}/api/cameras/demo/lobby/recordings"
    found: dict[str, Any] = {}

    async def recorded() -> bool:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            found.update(await resp.json())
            return resp.status == 200 and bool(found.get("segments"))

    await _until(recorded, 60, f"a recorded segment of demo/lobby ({found})")
    async with aiohttp.ClientSession() as session, session.get(found["segments"][0]["url"]) as r:
        assert r.status == 200
        assert (await r.read())[4:8] == b"ftyp"
    camera = json.loads(kubectl(up, "get", "cam", "lobby", "-n", "demo", "-o", "json"))
    conditions = {c["type"]: c for c in camera["status"]["conditions"]}
    assert conditions["Recording"]["status"] == "True", conditions


async def test_up_runs_the_demo_survives_a_restart_and_leaves_nothing(
    state_dir: Path, browser: Browser
) -> None:
    ports = _ports()
    rtsp_port = int(ports[ports.index("--rtsp-port") + 1])
    up = await asyncio.to_thread(start_up, state_dir, ports)
    try:
        assert up.viewer_url.startswith("http://127.0.0.1:")
        cams = json.loads(kubectl(up, "get", "cam", "-A", "-o", "json"))["items"]
        assert sorted(c["metadata"]["name"] for c in cams) == ["loading-dock", "lobby"]
        await _demo_plays_with_boxes(browser, up, rtsp_port)
        await _demo_records(up)
        names = kubectl(up, "get", "cam", "-n", "demo", "-o", "name")
        assert "camera.camfleet.io/third" in names
    finally:
        await asyncio.to_thread(stop_up, up)
    assert "stopped." in up.output
    leftovers = processes_mentioning(str(state_dir))
    assert leftovers == [], leftovers

    # Same state directory: the Cameras are still there.
    up = await asyncio.to_thread(start_up, state_dir, ports)
    try:
        names = kubectl(up, "get", "cam", "-n", "demo", "-o", "name")
        assert "camera.camfleet.io/third" in names
    finally:
        await asyncio.to_thread(stop_up, up)
    assert processes_mentioning(str(state_dir)) == []


def test_up_reports_a_port_in_use_in_one_line(state_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = _ports()
        ports[ports.index("--gateway-port") + 1] = str(port)
        out = subprocess.run(
            [sys.executable, "-m", "camfleet_dev.cli", "up", "--state-dir", str(state_dir), *ports],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert errors == [
        f"camfleet: port {port} (gateway) is in use: stop what uses it (is another "
        "`camfleet up` running? try `camfleet down`) or pass --gateway-port"
    ]


def test_up_reports_a_camera_that_does_not_answer(state_dir: Path) -> None:
    dead = free_port()
    out = subprocess.run(
        [
            *(sys.executable, "-m", "camfleet_dev.cli", "up", "--state-dir", str(state_dir)),
            *("--no-demo", "--camera", f"rtsp://admin:pw@127.0.0.1:{dead}/stream", *_ports()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"camfleet: camera rtsp://admin:***@127.0.0.1:{dead}/stream does not answer "
        "(TCP connect failed)"
    )


def test_up_points_at_the_setup_script_when_a_tool_is_missing(
    state_dir: Path, tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "camfleet_dev.cli", "up", "--state-dir", str(state_dir), *_ports()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CAMFLEET_TOOLS": str(tmp_path / "no-tools"), "PATH": "/bin"},
    )
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "camfleet: kube-apiserver is not installed: run `scripts/setup` (or `make setup`) first"
    )
