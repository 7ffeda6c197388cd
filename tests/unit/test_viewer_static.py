"""The gateway serves the built viewer (`npm run build`, run by scripts/setup) and nothing else.

The real app in-process; no Redis or Kubernetes call is made by these routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio
from pydantic import SecretStr

from camfleet_dev.gateway import RunningGateway, run_gateway
from overlay_gateway.routes import STATIC_DIR
from overlay_gateway.settings import AuthMode, Settings


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    settings = Settings(
        port=0,
        auth_modes=[AuthMode.STATIC],
        static_token=SecretStr("local-only-token"),
        kube_enabled=False,
        redis_url=SecretStr("redis://127.0.0.1:1/0"),  # never dialled by these routes
    )
    async with run_gateway(settings) as running:
        yield running


async def test_the_built_viewer_is_served(gateway: RunningGateway) -> None:
    assert (STATIC_DIR / "viewer.js").is_file(), "viewer not built: run scripts/setup"
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
        assert 'src="static/viewer.js"' in page
        for name, kind in (
            ("viewer.js", "javascript"),
            ("fm-worker.js", "javascript"),
            ("viewer.css", "text/css"),
        ):
            async with http.get(f"{gateway.url}/static/{name}") as resp:
                assert resp.status == 200, name
                assert kind in resp.content_type, (name, resp.content_type)
                assert len(await resp.read()) > 1000


def test_the_product_bundle_carries_no_test_hooks() -> None:
    # They are a chunk of their own, imported only with ?testhooks (or ?probe).
    assert "camfleetViewer" not in (STATIC_DIR / "viewer.js").read_text(encoding="utf-8")
    chunks = list((STATIC_DIR / "chunks").glob("testhooks-*.js"))
    assert len(chunks) == 1
    assert "camfleetViewer" in chunks[0].read_text(encoding="utf-8")


async def test_the_favicon_is_served(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/favicon.ico", "/static/favicon.svg"):
            async with http.get(gateway.url + path) as resp:
                assert resp.status == 200, path
                assert resp.content_type == "image/svg+xml", path
                body = await resp.read()
                assert body.startswith(b"<svg")
                assert len(body) < 1024
        async with http.get(gateway.url + "/") as resp:
            assert 'rel="icon" href="static/favicon.svg"' in await resp.text()


async def test_nothing_outside_the_static_folder_is_served(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/static/%2e%2e/routes.py", "/static/..%2froutes.py", "/static/nope.js"):
            async with http.get(gateway.url + path) as resp:
                assert resp.status == 404, path
