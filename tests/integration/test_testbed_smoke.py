"""Each server of the test bed is real and usable (these fail when a server is missing/broken)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from livekit import api as lkapi
from playwright.async_api import Browser

from camfleet_dev import pattern
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.livekit import LiveKitServer
from camfleet_dev.testbed.redis import RedisServer
from camfleet_dev.testbed.rtsp import RtspCamera
from camfleet_dev.testbed.tools import ffmpeg

SMOKE_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.camfleet.io}
spec:
  group: smoke.camfleet.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer, minimum: 1}
"""


def test_kube_apiserver_serves_a_crd(kube: KubeCluster, namespace: str) -> None:
    kube.apply(SMOKE_CRD)
    kube.wait_established("widgets.smoke.camfleet.io")
    kube.apply(
        "apiVersion: smoke.camfleet.io/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n",
        namespace=namespace,
    )
    # The schema is enforced: this is a real API server, not an emulator.
    bad = kube.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input="apiVersion: smoke.camfleet.io/v1\nkind: Widget\nmetadata: {name: w2}\n"
        "spec: {size: 0}\n",
        check=False,
    )
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr

    api = k8s_config.new_client_from_config(config_file=str(kube.kubeconfig))
    try:
        custom = k8s.CustomObjectsApi(api)
        items = custom.list_namespaced_custom_object(
            "smoke.camfleet.io", "v1", namespace, "widgets"
        )
        assert [i["metadata"]["name"] for i in items["items"]] == ["w1"]
        assert items["items"][0]["metadata"]["generation"] == 1
        version = k8s.VersionApi(api).get_code()
        assert version.git_version.startswith("v1.")
    finally:
        api.close()


def test_controller_manager_collects_garbage(kube: KubeCluster, namespace: str) -> None:
    kube.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = kube.kubectl(
        "get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    kube.apply(
        f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: child
  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: "{uid}"}}]
""",
        namespace=namespace,
    )
    kube.kubectl("delete", "configmap", "owner", "-n", namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = kube.kubectl("get", "configmap", "child", "-n", namespace, check=False)
        if got.returncode != 0 and "NotFound" in got.stderr:
            return
        time.sleep(0.2)
    pytest.fail("the owned ConfigMap was not garbage-collected")


async def test_redis_streams(redis_server: RedisServer) -> None:
    r = aioredis.from_url(redis_server.url)
    try:
        key = "smoke:stream"
        first = await r.xadd(key, {"e": b"hello"}, maxlen=10, approximate=True)
        got = await r.xread({key: "0-0"}, count=10, block=1000)
        assert got[0][1][-1][0] == first
        assert got[0][1][-1][1][b"e"] == b"hello"
    finally:
        await r.aclose()


async def test_livekit_rooms(livekit_server: LiveKitServer) -> None:
    async with lkapi.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        await lk.room.create_room(lkapi.CreateRoomRequest(name="smoke-room", empty_timeout=60))
        rooms = await lk.room.list_rooms(lkapi.ListRoomsRequest())
        assert "smoke-room" in [r.name for r in rooms.rooms]
        await lk.room.delete_room(lkapi.DeleteRoomRequest(room="smoke-room"))
        rooms = await lk.room.list_rooms(lkapi.ListRoomsRequest())
        assert "smoke-room" not in [r.name for r in rooms.rooms]


def _probe(url: str) -> tuple[str, int, int, float, str | None, int]:
    """Open an RTSP URL with FFmpeg's libraries and decode a few frames."""
    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"}) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codes = []
        for frame in container.decode(stream):
            codes.append(pattern.read_code(frame.to_ndarray(format="rgb24")))
            if len(codes) == 10:
                break
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        return ctx.name, ctx.width, ctx.height, rate, ctx.profile, codes[-1] - codes[0]


