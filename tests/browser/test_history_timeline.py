"""The viewer's history panel in real Chromium: the timeline strip shows the stored counts, a
click on a recent detection shows its time and boxes, and "AI stalled" appears on the tile.

Real kube-apiserver (the Camera), real PostgreSQL (rows written as the archiver writes them),
real Redis and the real gateway; no video here (the media path has its own tests).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time

from playwright.async_api import Browser, expect

from camfleet.ai import AsyncPublisher
from camfleet.events import Event
from camfleet_archiver.metrics import Metrics
from camfleet_archiver.schema import migrate
from camfleet_archiver.writer import Writer, to_record
from camfleet_dev.gateway import run_gateway
from camfleet_dev.testbed.kube import KubeCluster
from camfleet_dev.testbed.postgres import PostgresServer
from camfleet_dev.testbed.redis import RedisServer
from overlay_gateway.settings import Settings

TOKEN = "viewer-history-" + secrets.token_hex(4)
CAMERA = """
apiVersion: camfleet.io/v1alpha1
kind: Camera
metadata: {name: dock}
spec:
  source: {url: "rtsp://127.0.0.1:8554/dock"}
"""


def detection(camera: str, ts: int, labels: list[str]) -> bytes:
    return Event.model_validate(
        {
            "camera": camera,
            "ts": ts,
            "source": "browser-test",
            "objects": [
                {"id": f"t{i}", "label": label, "score": 0.9, "box": [0.1 + 0.4 * i, 0.2, 0.3, 0.5]}
                for i, label in enumerate(labels)
            ],
        }
    ).to_json()


async def test_timeline_counts_and_a_click_shows_the_detection(
    browser: Browser,
    kube: KubeCluster,
    camera_crd: object,
    namespace: str,
    redis_server: RedisServer,
    postgres: PostgresServer,
) -> None:
    await asyncio.to_thread(kube.apply, CAMERA, namespace=namespace)
    camera = f"{namespace}/dock"
    dsn = postgres.create_database(f"b_{secrets.token_hex(4)}")
    await asyncio.to_thread(migrate, dsn)
    now = int(time.time() * 1000)
    records = [
        to_record(
            camera,
            f"{now - 600_000 + i}-0",
            detection(camera, now - 600_000 + i * 1000, ["person"]),
        )
        for i in range(12)
    ]
    last_ts = now - 60_000
    records.append(to_record(camera, f"{last_ts}-0", detection(camera, last_ts, ["person", "car"])))
    writer = Writer(dsn, Metrics(), set())
    await writer.write(records)
    await writer.close()
    settings = Settings.model_validate(
        {
            "redis_url": redis_server.url,
            "auth_modes": ["static"],
            "static_token": TOKEN,
            "kubeconfig": kube.kubeconfig,
            "postgres_dsn": dsn,
            "overlay_stale_seconds": 1,
            "reader_linger_seconds": 0,
        }
    )
    async with run_gateway(settings) as gw, AsyncPublisher(redis_server.url) as pub:
        await pub.publish({"camera": camera, "ts": now, "source": "browser-test", "objects": []})
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(f"{gw.url}/#token={TOKEN}")
            tile = page.locator(f'.tile[data-camera="{camera}"]')
            strip = tile.locator(".timeline")
            await expect(strip).to_have_attribute("data-totals", "car:1,person:13", timeout=20_000)
            await expect(strip).to_have_attribute(
                "aria-label", "Last hour: 1 car, 13 person", timeout=5_000
            )
            detections = tile.locator(".detections button")
            await expect(detections).to_have_count(8)
            first = detections.first
            await expect(first).to_have_attribute("data-id", f"{last_ts}-0")
            await first.click()
            detail = tile.locator(".detection-detail")
            await expect(detail).to_be_visible()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(last_ts / 1000))
            await expect(detail.locator("time")).to_contain_text(stamp)
            boxes = detail.locator("rect")
            await expect(boxes).to_have_count(2)
            assert await boxes.nth(0).get_attribute("data-label") == "person"
            assert await boxes.nth(1).get_attribute("x") == "80"  # x = 0.5 of a 160-wide frame
            # The click stayed in the panel: the tile did not enlarge.
            assert "enlarged" not in (await tile.get_attribute("class") or "")
            # One event a second ago, nothing since: the tile says the AI path stalled (the
            # camera list refreshes on its own timer; a reload asks at once).
            await page.reload()
            badge = tile.locator(".badge.ai")
            await expect(badge).to_be_visible(timeout=15_000)
            await expect(badge).to_have_text(re.compile(r"^AI stalled \d+ s$"))
        finally:
            await context.close()
