"""connectors.yaml loading (connectors.config) and the pure helpers of the live connectors
(Retry-After, error details, keyset cursor, token bucket, feed content type). No network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from connectors.config import (
    CONNECTORS_PATH,
    AuthSpec,
    LiveSourceSpec,
    load_sources,
    select_sources,
)
from connectors.cursor import KeysetCursor, parse_utc
from connectors.http.client import RetryPolicy, TokenBucket
from connectors.http.errors import error_detail, jsonapi_errors, parse_retry_after
from connectors.rss import feed_content_type
from connectors.runner import connector_for
from feedpipe.errors import ConfigError

VALID = """
sources:
  - name: newsroom-wp
    kind: wordpress
    brand: newsroom
    url: https://newsroom.example/wp-json
    schedule_s: 60
    auth: {username: bot, password_env: NEWSROOM_WP_APP_PASSWORD}
    per_host_rps: 2
    timeout_s: 5
    cursor_dir: cursors
  - name: kitchen-drupal
    kind: drupal
    brand: kitchen
    url: https://kitchen.example
  - name: wire-rss
    kind: rss
    brand: newsroom
    url: https://wire.example/feed.xml
    cursor_dir: /var/lib/feedpipe/cursors
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connectors.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- config ------------------------------------------------------------------------------------
def test_shipped_connectors_yaml_loads_and_polls_nothing() -> None:
    assert CONNECTORS_PATH.is_file()
    assert load_sources(CONNECTORS_PATH) == []
    assert "example" in CONNECTORS_PATH.read_text()  # only placeholder hosts, commented out


def test_valid_file(tmp_path: Path) -> None:
    wp, dr, rss = load_sources(write(tmp_path, VALID))
    assert (wp.kind, wp.brand, wp.schedule_s, wp.per_host_rps, wp.timeout_s) == (
        "wordpress",
        "newsroom",
        60,
        2,
        5,
    )
    assert wp.auth == AuthSpec(username="bot", password_env="NEWSROOM_WP_APP_PASSWORD")
    assert wp.cursor_path() == tmp_path.resolve() / "cursors" / "newsroom-wp.json"  # relative
    assert rss.cursor_path() == Path("/var/lib/feedpipe/cursors/wire-rss.json")
    assert dr.include == ["field_tags", "uid"] and dr.auth is None
    assert dr.cursor_dir is None and dr.cursor_path().name == "kitchen-drupal.json"
    assert RetryPolicy.of(dr) == RetryPolicy()


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("    colour: red\n", "colour"),  # unknown key
        ("    auth: {username: u, password: hunter2}\n", "password"),  # secret inline: refused
        ("    schedule_s: 0\n", "schedule_s"),
        ("    per_host_rps: -1\n", "per_host_rps"),
    ],
)
def test_invalid_fields_name_file_and_field(tmp_path: Path, snippet: str, message: str) -> None:
    text = "sources:\n  - name: a\n    kind: rss\n    brand: b\n    url: https://x.example/f\n"
    path = write(tmp_path, text + snippet)
    with pytest.raises(ConfigError) as info:
        load_sources(path)
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{name: a, kind: joomla, brand: b, url: 'https://x.example'}", "kind"),
        ("{name: a, kind: rss, brand: b, url: 'ftp://x.example/f'}", "not an absolute http"),
        ("{name: 'a b', kind: rss, brand: b, url: 'https://x.example/f'}", "source name"),
        ("{name: a, kind: drupal, brand: b, url: 'https://x.example', page_size: 80}", "50"),
        (
            "{name: a, kind: rss, brand: b, url: 'https://x.example/f', "
            "auth: {username: u, password_env: P}}",
            "auth is supported",
        ),
    ],
)
def test_invalid_sources(tmp_path: Path, source: str, message: str) -> None:
    path = write(tmp_path, f"sources:\n  - {source}\n")
    with pytest.raises(ConfigError, match=message):
        load_sources(path)


def test_duplicate_names_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    one = "{name: a, kind: rss, brand: b, url: 'https://x.example/f'}"
    with pytest.raises(ConfigError, match="declared twice"):
        load_sources(write(tmp_path, f"sources:\n  - {one}\n  - {one}\n"))
    with pytest.raises(ConfigError, match=r"connectors\.yaml"):
        load_sources(write(tmp_path, "sources: [\n"))
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_sources(tmp_path / "nope.yaml")
    assert load_sources(write(tmp_path, "")) == []


def test_password_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = AuthSpec(username="bot", password_env="FEEDPIPE_TEST_SECRET_X")
    monkeypatch.delenv("FEEDPIPE_TEST_SECRET_X", raising=False)
    with pytest.raises(ConfigError, match="FEEDPIPE_TEST_SECRET_X"):
        auth.password()
    spec = LiveSourceSpec(
        name="wp", kind="wordpress", brand="b", url="https://x.example/wp-json", auth=auth
    )
    with pytest.raises(ConfigError, match="FEEDPIPE_TEST_SECRET_X"):
        connector_for(spec)  # fails before anything runs
    monkeypatch.setenv("FEEDPIPE_TEST_SECRET_X", "s3cret")
    assert auth.password() == "s3cret"
    conn = connector_for(spec)
    assert type(conn).__name__ == "WordPressConnector" and conn.auth is not None
    conn.http.close()


