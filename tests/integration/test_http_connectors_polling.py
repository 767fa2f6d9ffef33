"""Live CMS connectors over real HTTP into real Kafka: incremental polling. Cursors across
pages and restarts (WordPress ``modified_after``, Drupal ``changed`` with ties in one second),
each item published exactly once, edits re-published, drafts/unpublished items as deletes, and
feed conditional GETs with change detection.

The sources are served by :class:`connectors.simulator.FixtureServer` (127.0.0.1, ephemeral
port) from the real payloads in the shared data directory, with injected faults. Assertions are
on what reaches ``cms.raw``: each test reads only the offsets written after it started and only
its own (uniquely named) source, decoded with ``codec('RawCmsEvent')``. Back-offs are
configured in milliseconds so the module stays fast; nothing asserts on wall time. Fixtures:
``conftest.py``; helpers: ``http_connectors_support``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from http_connectors_support import (
    DRUPAL,
    PASSWORD_ENV,
    WP,
    Tap,
    by_id,
    drupal_items,
    ids_of,
    spec,
    wp_posts,
    wp_ts,
)

from connectors.config import AuthSpec
from connectors.drupal import DrupalConnector
from connectors.rss import FeedConnector
from connectors.simulator import Fault, FixtureServer
from connectors.wordpress import WordPressConnector
from feedpipe.kafka.producer import IdempotentProducer

pytestmark = pytest.mark.integration


def test_wordpress_restart_mid_pagination_resumes_without_gap_or_duplicate(
    server: FixtureServer, tap: Tap, producer: IdempotentProducer, data_dir: Path, tmp_path: Path
) -> None:
    """Page 2 fails past every retry: page 1 stays published and in the cursor; a new
    connector instance resumes from the cursor: each post exactly once. Without auth only
    ``status=publish`` is asked."""
    posts = wp_posts(data_dir)
    server.wp_posts = posts
    by_id = {p["id"]: p for p in posts}
    s = spec("wordpress", f"{server.base}/wp-json", tmp_path, retry_attempts=3)
    after_112 = wp_ts(by_id[112])
    server.fault(
        WP, Fault("status", 503, when=lambda q: q.get("modified_after") == after_112, times=3)
    )

    first = WordPressConnector(s, producer=producer)
    first.poll_safely()
    assert first.metrics.published == 1
    assert first.metrics.failures == {"http_503": 1}
    assert first.metrics.retries == 2
    assert first.metrics.last_error and "HTTP 503" in first.metrics.last_error
    cursor = orjson.loads(s.cursor_path().read_bytes())
    assert cursor["ts"] == "2019-01-09T13:14:41+00:00" and list(cursor["seen"]) == ["112"]
    first.stop()

    second = WordPressConnector(s, producer=producer)
    second.poll_safely()
    assert second.metrics.consecutive_failures == 0, second.metrics.last_error
    resumed = server.requests_to(WP)[-4:]  # the second instance's requests
    assert resumed[0].query["modified_after"] == after_112
    recs = tap.records(s.name)
    assert Counter(ids_of(recs)) == {"112": 1, "83": 1, "1": 1}
    assert all(r.query["status"] == "publish" for r in server.requests_to(WP))
    second.stop()


def test_wordpress_equal_timestamps_across_pages_and_drafts(
    server: FixtureServer,
    tap: Tap,
    producer: IdempotentProducer,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three posts saved in the same second, one per page, a crash before page 3: the restart
    publishes only the third; the draft is a delete event; an anonymous source never sees
    the draft."""
    posts = wp_posts(data_dir)
    for p in posts:
        p["modified_gmt"] = "2021-02-03T04:05:06"
    posts[1]["status"] = "draft"  # id 83
    server.wp_posts = posts
    server.wp_credentials = ("editor", "pw")
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    auth = AuthSpec(username="editor", password_env=PASSWORD_ENV)
    s = spec("wordpress", f"{server.base}/wp-json", tmp_path, auth=auth)
    server.fault(WP, Fault("status", 500, when=lambda q: q.get("page") == "3", times=3))

    first = WordPressConnector(s, producer=producer)
    first.poll_safely()
    assert first.metrics.published == 2 and first.metrics.failures == {"http_500": 1}
    second = WordPressConnector(s, producer=producer)
    second.poll_safely()
    assert second.metrics.published == 1, second.metrics.last_error
    recs = tap.records(s.name)
    assert sorted(ids_of(recs)) == ["1", "112", "83"]  # each once
    ops = {r["source_id"]: r["op"] for r in recs}
    assert ops == {"1": "upsert", "83": "delete", "112": "upsert"}

    anon = spec("wordpress", f"{server.base}/wp-json", tmp_path / "anon", page_size=10)
    conn = WordPressConnector(anon, producer=producer)
    conn.poll_safely()
    assert sorted(ids_of(tap.records(anon.name))) == ["1", "112"]
    first.stop()
    second.stop()
    conn.stop()


