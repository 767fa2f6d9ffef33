"""Live CMS connectors (WordPress, Drupal, feeds) over real HTTP into real Kafka.

The sources are served by :class:`connectors.simulator.FixtureServer` (127.0.0.1, ephemeral
port) from the real payloads in the shared data directory, with injected faults. Assertions are
on what reaches ``cms.raw``: each test reads only the offsets written after it started and only
its own (uniquely named) source, decoded with ``codec('RawCmsEvent')``. Back-offs are
configured in milliseconds so the module stays fast; nothing asserts on wall time."""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka_leaders import led_high_watermarks

from connectors.config import AuthSpec, LiveSourceSpec
from connectors.drupal import DrupalConnector
from connectors.http.errors import RequestRejected
from connectors.rss import FeedConnector
from connectors.runner import SourceRunner
from connectors.simulator import Fault, FixtureServer
from connectors.wordpress import WordPressConnector
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.kafka.topics import TopicChange
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration

WP = "/wp-json/wp/v2/posts"
DRUPAL = "/jsonapi/node/article"
TOPIC = "cms.raw"
PASSWORD_ENV = "FEEDPIPE_TEST_WP_APP_PASSWORD"


# -- Kafka -------------------------------------------------------------------------------------
class Tap:
    """Reads the cms.raw records written after its creation (per-partition high watermarks)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.start = self._watermarks()

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"test-http-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )

    def _watermarks(self) -> dict[int, int]:
        return led_high_watermarks(self.bootstrap, TOPIC)

    def records(self, source: str) -> list[dict[str, Any]]:
        """Decoded records of ``source`` between the start and the current high watermarks."""
        end = self._watermarks()
        want = sum(end[p] - self.start.get(p, 0) for p in end)
        out: list[dict[str, Any]] = []
        if want == 0:
            return out
        decode = codec("RawCmsEvent").decode
        c = self._consumer()
        try:
            c.assign([TopicPartition(TOPIC, p, self.start.get(p, 0)) for p in end])
            got = 0
            deadline = time.monotonic() + 30
            while got < want:
                assert time.monotonic() < deadline, f"only {got} of {want} records on {TOPIC}"
                msg = c.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                offset, part = msg.offset(), msg.partition()
                assert offset is not None and part is not None
                if offset >= end[part]:
                    continue
                got += 1
                rec = decode(msg.value())
                if rec["source"] == source:
                    rec["_key"] = msg.key()
                    out.append(rec)
        finally:
            c.close()
        return out


@pytest.fixture(scope="module")
def producer(
    kafka_bootstrap: str, topics_applied: list[TopicChange]
) -> Iterator[IdempotentProducer]:
    prod = IdempotentProducer(kafka_bootstrap, client_id="test-http-connectors")
    yield prod
    prod.close()


@pytest.fixture()
def tap(kafka_bootstrap: str, topics_applied: list[TopicChange]) -> Tap:
    return Tap(kafka_bootstrap)


@pytest.fixture()
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        yield srv


# -- data --------------------------------------------------------------------------------------
def wp_posts(data_dir: Path) -> list[dict[str, Any]]:
    """The 3 real posts of wordpress/frontity/posts.json (ids 1, 83, 112)."""
    posts = orjson.loads((data_dir / "wordpress/frontity/posts.json").read_bytes())
    assert [p["id"] for p in posts] == [1, 83, 112]
    return copy.deepcopy(posts)


def drupal_items(data_dir: Path) -> list[dict[str, Any]]:
    """The 8 real node--article resources (all with the same ``changed`` second)."""
    doc = orjson.loads(
        (data_dir / "drupal/drupal-kit/jsonapi_article_collection.json").read_bytes()
    )
    assert len(doc["data"]) == 8
    return copy.deepcopy(doc["data"])


def spec(kind: str, url: str, cursor_dir: Path, **kw: Any) -> LiveSourceSpec:
    """A test source: unique name, fast back-offs (ms), short timeouts."""
    base: dict[str, Any] = {
        "name": f"t-{kind}-{uuid.uuid4().hex[:8]}",
        "kind": kind,
        "brand": "test-brand",
        "url": url,
        "schedule_s": 0.05,
        "per_host_rps": 1000,
        "timeout_s": 0.5,
        "cursor_dir": cursor_dir,
        "page_size": 1,
        "retry_attempts": 3,
        "retry_initial_s": 0.01,
        "retry_max_s": 0.05,
        "retry_after_cap_s": 5,
        "fail_threshold": 2,
        "max_backoff_s": 120,
    }
    base.update(kw)
    return LiveSourceSpec(**base)


def wp_ts(post: dict[str, Any]) -> str:
    """modified_gmt - 1 s as the connector sends it (modified_after is exclusive)."""
    from datetime import UTC, datetime, timedelta

    t = datetime.fromisoformat(post["modified_gmt"]).replace(tzinfo=UTC) - timedelta(seconds=1)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def ids_of(records: list[dict[str, Any]]) -> list[str | None]:
    return [r["source_id"] for r in records]


def by_id(records: list[dict[str, Any]], source_id: str) -> list[dict[str, Any]]:
    """Records of one item, in publish order (one key -> one partition)."""
    return [r for r in records if r["source_id"] == source_id]


# -- WordPress ---------------------------------------------------------------------------------
def test_wordpress_transient_faults_then_changes(
    server: FixtureServer,
    tap: Tap,
    producer: IdempotentProducer,
    data_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """500, timeout, truncated JSON and 429 (Retry-After: 1) are retried; every post arrives
    once; an edited post is re-published once; a trashed post becomes a delete event."""
    server.wp_posts = wp_posts(data_dir)
    server.wp_credentials = ("editor", "app pass 1234")
    monkeypatch.setenv(PASSWORD_ENV, "app pass 1234")
    # Requests of the first poll (per_page 2): 1 = page 1, 2 = from the cursor on.
    server.fault(WP, Fault("status", 500, body=b'{"code":"boom","message":"down"}', on=(1,)))
    server.fault(WP, Fault("sleep", sleep_s=1.5, on=(2,)))  # > timeout_s 0.5
    server.fault(WP, Fault("truncate", on=(3,)))
    server.fault(WP, Fault("status", 429, headers={"Retry-After": "1"}, on=(4,)))
    s = spec(
        "wordpress",
        f"{server.base}/wp-json",
        tmp_path,
        page_size=2,
        retry_attempts=5,
        auth=AuthSpec(username="editor", password_env=PASSWORD_ENV),
    )
    conn = WordPressConnector(s, producer=producer)
    with caplog.at_level(logging.WARNING, logger="feedpipe.connectors"):
        assert conn.poll_safely() >= 0
    m = conn.metrics
    assert m.consecutive_failures == 0, m.last_error
    assert m.published == 3
    assert m.retries == 4
    assert "http_429: HTTP 429" in caplog.text and "retrying in 1.00 s" in caplog.text
    assert "invalid_json" in caplog.text and "timeout" in caplog.text
    # authenticated: every status asked; modified order
    assert all("trash" in r.query["status"] for r in server.requests_to(WP))
    recs = tap.records(s.name)
    assert Counter(ids_of(recs)) == {"112": 1, "83": 1, "1": 1}
    assert {r["op"] for r in recs} == {"upsert"}
    r112 = by_id(recs, "112")[0]
    assert r112["_key"] == f"{s.name}:112".encode()
    assert orjson.loads(r112["payload"])["title"]["rendered"] == "Eum ipsum eos sit sed sint"

    # nothing new: nothing published
    conn.poll_safely()
    assert len(tap.records(s.name)) == 3

    # post 83 edited (modified date and title) -> exactly one new event with the new title
    post83 = next(p for p in server.wp_posts if p["id"] == 83)
    post83["modified_gmt"] = "2020-05-01T08:00:00"
    post83["title"]["rendered"] = "Veniam, revised"
    conn.poll_safely()
    recs = tap.records(s.name)
    assert Counter(ids_of(recs)) == {"112": 1, "83": 2, "1": 1}
    latest = by_id(recs, "83")[-1]  # same key, same partition: in publish order
    assert orjson.loads(latest["payload"])["title"]["rendered"] == "Veniam, revised"

    # post 1 trashed -> a delete event
    post1 = next(p for p in server.wp_posts if p["id"] == 1)
    post1["status"], post1["modified_gmt"] = "trash", "2020-06-01T00:00:00"
    conn.poll_safely()
    recs = tap.records(s.name)
    assert Counter(ids_of(recs)) == {"112": 1, "83": 2, "1": 2}
    assert [r["op"] for r in by_id(recs, "1")] == ["upsert", "delete"]
    assert by_id(recs, "1")[-1]["kind"] == "wordpress.post"
    assert conn.metrics.cursor is not None and "2020-06-01T00:00:00" in conn.metrics.cursor
    conn.stop()


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


# -- Drupal ------------------------------------------------------------------------------------
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


@pytest.mark.parametrize(
    ("file", "status", "code", "detail", "retried"),
    [
        (
            "jsonapi_include_error.json",
            400,
            "jsonapi_error",
            "400 Bad Request: `wrong-field` is not a valid relationship field name",
            False,
        ),
        (
            "jsonapi_multiple_errors.json",
            422,
            "jsonapi_error",
            "422 Unprocessable Entity: field_lastname: Dieser Wert sollte nicht leer sein.",
            False,
        ),
        ("jsonapi_include_error.json", 200, "jsonapi_error", "`wrong-field` is not", False),
        ("jsonapi_index_error.json", 500, "http_500", '"errros"', True),
        ("jsonapi_index_error.json", 200, "not_a_collection", '"errros"', False),
    ],
)
def test_drupal_error_documents_are_clear_errors(
    server: FixtureServer,
    tap: Tap,
    producer: IdempotentProducer,
    data_dir: Path,
    tmp_path: Path,
    file: str,
    status: int,
    code: str,
    detail: str,
    retried: bool,
) -> None:
    """Every real JSON:API error document ends as a clear error carrying its detail, counted
    by reason; nothing is published; only the 5xx is retried."""
    server.drupal_items = drupal_items(data_dir)
    path = data_dir / "drupal/drupal-kit" / file
    server.fault(DRUPAL, Fault("file", status, path=path, when=None, times=100))
    s = spec("drupal", server.base, tmp_path)
    conn = DrupalConnector(s, producer=producer)
    if not retried:
        with pytest.raises(RequestRejected if code == "jsonapi_error" else Exception) as info:
            conn.poll_once()
        assert detail in str(info.value)
        assert conn.metrics.rejected == {code: 1}
    conn.poll_safely()
    m = conn.metrics
    assert m.failures == {code: 1}
    assert m.last_error is not None and detail in m.last_error
    assert m.retries == (2 if retried else 0)
    assert m.published == 0 and tap.records(s.name) == []
    conn.stop()


# -- feeds -------------------------------------------------------------------------------------
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


# -- runner ------------------------------------------------------------------------------------
def test_run_sources_failing_source_is_isolated_and_backed_off(
    server: FixtureServer, tap: Tap, producer: IdempotentProducer, data_dir: Path, tmp_path: Path
) -> None:
    """All sources in their own threads on one producer: a source whose host refuses
    connections is reported failing after ``fail_threshold`` polls and then waits
    ``max_backoff_s``; the others publish everything, each feed under its own brand."""
    server.wp_posts = wp_posts(data_dir)
    server.drupal_items = drupal_items(data_dir)
    feeds = data_dir / "feeds/realworld"
    atom = server.set_feed(
        "df.atom", (feeds / "rsparser__DaringFireball.atom").read_bytes(), "application/atom+xml"
    )
    jsonf = server.set_feed(
        "feed.json", (feeds / "feedjira__json_feed.json").read_bytes(), "application/feed+json"
    )
    dead = FixtureServer()  # bound then closed: its port refuses connections
    dead_url = f"{dead.base}/feed.xml"
    dead._httpd.server_close()
    specs = [
        spec("wordpress", f"{server.base}/wp-json", tmp_path, page_size=2),
        spec("drupal", server.base, tmp_path, page_size=5),
        spec("rss", atom, tmp_path, brand="brand-a"),
        spec("rss", jsonf, tmp_path, brand="brand-b"),
        spec("rss", dead_url, tmp_path, retry_attempts=2),
    ]
    wp, dr, fa, fb, bad = (x.name for x in specs)
    runner = SourceRunner(specs, producer=producer)
    with runner:
        deadline = time.monotonic() + 30
        m = runner.metrics
        while not (
            m[bad].failing
            and m[wp].published == 3
            and m[dr].published == 8
            and m[fa].published == 1
            and m[fb].published == 1
        ):
            assert time.monotonic() < deadline, {k: v.as_dict() for k, v in m.items()}
            time.sleep(0.05)
        polls_when_failing = m[bad].polls
        time.sleep(0.5)  # ~10 schedules of the healthy sources
        assert m[bad].polls == polls_when_failing == 2  # backed off, not a tight loop
        assert m[wp].polls > 2  # the healthy ones kept polling meanwhile
    assert m[bad].failures == {"connection": 2} and m[bad].retries == 2
    assert m[bad].last_error is not None and "ConnectError" in m[bad].last_error
    assert m[wp].published == 3 and m[dr].published == 8  # nothing re-published
    for name in (wp, dr, fa, fb):
        assert m[name].last_success_at is not None and m[name].cursor
        assert not m[name].failing
    assert len(tap.records(wp)) == 3 and len(tap.records(dr)) == 8
    assert [r["brand"] for r in tap.records(fa)] == ["brand-a"]
    assert [r["brand"] for r in tap.records(fb)] == ["brand-b"]
    assert tap.records(fb)[0]["content_type"] == "application/feed+json"
    assert tap.records(bad) == []
    d = m[bad].as_dict()
    assert d["failing"] is True and d["consecutive_failures"] == 2 and d["cursor"]