def test_select_sources(tmp_path: Path) -> None:
    specs = load_sources(write(tmp_path, VALID))
    assert [s.name for s in select_sources(specs, ["wire-rss", "newsroom-wp"])] == [
        "wire-rss",
        "newsroom-wp",
    ]
    assert select_sources(specs, None) == specs
    with pytest.raises(ConfigError, match="unknown live sources"):
        select_sources(specs, ["nope"])


# -- HTTP helpers ------------------------------------------------------------------------------
def test_parse_retry_after() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("1", now) == 1.0
    assert parse_retry_after(" 120 ", now) == 120.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_error_detail_reads_real_error_documents(data_dir: Path) -> None:
    docs = data_dir / "drupal/drupal-kit"
    include = (docs / "jsonapi_include_error.json").read_bytes()
    assert error_detail(include).startswith(
        "400 Bad Request: `wrong-field` is not a valid relationship field name."
    )
    assert jsonapi_errors(include) is not None
    multiple = error_detail((docs / "jsonapi_multiple_errors.json").read_bytes())
    assert multiple.count("; ") == 2 and "field_firstname: Dieser Wert" in multiple
    typo = (docs / "jsonapi_index_error.json").read_bytes()  # "errros": not an error document
    assert jsonapi_errors(typo) is None and '"errros"' in error_detail(typo)
    wp = b'{"code":"rest_forbidden","message":"Sorry, you are not allowed.","data":{"status":401}}'
    assert error_detail(wp) == "rest_forbidden: Sorry, you are not allowed."
    assert error_detail(b"<html>\n  Bad   Gateway </html>") == "<html> Bad Gateway </html>"
    assert error_detail(b"") == ""


def test_keyset_cursor() -> None:
    t1 = datetime(2024, 1, 1, tzinfo=UTC)
    t2 = t1 + timedelta(seconds=1)
    start = KeysetCursor()
    assert not start.is_seen("1", t1, b"a") and start.describe() == "start"
    c = start.advanced([("1", t1, b"a"), ("2", t2, b"b"), ("3", t2, b"c")])
    assert c.ts == t2 and set(c.seen) == {"2", "3"}
    assert c.is_seen("2", t2, b"b")
    assert not c.is_seen("2", t2, b"b-edited-same-second")  # other content: publish again
    assert not c.is_seen("4", t2, b"d")
    assert c.is_seen("1", t1, b"a")  # older than the cursor
    assert not c.is_seen(None, t2, b"x") and not c.is_seen("9", None, b"x")
    same = c.advanced([("4", t2, b"d")])
    assert set(same.seen) == {"2", "3", "4"}  # same second: accumulated
    assert c.advanced([("5", t1, b"old")]) == c  # older answers do not move it back
    assert c.advanced([(None, t2, b"?"), ("6", None, b"?")]) == c
    assert KeysetCursor.from_json(c.to_json()) == c
    assert KeysetCursor.from_json(None) == KeysetCursor()
    with pytest.raises(ValueError):
        KeysetCursor.from_json({"ts": "2024-01-01T00:00:00+00:00", "seen": ["1"]})
    with pytest.raises(ValueError):
        KeysetCursor.from_json({"ts": "yesterday", "seen": {}})


def test_parse_utc() -> None:
    assert parse_utc("2019-03-11T11:46:53") == datetime(2019, 3, 11, 11, 46, 53, tzinfo=UTC)
    assert parse_utc("2023-02-23T12:10:08+01:00") == datetime(2023, 2, 23, 11, 10, 8, tzinfo=UTC)
    assert parse_utc("not a date") is None and parse_utc(None) is None


def test_token_bucket_spaces_requests() -> None:
    bucket = TokenBucket(2.0)  # 2 requests/s, burst 2
    assert bucket.reserve() == 0.0 and bucket.reserve() == 0.0
    third = bucket.reserve()
    assert 0.0 < third <= 0.5
    assert bucket.reserve() > third  # queued behind the third
    bucket.limit(0.5)
    assert bucket.rate == 0.5 and bucket.capacity == 1.0
    bucket.limit(10.0)  # never raised by another source
    assert bucket.rate == 0.5
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_feed_content_type() -> None:
    body = b'<?xml version="1.0"?><rss version="2.0"></rss>'
    assert feed_content_type("https://x.example/f", "text/xml; charset=ISO-8859-1", body) == (
        "text/xml; charset=ISO-8859-1"
    )
    assert feed_content_type("https://x.example/feed", "application/octet-stream", body) == (
        "application/rss+xml"
    )
    assert (
        feed_content_type("https://x.example/f.atom", "text/plain; charset=utf-8", b"<feed/>")
        == "application/atom+xml; charset=utf-8"
    )
    assert feed_content_type("https://x.example/f", None, b'{"items": []}') == (
        "application/feed+json"
    )
