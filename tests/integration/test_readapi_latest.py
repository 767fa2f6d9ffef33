"""The latest level of the fallback ladder against a real Redis: undated items (catalogue score
= ingestion time, newer than every dated item here) come after every dated item, ordered by
ingestion time, across pages of every size."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from readapi_support import HOUR_MS, NOW_MS, Tokens, World, content_doc
from starlette.testclient import TestClient

from feedpipe.store.keys import keys
from readapi.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def catalogue(redis_url: str) -> Iterator[tuple[str, list[str]]]:
    """A brand with 5 dated items and 4 undated ones; returns (brand, ids in expected order)."""
    tag = uuid.uuid4().hex[:10]
    brand = f"latest{tag}"
    k = keys()
    r = redis.Redis.from_url(redis_url)
    dated = [f"{tag}-d{n}" for n in range(5)]  # d0 newest
    undated = [f"{tag}-u{n}" for n in range(4)]  # u0 ingested last
    scores: dict[str, float] = {}
    written = [k.catalogue(brand)]
    for n, cid in enumerate(dated):
        doc: dict[str, Any] = content_doc(cid, brand, n + 1)
        r.set(k.content(cid), orjson.dumps(doc))
        scores[cid] = doc["published_at"]
        written.append(k.content(cid))
    for n, cid in enumerate(undated):
        doc = {**content_doc(cid, brand, 10 + n), "published_at": None,
               "enriched_at": NOW_MS + (10 - n) * HOUR_MS}
        r.set(k.content(cid), orjson.dumps(doc))
        scores[cid] = doc["enriched_at"]
        written.append(k.content(cid))
    # one dated item ingested late but published long ago: still among the dated, by date
    old = f"{tag}-old"
    r.set(k.content(old), orjson.dumps(content_doc(old, brand, 100)))
    scores[old] = NOW_MS - 100 * HOUR_MS
    written.append(k.content(old))
    r.zadd(k.catalogue(brand), scores)
    r.incr(k.catalogue_version())
    yield brand, [*dated, old, *undated]
    r.delete(*written)


@pytest.fixture(scope="module")
def latest_client(redis_url: str, world: World, tokens: Tokens) -> Iterator[TestClient]:
    app = create_app(redis_url, default_brand=world.brand_a, keys_path=tokens.path)
    with TestClient(app, headers={"X-API-Key": tokens.admin}) as c:
        yield c


@pytest.mark.parametrize("limit", [1, 2, 3, 6, 20])
def test_undated_items_after_dated_ones_across_pages(
    latest_client: TestClient, catalogue: tuple[str, list[str]], limit: int
) -> None:
    brand, expected = catalogue
    got: list[str] = []
    ranks: list[int] = []
    params: dict[str, Any] = {"brand": brand, "limit": limit}
    for _ in range(20):
        body = latest_client.get(f"/v1/feeds/nobody-{brand}", params=params).json()
        assert body["source"] == "latest"
        got += [it["content_id"] for it in body["items"]]
        ranks += [it["rank"] for it in body["items"]]
        if not body.get("next_cursor"):
            break
        params = {"brand": brand, "limit": limit, "cursor": body["next_cursor"]}
    assert got == expected
    assert ranks == list(range(1, len(expected) + 1))