def test_drupal_ties_restart_changes_and_unpublish(
    server: FixtureServer, tap: Tap, producer: IdempotentProducer, data_dir: Path, tmp_path: Path
) -> None:
    """8 real articles sharing one ``changed`` second, 3 per page via ``links.next``; the
    third page fails past the retries; the restart publishes only the remaining 2. An edited
    article is re-published once, an unpublished one becomes a delete."""
    items = drupal_items(data_dir)
    server.drupal_items = items
    s = spec("drupal", server.base, tmp_path, page_size=3)
    server.fault(DRUPAL, Fault("status", 502, when=lambda q: q.get("page[offset]") == "6", times=3))

    first = DrupalConnector(s, producer=producer)
    first.poll_safely()
    assert first.metrics.published == 6 and first.metrics.failures == {"http_502": 1}
    first.stop()
    second = DrupalConnector(s, producer=producer)
    second.poll_safely()
    assert second.metrics.published == 2, second.metrics.last_error
    recs = tap.records(s.name)
    assert Counter(ids_of(recs)) == Counter({i["id"]: 1 for i in items})
    assert all(r["kind"] == "drupal.node" and r["op"] == "upsert" for r in recs)
    payload = orjson.loads(recs[0]["payload"])
    assert set(payload) == {"data", "included"} and payload["data"]["type"] == "node--article"
    first_req = server.requests_to(DRUPAL)[0].query
    assert first_req["sort"] == "changed" and first_req["include"] == "field_tags,uid"

    # nothing new
    second.poll_safely()
    assert len(tap.records(s.name)) == 8
    # one article edited (changed + title), one unpublished
    items[2]["attributes"]["title"] = "Geänderter Titel"
    items[2]["attributes"]["changed"] = "2023-03-01T09:00:00+00:00"
    items[5]["attributes"]["status"] = False
    items[5]["attributes"]["changed"] = "2023-03-02T09:00:00+00:00"
    second.poll_safely()
    recs = tap.records(s.name)
    assert len(recs) == 10
    edited, unpublished = by_id(recs, items[2]["id"]), by_id(recs, items[5]["id"])
    assert [r["op"] for r in edited] == ["upsert", "upsert"]
    assert orjson.loads(edited[-1]["payload"])["data"]["attributes"]["title"] == "Geänderter Titel"
    assert [r["op"] for r in unpublished] == ["upsert", "delete"]
    q = server.requests_to(DRUPAL)[-1].query
    assert q["filter[changed][operator]"] == ">="
    second.stop()


def test_feed_conditional_get_and_change_detection(
    server: FixtureServer, tap: Tap, producer: IdempotentProducer, data_dir: Path, tmp_path: Path
) -> None:
    """200 -> one feed.document; 304 -> nothing; a new ETag with the same bytes -> nothing;
    an item changed (title, date) -> one more document. A restart keeps the validators."""
    raw = (data_dir / "feeds/realworld/rsparser__EMarley.rss").read_bytes()
    ctype = "application/rss+xml; charset=utf-8"
    url = server.set_feed("emarley.rss", raw, ctype)
    s = spec("rss", url, tmp_path)
    conn = FeedConnector(s, producer=producer)
    conn.poll_safely()
    recs = tap.records(s.name)
    assert len(recs) == 1
    rec = recs[0]
    assert rec["payload"] == raw and rec["kind"] == "feed.document" and rec["source_id"] is None
    assert rec["content_type"] == ctype and rec["brand"] == "test-brand"
    assert rec["_key"] == f"{s.name}:{url}".encode() and rec["origin"] == url

    conn.poll_safely()  # conditional GET -> 304
    last = server.requests_to("/feeds/emarley.rss")[-1]
    assert last.headers["if-none-match"] == server.feeds["emarley.rss"].etag
    assert "if-modified-since" in last.headers
    assert conn.metrics.not_modified == 1
    conn.stop()

    # restart; the server now changes its ETag on the same bytes and ignores validators
    again = FeedConnector(s, producer=producer)
    server.set_feed("emarley.rss", raw, ctype, etag='"other"', honour_conditional=False)
    again.poll_safely()
    assert again.metrics.not_modified == 1 and again.metrics.published == 0

    # an item changes between polls: new title and date -> published once
    first_item = raw.index(b"<item>")
    title_at = raw.index(b"<title>", first_item) + len(b"<title>")
    changed = raw[:title_at] + b"UPDATED: " + raw[title_at:]
    server.set_feed("emarley.rss", changed, ctype)
    again.poll_safely()
    again.poll_safely()  # 304 again
    recs = tap.records(s.name)
    assert len(recs) == 2 and recs[1]["payload"] == changed
    assert again.metrics.published == 1 and again.metrics.not_modified == 2
    again.stop()