def test_rtsp_camera_streams(rtsp_camera: RtspCamera) -> None:
    name, width, height, fps, profile, advanced = _probe(rtsp_camera.url("h264"))
    assert (name, width, height, profile) == ("h264", 1920, 1080, "High")
    assert fps == pytest.approx(25, abs=0.5)
    assert advanced == 9  # the burnt-in frame code counts every frame
    assert _probe(rtsp_camera.url("h265"))[0] == "hevc"
    with av.open(rtsp_camera.url("h264-bframes"), options={"rtsp_transport": "tcp"}) as c:
        assert c.streams.video[0].codec_context.has_b_frames


def test_rtsp_camera_checks_credentials(rtsp_camera: RtspCamera) -> None:
    good = rtsp_camera.secure_url("h264").replace(
        "rtsp://", f"rtsp://{rtsp_camera.username}:{rtsp_camera.password}@"
    )
    assert _probe(good)[0] == "h264"
    bad = rtsp_camera.secure_url("h264").replace("rtsp://", "rtsp://camfleet:wrong@")
    with pytest.raises(av.error.HTTPUnauthorizedError):
        _probe(bad)


def test_ffmpeg_cli_reads_the_camera_and_counts_sessions(rtsp_camera: RtspCamera) -> None:
    proc = subprocess.Popen(
        [
            *(ffmpeg(), "-hide_banner", "-rtsp_transport", "tcp"),
            *("-i", rtsp_camera.url("h264"), "-t", "3", "-f", "null", "-"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while rtsp_camera.sessions("h264") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rtsp_camera.sessions("h264") == 1
    finally:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Video: h264 (High)" in err
    assert "1920x1080" in err
    assert "25 fps" in err
    version = subprocess.run([ffmpeg(), "-version"], capture_output=True, text=True, check=True)
    assert re.match(r"ffmpeg version n?(\d+)\.", version.stdout)
    assert int(re.match(r"ffmpeg version n?(\d+)\.", version.stdout).group(1)) >= 8  # type: ignore[union-attr]


async def test_chromium_loads_a_local_page(browser: Browser, tmp_path: Path) -> None:
    async def index(_: web.Request) -> web.Response:
        return web.Response(
            text="<title>camfleet</title><p id=x>served</p>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        assert await page.title() == "camfleet"
        assert await page.inner_text("#x") == "served"
        await page.screenshot(path=str(tmp_path / "smoke.png"))
        await page.close()
    finally:
        await runner.cleanup()
    await asyncio.sleep(0)


def test_servers_die_with_a_killed_session(tmp_path: Path) -> None:
    """A test session killed outright (no atexit) still leaves no server behind."""
    script = (
        "import sys; from pathlib import Path; from camfleet_dev.testbed.redis import RedisServer\n"
        f"r = RedisServer(Path({str(tmp_path)!r})); r.start(); print(r.proc.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as session:
        assert session.stdout is not None
        server_pid = int(session.stdout.readline())
        assert Path(f"/proc/{server_pid}").exists()
        session.kill()
        session.wait(timeout=10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{server_pid}").exists(), "redis-server outlived its killed session"


def test_an_api_server_that_does_not_answer_is_not_ready_yet(tmp_path: Path) -> None:
    """A readiness probe that gets no answer in time says "not ready" (the wait goes on); it
    used to raise out of the wait, failing a start that a busy machine had only slowed."""
    import socket
    import threading

    held: list[socket.socket] = []
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)

    def hold() -> None:  # accept and keep every connection open, never answering
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=hold, daemon=True).start()
    port = silent.getsockname()[1]
    try:
        cluster = KubeCluster(tmp_path / "kube", api_port=port)
        cluster.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        cluster.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}',"
            " insecure-skip-tls-verify: true}}]\n"
            "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
            "users: [{name: u, user: {token: t}}]\n"  # with no credentials kubectl would prompt
        )
        started = time.monotonic()
        assert cluster._ready() is False
        assert cluster._default_sa_exists() is False
        assert time.monotonic() - started >= 9, "both probes waited out their timeout"
    finally:
        silent.close()
        for conn in held:
            conn.close()
