"""The /demo reader page in headless Chromium against the real pipeline (Kafka, Redis, the
worker with the click path, the read endpoint and the event collector as processes): the page
loads a new reader's feed, a real mouse click on a story sends impression and click events to
the collector, the page shows the reader's re-ranked feed, and leaving the page sends a dwell
event by ``navigator.sendBeacon``.

Chromium is driven over the DevTools protocol (a websocket; aiohttp is a pinned dependency),
because a click needs a live page, not ``--dump-dom``; it picks its own DevTools port (port 0,
read back from ``DevToolsActivePort``). Screenshots go to tests/artifacts/ (git-ignored):
demo.png (after the click, the moved stories marked) and demo-before.png (the new reader's feed);
the docs' copies (docs/demo.png, docs/demo-before.png) are refreshed from them by hand.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from browser_support import chromium
from pipeline import api_headers, drain, free_port, running_pipeline

from connectors.replay import replay_all
from feedpipe.topology import topology
from ops import services

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SCREENSHOT = ARTIFACTS / "demo.png"
SCREENSHOT_BEFORE = ARTIFACTS / "demo-before.png"
SOURCES = ["frontity-wp", "umami-drupal"]  # real WordPress and Drupal content (Apache-2.0, GPL)
BRAND = "frontity"  # a travel blog whose posts share categories: the click's affinity shows


class Page:
    """One Chromium tab over the DevTools protocol: send a command, await its result."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mine = self.next_id
        await self.ws.send_json({"id": mine, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=60)
            if msg.get("id") == mine:
                assert "error" not in msg, msg["error"]
                result: dict[str, Any] = msg["result"]
                return result

    async def js(self, expression: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in res, res["exceptionDetails"]
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 60) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            guarded = f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()"
            value = await self.js(guarded)
            if value:
                return value
            await asyncio.sleep(0.1)
        log = await self.js("document.getElementById('log').innerText")
        err = await self.js("document.getElementById('error').innerText")
        raise AssertionError(f"page never met {expression!r}; log: {log!r}; error: {err!r}")

    async def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of ``selector``."""
        box = await self.js(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def browser(tmp: Path) -> AsyncIterator[Page]:
    profile = tmp / "chromium"
    active = profile / "DevToolsActivePort"  # the port Chromium chose, on its first line
    proc = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1360,1000", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    port = int(active.read_text().split()[0])
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                        targets = await r.json()
                    pages = [t for t in targets if t["type"] == "page"]
                    if pages:
                        break
                except (OSError, ValueError, IndexError, aiohttp.ClientError):
                    pass  # no port file yet, or DevTools not serving yet
                assert time.monotonic() < deadline, "chromium DevTools did not answer"
                await asyncio.sleep(0.2)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Runtime.enable")
                yield page
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def drive(base: str, collector: str, key: str, user: str, tmp: Path) -> dict[str, Any]:
    """Load the page, click the fourth story, wait for the re-ranked feed; return what the page
    showed before and after."""
    async with browser(tmp) as page:
        await page.call("Page.navigate", url=f"{base}/demo?brand={BRAND}&user={user}#key={key}")
        await page.wait_for("document.getElementById('feed').dataset.version === '1'")
        await page.wait_for("document.getElementById('log').innerText.includes('impressions')")
        before = await page.js(
            "({order: document.getElementById('feed').dataset.order.split(','),"
            " source: document.getElementById('feed').dataset.source,"
            " keyInUrl: location.href.includes('key=')})"
        )
        await page.screenshot(SCREENSHOT_BEFORE)
        await page.click("#feed li:nth-child(4)")
        await page.wait_for("document.getElementById('log').innerText.includes('click on #4')")
        personal = "document.getElementById('feed').dataset.source === 'personalised'"
        await page.wait_for(personal, 120)
        after = await page.js(
            "({order: document.getElementById('feed').dataset.order.split(','),"
            " personal: Number(document.getElementById('feed').dataset.personal),"
            " source: document.getElementById('feed').dataset.source,"
            " moved: document.querySelectorAll('#feed .move').length,"
            " rerankMs: Number(document.getElementById('feed').dataset.rerankMs),"
            " error: document.getElementById('error').innerText})"
        )
        await asyncio.sleep(1.7)  # the moved-story highlight fades before the screenshot
        await page.screenshot(SCREENSHOT)
        await page.call("Page.navigate", url="about:blank")  # pagehide: the dwell beacon
        # the page's sendBeacon (text/plain, key in the body) reaches the collector while the
        # browser still runs
        metric = 'feedpipe_collector_events_accepted_total{type="dwell"} 1.0'
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{collector}/metrics") as r:
                    if metric in await r.text():
                        break
                assert time.monotonic() < deadline, "no dwell beacon reached the collector"
                await asyncio.sleep(0.2)
        return {"before": before, "after": after}


def test_a_click_in_the_demo_page_reranks_the_readers_feed(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, data_dir: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for shot in (SCREENSHOT, SCREENSHOT_BEFORE):
        shot.unlink(missing_ok=True)  # the PNG checks below see this run's pictures only
    os.environ["FEEDPIPE_COLLECTOR_PORT"] = str(free_port())
    try:
        with running_pipeline(kafka_bootstrap, redis_url, tmp_path / "state") as s:
            base = f"http://{s.api_host}:{s.api_port}"
            collector = services.collector_service(s)
            services.start(collector, s)
            try:
                published = replay_all(topology(), data_dir, SOURCES, bootstrap=s.kafka_bootstrap)
                assert sum(m.published for m in published.values()) > 10
                drain(s.kafka_bootstrap, s.app_id)
                key = api_headers(s)["X-API-Key"]
                cfg = httpx.get(f"{base}/demo/config", timeout=5).json()
                assert cfg["collector_url"] == f"http://127.0.0.1:{s.collector_port}"
                assert BRAND in cfg["brands"]
                page = httpx.get(f"{base}/demo", timeout=5)
                assert page.status_code == 200 and "live reader demo" in page.text

                user = f"reader-{os.getpid()}"
                seen = asyncio.run(drive(base, cfg["collector_url"], key, user, tmp_path))
                h = {"X-API-Key": key}
                url = f"{base}/v1/feeds/{user}?brand={BRAND}&limit=12"
                seen["api"] = httpx.get(url, headers=h, timeout=5).json()
                seen["profile"] = httpx.get(f"{base}/v1/profiles/{user}", headers=h).json()
            finally:
                services.stop(collector, s)
    finally:
        os.environ.pop("FEEDPIPE_COLLECTOR_PORT", None)

    before, after = seen["before"], seen["after"]
    assert before["keyInUrl"] is False  # the page drops the key from the address bar
    assert before["source"] in ("trending", "latest")  # a new reader: no profile yet
    assert len(before["order"]) >= 3
    assert after["error"] == ""
    assert after["source"] == "personalised"
    assert after["order"] != before["order"]
    assert after["moved"] >= 1
    assert after["rerankMs"] > 0
    # what the page shows is the reader's feed as the API serves it, built from the click
    assert seen["api"]["source"] == "personalised"
    personal = after["order"][: after["personal"]]
    assert [it["content_id"] for it in seen["api"]["items"]] == personal
    clicked = before["order"][3]
    assert clicked not in after["order"]  # read: it leaves the feed
    assert set(after["order"]) <= set(before["order"])  # the same stories, in a new order
    assert seen["profile"]["clicks"] == 1
    assert seen["profile"]["impressions"] == len(before["order"])
    assert [r["content_id"] for r in seen["profile"]["recent_reads"]] == [clicked]
    for shot in (SCREENSHOT, SCREENSHOT_BEFORE):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
