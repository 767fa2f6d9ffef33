"""The read endpoint (readapi) against a real Redis, driven through Starlette's TestClient.

Records are synthetic (invented ids and text), written with ``feedpipe.store.keys.keys()`` in the
shapes the pipeline writes; every id carries a per-run tag so runs sharing a Redis never collide,
and the keys are deleted afterwards. The ``world`` and ``tokens`` fixtures come from
tests/integration/conftest.py (records in tests/integration/readapi_support.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from readapi_support import EPOCH, Tokens, World
from starlette.testclient import TestClient

from feedpipe.store.feeds import MAGIC
from feedpipe.store.keys import keys
from feedpipe.topology import topology
from readapi.app import create_app

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def client(redis_url: str, world: World, tokens: Tokens) -> Iterator[TestClient]:
    app = create_app(redis_url, default_brand=world.brand_a, keys_path=tokens.path)
    with TestClient(app, headers={"X-API-Key": tokens.admin}) as c:
        yield c


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["content_id"] for item in body["items"]]


def test_personalised_feed_order_hydration_and_vanishedcontent_doc(
    client: TestClient, world: World
) -> None:
    resp = client.get(f"/v1/feeds/{world.user}")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["source"] == "personalised"
    assert body["fallback"] is False
    assert body["user_id"] == world.user
    assert body["ranker"] == "affinity"
    assert body["generated_at"] == "2023-11-14T22:13:20.000Z"
    c = world.c
    assert _ids(body) == [c[1], c[2], c[3], c[4], c[5]]  # c6 vanished: skipped
    assert [item["rank"] for item in body["items"]] == [1, 2, 3, 4, 5]
    first = body["items"][0]
    assert first["title"] == "Invented headline number 1"
    assert first["url"] == "https://example.test/items/1"
    assert first["brand"] == world.brand_a
    assert first["categories"] == ["sport"]
    assert first["published_at"] == "2023-11-14T21:13:20.000Z"
    assert "explain" not in first
    assert "body" not in first


def test_compact_storedfeed_doc(client: TestClient, world: World, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url).get(keys().feed(world.user_compact))
    assert raw is not None and raw.startswith(MAGIC)
    body = client.get(f"/v1/feeds/{world.user_compact}", params={"explain": "true"}).json()
    assert body["source"] == "personalised"
    assert _ids(body) == [world.c[3], world.c[1]]
    assert body["items"][0]["explain"]["score"] == pytest.approx(0.5, abs=1e-5)


def test_feed_limit_brand_filter_and_explain(client: TestClient, world: World) -> None:
    c = world.c
    assert _ids(client.get(f"/v1/feeds/{world.user}?limit=2").json()) == [c[1], c[2]]

    body = client.get(f"/v1/feeds/{world.user}", params={"brand": world.brand_a}).json()
    assert body["source"] == "personalised"
    assert _ids(body) == [c[1], c[3], c[5]]
    assert {item["brand"] for item in body["items"]} == {world.brand_a}

    body = client.get(f"/v1/feeds/{world.user}", params={"explain": "true", "limit": 1}).json()
    # Whatever explanation fields the stored item has are passed through.
    assert body["items"][0]["explain"] == {
        "score": 0.9,
        "affinity": 0.45,
        "recency": 0.5,
        "engagement": 0.25,
        "weights": {"a": 0.6, "b": 0.2, "c": 0.2},
        "ranker": "two_tower",
        "weight_version": "w7",
        "arm": "treatment",
        "feed_rank": 1,
    }

    body = client.get(
        f"/v1/feeds/{world.user}", params={"brand": world.brand_b, "explain": "true", "limit": 1}
    ).json()
    assert _ids(body) == [c[2]]
    assert body["items"][0]["explain"] == {
        "score": 0.8,
        "affinity": 0.4,
        "recency": 0.5,
        "engagement": 0.25,
        "weights": {"a": 0.6, "b": 0.2, "c": 0.2},
        "feed_rank": 2,
    }


def test_fallback_to_trending(client: TestClient, world: World) -> None:
    c = world.c
    # Unknown user, no brand: the default brand's newest epoch, vanished c6 skipped.
    body = client.get(f"/v1/feeds/nobody-{world.tag}").json()
    assert body["source"] == "trending"
    assert body["fallback"] is True
    assert body["reason"] == "no_feed"
    assert body["brand"] == world.brand_a
    assert body["epoch"] == EPOCH
    assert _ids(body) == [c[5], c[3], c[1]]
    assert [item["score"] for item in body["items"]] == [9.0, 7.5, 1.0]

    body = client.get(f"/v1/feeds/{world.user_empty_feed}?limit=1").json()
    assert (body["reason"], _ids(body)) == ("no_feed", [c[5]])

    # Feed exists but nothing of the requested brand is in it.
    body = client.get(f"/v1/feeds/{world.user_b_only}", params={"brand": world.brand_a}).json()
    assert body["source"] == "trending"
    assert body["reason"] == "empty_after_filter"
    assert _ids(body) == [c[5], c[3], c[1]]

    # Every ranked item vanished from Redis.
    body = client.get(f"/v1/feeds/{world.user_vanished}").json()
    assert (body["source"], body["reason"]) == ("trending", "empty_after_filter")

    # No trending: the brand's newest catalogue items ("latest" level).
    resp = client.get(f"/v1/feeds/nobody-{world.tag}", params={"brand": world.brand_b})
    assert resp.status_code == 200
    assert resp.headers["x-feed-source"] == "latest"
    assert resp.headers["x-feed-fallback-reason"] == "no_feed"
    body = resp.json()
    assert (body["source"], body["reason"], body["fallback"]) == ("latest", "no_feed", True)
    assert _ids(body) == [c[4], c[2]]
    assert "score" not in body["items"][0]

    # No trending and no catalogue either: empty list, still 200.
    resp = client.get(f"/v1/feeds/nobody-{world.tag}", params={"brand": world.brand_empty})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["source"], body["reason"], body["brand"], body["epoch"], body["items"]) == (
        "latest",
        "no_feed",
        world.brand_empty,
        None,
        [],
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v1/feeds/a:b",
        "/v1/feeds/*",
        "/v1/feeds/" + "x" * 129,
        "/v1/feeds/ok?limit=0",
        "/v1/feeds/ok?limit=101",
        "/v1/feeds/ok?limit=ten",
        "/v1/feeds/ok?explain=maybe",
        "/v1/feeds/ok?brand=a*b",
        "/v1/content/a:b",
        "/v1/profiles/*",
        "/v1/trending?limit=-1",
        "/v1/feeds/ok?cursor=not-a-cursor",
        "/v1/feeds/ok?cursor=personalised.1.x",
        "/v1/experiments/a:b",
    ],
)
def test_bad_requests_are_400(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 400
    body = resp.json()
    assert isinstance(body["error"], str)
    assert body["request_id"] == resp.headers["x-request-id"]


def testcontent_doc(client: TestClient, world: World) -> None:
    resp = client.get(f"/v1/content/{world.c[3]}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["content_id"] == world.c[3]
    assert body["body"].startswith("Body text of made-up item 3")
    assert body["published_at"] == "2023-11-14T19:13:20.000Z"
    assert body["updated_at"] is None
    assert body["enriched_at"] == "2023-11-14T22:13:20.000Z"

    missing = client.get(f"/v1/content/{world.c[6]}")
    assert (missing.status_code, missing.json()["error"]) == (404, "not found")


def test_profile(client: TestClient, world: World) -> None:
    body = client.get(f"/v1/profiles/{world.user}").json()
    assert body["user_id"] == world.user
    assert (body["impressions"], body["clicks"], body["engagement_rate"]) == (10, 2, 0.2)
    assert body["first_seen"] == "2023-11-11T22:13:20.000Z"
    assert body["last_seen"] == "2023-11-14T22:13:20.000Z"
    assert body["pending_count"] == 1
    assert body["recent_reads"] == [
        {"content_id": world.c[1], "at": "2023-11-14T22:13:20.000Z"},
        {"content_id": world.c[3], "at": "2023-11-14T21:13:20.000Z"},
    ]
    # Decayed to last_seen and normalised: the common decay factor cancels in the shares.
    cats = body["top_categories"]
    assert [x["category"] for x in cats] == ["sport", "food"]  # zero weight dropped
    assert [x["affinity"] for x in cats] == pytest.approx([0.75, 0.25])
    topics = body["top_topics"]
    assert len(topics) == 20
    assert topics[0] == {"topic": "topic-25", "affinity": pytest.approx(25 / 325)}
    assert topics[-1]["topic"] == "topic-06"
    shares = [x["affinity"] for x in topics]
    assert shares == sorted(shares, reverse=True)

    missing = client.get(f"/v1/profiles/nobody-{world.tag}")
    assert (missing.status_code, missing.json()["error"]) == (404, "not found")


def test_trending_endpoint(client: TestClient, world: World) -> None:
    body = client.get("/v1/trending", params={"brand": world.brand_a, "limit": 2}).json()
    assert (body["brand"], body["epoch"]) == (world.brand_a, EPOCH)
    assert _ids(body) == [world.c[5], world.c[3]]
    assert body["items"][0]["score"] == 9.0
    assert body["items"][0]["title"] == "Invented headline number 5"
    assert body["items"][0]["url"] == "https://example.test/items/5"

    assert client.get("/v1/trending").json()["brand"] == world.brand_a  # the app's default
    empty = client.get("/v1/trending", params={"brand": world.brand_empty}).json()
    assert (empty["epoch"], empty["items"]) == (None, [])


def test_health_readiness_and_unknown_route(client: TestClient) -> None:
    resp = client.get("/healthz", headers={"X-API-Key": ""})
    assert (resp.status_code, resp.json()) == (200, {"status": "ok", "circuit": "closed"})
    ready = client.get("/readyz").json()
    assert (ready["status"], ready["redis"], ready["circuit"]) == ("ready", "ok", "closed")
    missing = client.get("/v2/nothing")
    assert (missing.status_code, missing.json()["error"]) == (404, "not found")


def test_ab_results_per_experiment(client: TestClient, world: World) -> None:
    assert world.experiment in client.get("/v1/experiments").json()["experiments"]
    resp = client.get(f"/v1/experiments/{world.experiment}")
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "private, no-cache"
    body = resp.json()
    assert body["experiment"] == world.experiment
    assert body["ignored_fields"] == ["treatment:oops"]
    control, treatment = body["arms"]
    assert (control["arm"], control["impressions"], control["clicks"]) == ("control", 1000, 50)
    assert control["ctr"] == pytest.approx(0.05)
    assert (treatment["arm"], treatment["ctr"]) == ("treatment", pytest.approx(0.075))
    low, high = control["ctr_ci95"]
    assert low < 0.05 < high
    # Wilson interval for 50/1000 (Newcombe, Stat. Med. 1998, method 3): 0.0381 .. 0.0653
    assert (low, high) == (pytest.approx(0.0381, abs=5e-4), pytest.approx(0.0653, abs=5e-4))
    missing = client.get(f"/v1/experiments/nope-{world.tag}")
    assert (missing.status_code, missing.json()["error"]) == (404, "not found")


def test_redis_down_without_snapshot_gives_503(tokens: Tokens) -> None:
    app = create_app("redis://127.0.0.1:1/0", keys_path=tokens.path)  # nothing listens on port 1
    assert app.state.default_brand == topology().ranking.default_brand  # type: ignore[attr-defined]
    with TestClient(app, headers={"X-API-Key": tokens.admin}) as down:
        assert down.get("/healthz").status_code == 200  # liveness does not need Redis
        ready = down.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert (body["status"], body["redis"], body["snapshots"]) == ("unavailable", "error", 0)
        feed = down.get("/v1/feeds/someone")
        assert feed.status_code == 503
        assert feed.json()["error"] == "redis unavailable"
        assert int(feed.headers["retry-after"]) >= 1
        assert feed.headers["cache-control"] == "no-store"
