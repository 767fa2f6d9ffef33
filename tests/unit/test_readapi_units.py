"""Pure parts of the read endpoint: circuit breaker, token bucket, cursors, ETags, Wilson
interval and A/B results, API keys file, path classification, page cache, stored-format decoding."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import orjson
import pytest

from feedpipe.apikeys import (
    KeyFileError,
    KeyStore,
    TokenBucket,
    create_key,
    ensure_dev_key,
    hash_token,
    load_keys,
    revoke_key,
)
from readapi.caching import etag_of, if_none_match
from readapi.gateway import classify
from readapi.guards import CircuitBreaker, CircuitOpen
from readapi.openapi import CURSOR_OR_EMPTY, openapi_document
from readapi.params import (
    CURSOR_PATTERN,
    FALSE_VALUES,
    FLAG_VALUES,
    TRUE_VALUES,
    BadRequest,
    decode_cursor,
    encode_cursor,
)
from readapi.routes.experiments import ab_results, wilson_interval
from readapi.store import SUMMARY_TTL_S, PageCache, content_summary, parse_feed


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_consecutive_failures_and_recovers_through_half_open() -> None:
    clock = Clock()
    changes: list[str] = []
    b = CircuitBreaker(3, 5.0, clock=clock, on_change=changes.append)
    err = ConnectionError("refused")
    for _ in range(2):
        b.before_call()
        b.failure(err)
    b.before_call()
    b.success()  # a success resets the count
    for _ in range(2):
        b.before_call()
        b.failure(err)
    assert b.state == "closed"
    b.before_call()
    b.failure(err)
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        b.before_call()
    assert b.retry_after_s() == 5
    clock.t += 5.0
    b.before_call()  # the trial call
    assert b.state == "half_open"
    with pytest.raises(CircuitOpen):
        b.before_call()  # only one trial at a time
    b.failure(err)  # failed trial: open again, timer restarted
    assert b.state == "open"
    clock.t += 4.9
    with pytest.raises(CircuitOpen):
        b.before_call()
    clock.t += 0.1
    b.before_call()
    b.success()
    assert b.state == "closed"
    assert changes == ["open", "half_open", "open", "half_open", "closed"]
    assert "refused" in b.last_error


def test_breaker_rejects_bad_thresholds() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0)


def test_token_bucket() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # 1 token at 2/s
    clock.t += 0.5
    assert bucket.take() == 0.0
    clock.t += 100.0  # refills up to the burst only
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() > 0.0


def test_cursor_round_trip_and_document_pattern() -> None:
    assert decode_cursor(encode_cursor("trending", 40, 37)) == ("trending", 40, 37)
    cursor = encode_cursor("latest", 0, 99_999)
    assert re.fullmatch(CURSOR_PATTERN, cursor) and re.fullmatch(CURSOR_OR_EMPTY, cursor)
    assert re.fullmatch(CURSOR_OR_EMPTY, "") and not re.fullmatch(CURSOR_PATTERN, "")
    assert set(FLAG_VALUES) == {"", *TRUE_VALUES, *FALSE_VALUES}
    for bad in ("", "trending.1", "other.1.1", "trending.-1.0", "trending.123456.0", "x" * 70):
        with pytest.raises(BadRequest):
            decode_cursor(bad)


def test_etag_and_if_none_match() -> None:
    tag = etag_of(b'{"a":1}')
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 26
    assert tag != etag_of(b'{"a":2}')
    assert if_none_match(tag, tag)
    assert if_none_match(f'"nope", W/{tag}', tag)
    assert if_none_match("*", tag)
    assert not if_none_match(None, tag)
    assert not if_none_match('"nope"', tag)


def test_wilson_interval_and_ab_results() -> None:
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 10) or (1.0, 0.0)
    assert low == 0.0 and 0.0 < high < 0.35  # never below 0 (unlike the Wald interval)
    res = ab_results(
        "e1",
        {"a:impressions": "10", "a:clicks": "2", "b:clicks": "1", "b:impressions": "x",
         "junk": "3", "c:impressions": "-1"},
    )
    assert res["ignored_fields"] == ["b:impressions", "c:impressions", "junk"]
    arms = {a["arm"]: a for a in res["arms"]}
    assert arms["a"]["ctr"] == pytest.approx(0.2)
    assert arms["b"]["impressions"] == 0 and arms["b"]["ctr"] is None
    assert arms["b"]["ctr_ci95"] is None


def test_keys_file_stores_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, token = create_key(path, "frontend", ["feeds:read"], 5.0, 10)
    assert token.startswith(f"fpk_{key.key_id}_")
    raw = path.read_text()
    assert token not in raw and hash_token(token) in raw
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (loaded,) = load_keys(path)
    assert (loaded.scopes, loaded.rate_per_s, loaded.burst) == (("feeds:read",), 5.0, 10)
    assert loaded.allows("feeds:read") and not loaded.allows("profiles:read")
    store = KeyStore(path)
    assert store.lookup(token) == loaded
    assert store.lookup(token + "x") is None
    assert revoke_key(path, key.key_id) and not revoke_key(path, key.key_id)
    os.utime(path, (1, 1))  # make sure the mtime moves on coarse filesystems
    assert store.reload_if_changed()
    assert store.lookup(token) is None


def test_keys_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(KeyFileError):
        create_key(path, "x", ["feeds:write"])
    with pytest.raises(KeyFileError):
        create_key(path, "x", [])
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match="malformed"):
        load_keys(path)
    path.write_bytes(orjson.dumps({"keys": [{"key_id": "k", "sha256": "ab", "scopes": []}]}))
    with pytest.raises(KeyFileError, match="sha256"):
        load_keys(path)
    assert load_keys(tmp_path / "missing.json") == []


def test_admin_implies_every_scope_and_dev_key_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    token = ensure_dev_key(tmp_path, path)
    assert ensure_dev_key(tmp_path, path) == token
    (key,) = load_keys(path)
    assert all(key.allows(s) for s in ("feeds:read", "profiles:read", "admin"))
    revoke_key(path, key.key_id)
    assert ensure_dev_key(tmp_path, path) != token  # hash gone: a new key


def test_classify_paths() -> None:
    assert classify("/v1/feeds/u1") == ("/v1/feeds/{user_id}", "feeds:read")
    assert classify("/v1/profiles/u1") == ("/v1/profiles/{user_id}", "profiles:read")
    assert classify("/v1/experiments") == ("/v1/experiments", "admin")
    assert classify("/v1/experiments/e") == ("/v1/experiments/{experiment}", "admin")
    assert classify("/ops") == ("/ops", "admin")
    assert classify("/ops/page", ("/ops/page",)) == ("/ops/page", None)
    assert classify("/healthz") == ("/healthz", None)
    assert classify("/nowhere") == ("other", None)


def test_page_cache_validity_and_byte_budget() -> None:
    cache = PageCache(max_bytes=100)
    cache.keep(("u", 1), b"feed-1", b"7", b"x" * 20, '"e"')
    assert cache.currsize == 26
    assert cache.page(("u", 1), b"feed-1", b"7") == (b"x" * 20, '"e"')
    assert cache.page(("u", 1), b"feed-2", b"7") is None  # the feed changed
    assert cache.page(("u", 1), b"feed-1", b"8") is None  # the catalogue changed
    for i in range(5):
        cache.keep(("v", i), b"f" * 10, None, b"y" * 20, '"z"')
    assert cache.currsize <= 100 and len(cache) == 3
    assert cache.page(("u", 1), b"feed-1", b"7") is None  # least recently used, evicted
    assert cache.page(("v", 4), b"f" * 10, None) == (b"y" * 20, '"z"')
    cache.keep(("v", 4), b"f" * 10, None, b"w" * 200, '"big"')  # over the whole budget
    assert cache.page(("v", 4), b"f" * 10, None) is None and cache.currsize == 60
    assert cache.ttl == SUMMARY_TTL_S


def test_page_cache_entries_expire_after_the_summaries_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import readapi.store as store_mod

    now = [1000.0]
    monkeypatch.setattr(store_mod.time, "monotonic", lambda: now[0])
    cache = PageCache(max_bytes=100)
    cache.keep(("u", 1), b"feed-1", b"7", b"x" * 20, '"e"')
    now[0] += SUMMARY_TTL_S - 1
    assert cache.page(("u", 1), b"feed-1", b"7") == (b"x" * 20, '"e"')
    now[0] += 2
    assert cache.page(("u", 1), b"feed-1", b"7") is None


def test_stored_format_decoding_never_raises() -> None:
    assert parse_feed(None) == {} and parse_feed(b"{oops") == {} and parse_feed(b"[1]") == {}
    assert parse_feed(b'{"items": []}') == {"items": []}
    assert content_summary(None, "c") is None and content_summary(b"nope", "c") is None
    s = content_summary(orjson.dumps({"title": "T", "published_at": 0}), "c1")
    assert s is not None
    assert (s["content_id"], s["title"]) == ("c1", "T")
    assert s["published_at"] == "1970-01-01T00:00:00.000Z"


def test_openapi_document_covers_every_route() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/v1/feeds/{user_id}", "/v1/content/{content_id}", "/v1/profiles/{user_id}",
        "/v1/trending", "/v1/experiments", "/v1/experiments/{experiment}", "/healthz",
        "/readyz", "/metrics", "/openapi.json",
    }
    profile = doc["paths"]["/v1/profiles/{user_id}"]["get"]
    assert "profiles:read" in profile["description"]
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def test_each_of_n_api_workers_enforces_its_share_of_a_keys_rate(tmp_path: Path) -> None:
    from feedpipe.apikeys import ApiKey, KeyAuthority, KeyStore

    store = KeyStore(tmp_path / "none.json")
    key = ApiKey("k_00000000", "t", "0" * 64, ("feeds:read",), rate_per_s=100.0, burst=9)
    one = KeyAuthority(store).bucket(key)
    three = KeyAuthority(store, workers=3).bucket(key)
    assert (one.rate_per_s, one.burst) == (100.0, 9.0)
    assert (three.rate_per_s, three.burst) == (100.0 / 3, 3.0)
    tiny = ApiKey("k_00000001", "t", "0" * 64, ("feeds:read",), rate_per_s=1.0, burst=1)
    assert KeyAuthority(store, workers=4).bucket(tiny).burst == 1.0
