"""Live connector end to end: a WordPress site served over real HTTP, polled by the
WordPressConnector into real Kafka, through the Faust worker into Redis, read back through the
read endpoint. An edit is served with its new title; a trashed post leaves the content table.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from pipeline import api_headers, drain, running_pipeline

from connectors.config import AuthSpec, LiveSourceSpec
from connectors.simulator import FixtureServer
from connectors.wordpress import WordPressConnector
from feedpipe.ids import content_id

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
PASSWORD_ENV = "FEEDPIPE_TEST_E2E_WP_PASSWORD"


def _until(pred: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.3)


def test_wordpress_poll_to_read_endpoint(
    kafka_bootstrap: str,
    redis_url: str,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posts = orjson.loads((data_dir / "wordpress/frontity/posts.json").read_bytes())
    monkeypatch.setenv(PASSWORD_ENV, "e2e app password")
    spec = LiveSourceSpec(
        name="e2e-wp",
        kind="wordpress",
        brand="frontity",
        url="http://127.0.0.1:1/wp-json",
        schedule_s=1,
        per_host_rps=100,
        timeout_s=5,
        cursor_dir=tmp_path,
        page_size=2,
        auth=AuthSpec(username="editor", password_env=PASSWORD_ENV),
    )
    with FixtureServer() as server, running_pipeline(kafka_bootstrap, redis_url, tmp_path) as s:
        server.wp_posts = copy.deepcopy(posts)
        server.wp_credentials = ("editor", "e2e app password")
        spec = spec.model_copy(update={"url": f"{server.base}/wp-json"})
        conn = WordPressConnector(spec, bootstrap=s.kafka_bootstrap)
        base = f"http://{s.api_host}:{s.api_port}"
        with httpx.Client(base_url=base, headers=api_headers(s), timeout=10) as api:
            conn.poll_safely()
            assert conn.metrics.published == len(posts), conn.metrics.last_error
            drain(s.kafka_bootstrap, s.app_id)
            for post in posts:
                got = api.get(f"/v1/content/{content_id('e2e-wp', str(post['id']))}")
                assert got.status_code == 200, (post["id"], got.text[:200])
                doc = got.json()
                assert doc["brand"] == "frontity" and doc["source"] == "e2e-wp"
                assert doc["url"] == post["link"]
                assert "<" not in doc["title"] and doc["title"]

            # an edit: re-published once, served with its new title
            edited = next(p for p in server.wp_posts if p["id"] == 83)
            edited["modified_gmt"] = "2030-01-01T00:00:00"
            edited["title"]["rendered"] = "Rewritten &amp; republished"
            conn.poll_safely()
            cid83 = content_id("e2e-wp", "83")
            _until(
                lambda: (
                    api.get(f"/v1/content/{cid83}").json().get("title") == "Rewritten & republished"
                ),
                "edited title served",
            )

            # a trashed post: a delete event, gone from the content table
            trashed = next(p for p in server.wp_posts if p["id"] == 1)
            trashed["status"], trashed["modified_gmt"] = "trash", "2030-01-02T00:00:00"
            conn.poll_safely()
            cid1 = content_id("e2e-wp", "1")
            _until(lambda: api.get(f"/v1/content/{cid1}").status_code == 404, "trashed post gone")
            assert api.get(f"/v1/content/{cid83}").status_code == 200
        conn.stop()
