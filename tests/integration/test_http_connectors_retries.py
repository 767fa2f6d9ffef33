"""Live CMS connectors over real HTTP into real Kafka: the HTTP client's fault handling.
Transient faults (500, timeout, truncated JSON, 429 with Retry-After) are retried; Drupal JSON:API
error documents end as clear errors, only 5xx retried; a failing source is isolated and backed
off while the others keep publishing (SourceRunner).

The sources are served by :class:`connectors.simulator.FixtureServer` (127.0.0.1, ephemeral
port) from the real payloads in the shared data directory, with injected faults. Assertions are
on what reaches ``cms.raw``: each test reads only the offsets written after it started and only
its own (uniquely named) source, decoded with ``codec('RawCmsEvent')``. Back-offs are
configured in milliseconds so the module stays fast; nothing asserts on wall time. Fixtures:
``conftest.py``; helpers: ``http_connectors_support``."""

from __future__ import annotations

import logging
import time
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
)

from connectors.config import AuthSpec
from connectors.drupal import DrupalConnector
from connectors.http.errors import RequestRejected
from connectors.runner import SourceRunner
from connectors.simulator import Fault, FixtureServer
from connectors.wordpress import WordPressConnector
from feedpipe.kafka.producer import IdempotentProducer

pytestmark = pytest.mark.integration


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
