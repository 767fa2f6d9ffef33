"""Read endpoint access control, rate limits, request ids, CDN caching headers, cursors, CORS and
metrics, against a real Redis (the synthetic world of test_readapi.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from readapi_support import Tokens, World
from starlette.testclient import TestClient

from feedpipe.apikeys import create_key, revoke_key
from readapi.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(redis_url: str, world: World, tokens: Tokens) -> Iterator[Any]:
    application = create_app(
        redis_url,
        default_brand=world.brand_a,
        keys_path=tokens.path,
        cors_origins=["https://reader.example"],
    )
    with TestClient(application) as c:
        c.app_under_test = application  # type: ignore[attr-defined]
        yield c


def _get(c: TestClient, path: str, token: str | None, **kw: Any) -> Any:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["X-API-Key"] = token
    return c.get(path, headers=headers, **kw)


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["content_id"] for item in body["items"]]


def test_keys_and_scopes(app: TestClient, world: World, tokens: Tokens) -> None:
    feed = f"/v1/feeds/{world.user}"
    profile = f"/v1/profiles/{world.user}"

    missing = _get(app, feed, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "missing API key" in missing.json()["error"]
    assert _get(app, feed, "fpk_k_00000000_notarealtoken").status_code == 401

    assert _get(app, feed, tokens.feeds).status_code == 200
    bearer = app.get(feed, headers={"Authorization": f"Bearer {tokens.feeds}"})
    assert bearer.status_code == 200
    # Profiles are personal data: feeds:read is not enough.
    denied = _get(app, profile, tokens.feeds)
    assert denied.status_code == 403
    assert "profiles:read" in denied.json()["error"]
    assert _get(app, profile, tokens.profiles).status_code == 200
    assert _get(app, feed, tokens.profiles).status_code == 403
    assert _get(app, f"/v1/experiments/{world.experiment}", tokens.feeds).status_code == 403
    # admin implies every scope.
    for path in (feed, profile, f"/v1/experiments/{world.experiment}", "/v1/trending"):
        assert _get(app, path, tokens.admin).status_code == 200, path
    # Open paths need no key.
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics"):
        assert _get(app, path, None).status_code == 200, path


def test_new_and_revoked_keys_apply_without_restart(
    app: TestClient,
    world: World,
    tokens: Tokens,
) -> None:
    _, fresh = create_key(tokens.path, "late", ["feeds:read"])
    feed = f"/v1/feeds/{world.user}"
    deadline = time.monotonic() + 15
    while _get(app, feed, fresh).status_code != 200:
        assert time.monotonic() < deadline, "new key never accepted"
        time.sleep(0.2)
    key_id = fresh.split("_")[1] + "_" + fresh.split("_")[2]
    assert revoke_key(tokens.path, key_id)
    deadline = time.monotonic() + 15
    while _get(app, feed, fresh).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.2)


def test_rate_limit_gives_429_with_retry_after(
    app: TestClient,
    world: World,
    tokens: Tokens,
) -> None:
    feed = f"/v1/feeds/{world.user}"
    statuses = [_get(app, feed, tokens.slow).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # burst 2, refill 0.01/s
    limited = _get(app, feed, tokens.slow)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 50  # ~1/0.01 s until the next token
    assert limited.headers["cache-control"] == "no-store"
    # Another key is not affected.
    assert _get(app, feed, tokens.feeds).status_code == 200


def test_request_ids(app: TestClient, world: World, tokens: Tokens) -> None:
    given = _get(app, "/v1/trending", tokens.feeds, headers={"X-Request-ID": "edge-42.a_b"})
    assert given.headers["x-request-id"] == "edge-42.a_b"
    bad = _get(app, "/v1/trending", tokens.feeds, headers={"X-Request-ID": "no spaces!"})
    assert bad.headers["x-request-id"] != "no spaces!"
    assert len(bad.headers["x-request-id"]) == 32
    denied = _get(app, "/v1/trending", None, headers={"X-Request-ID": "rid-401"})
    assert denied.headers["x-request-id"] == "rid-401"
    assert denied.json()["request_id"] == "rid-401"


def test_etag_304_and_cache_control(
    app: TestClient,
    world: World,
    tokens: Tokens,
) -> None:
    feed = f"/v1/feeds/{world.user}"
    first = _get(app, feed, tokens.feeds)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    cc = first.headers["cache-control"]
    assert cc.startswith("public, max-age=") and "s-maxage=" in cc and "stale-if-error=" in cc
    assert "X-API-Key" in first.headers["vary"]
    assert first.headers["x-feed-source"] == "personalised"

    again = _get(app, feed, tokens.feeds, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    weak = _get(app, feed, tokens.feeds, headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    other = _get(app, feed, tokens.feeds, headers={"If-None-Match": '"stale"'})
    assert (other.status_code, other.headers["etag"]) == (200, etag)
    # A different page is a different representation.
    assert _get(app, feed + "?limit=1", tokens.feeds).headers["etag"] != etag

    profile = _get(app, f"/v1/profiles/{world.user}", tokens.admin)
    assert profile.headers["cache-control"] == "private, no-cache"
    fallback = _get(app, f"/v1/feeds/nobody-{world.tag}", tokens.feeds)
    assert fallback.headers["x-feed-source"] == "trending"
    assert "max-age=2" in fallback.headers["cache-control"]


def test_cursor_pagination(app: TestClient, world: World, tokens: Tokens) -> None:
    c = world.c
    seen: list[str] = []
    ranks: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = _get(app, f"/v1/feeds/{world.user}", tokens.feeds, params=params).json()
        assert body["source"] == "personalised"
        seen += _ids(body)
        ranks += [it["rank"] for it in body["items"]]
        cursor = body["next_cursor"]
        pages += 1
        if cursor is None:
            break
        assert pages < 10
    assert seen == [c[1], c[2], c[3], c[4], c[5]]  # c6 vanished, skipped
    assert ranks == [1, 2, 3, 4, 5]

    # A fallback level pages too, and its cursor stays on that level.
    body = _get(app, f"/v1/feeds/nobody-{world.tag}", tokens.feeds, params={"limit": 2}).json()
    assert (body["source"], _ids(body)) == ("trending", [c[5], c[3]])
    nxt = _get(
        app,
        f"/v1/feeds/nobody-{world.tag}",
        tokens.feeds,
        params={"limit": 2, "cursor": body["next_cursor"]},
    ).json()
    assert (nxt["source"], _ids(nxt), [it["rank"] for it in nxt["items"]]) == (
        "trending",
        [c[1]],
        [3],
    )
    assert nxt["next_cursor"] is None


def test_cors(app: TestClient, world: World, tokens: Tokens) -> None:
    pre = app.options(
        f"/v1/feeds/{world.user}",
        headers={
            "Origin": "https://reader.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-API-Key",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://reader.example"
    assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
    got = _get(
        app, f"/v1/feeds/{world.user}", tokens.feeds, headers={"Origin": "https://reader.example"}
    )
    assert got.headers["access-control-allow-origin"] == "https://reader.example"
    assert "etag" in got.headers["access-control-expose-headers"].lower()
    other = _get(app, f"/v1/feeds/{world.user}", tokens.feeds, headers={"Origin": "https://x.test"})
    assert "access-control-allow-origin" not in other.headers


def test_metrics(app: TestClient, world: World, tokens: Tokens) -> None:
    _get(app, f"/v1/feeds/{world.user}", tokens.feeds)
    _get(app, f"/v1/feeds/nobody-{world.tag}", tokens.feeds)
    text = app.get("/metrics").text
    assert (
        'feedpipe_api_request_duration_seconds_bucket{le="0.005",method="GET",'
        'route="/v1/feeds/{user_id}",status="200"}' in text
    )
    assert 'feedpipe_api_feed_fallbacks_total{reason="no_feed",source="trending"}' in text
    assert "feedpipe_api_redis_errors_total" in text
    assert "feedpipe_api_redis_circuit_state 0.0" in text
