"""The read endpoint's celebrity merge scores content similarity against a real Redis: the user's
interest vector comes from their stored profile (decoded by feedpipe.store.profiles), the
celebrity items' text vectors from their stored meta, and the served ``similarity`` equals the
evaluation's per-user function (feedpipe.model.text.similarity), computed here independently
of the read endpoint's code path.

Records are synthetic (invented ids and text) with a per-run tag; the keys are deleted
afterwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from starlette.testclient import TestClient

from feedpipe.apikeys import create_key
from feedpipe.model import interest
from feedpipe.model.item import Meta
from feedpipe.model.profile import new_profile
from feedpipe.model.text import encode, similarity
from feedpipe.rank.fanout import digest
from feedpipe.rank.weights import WeightsRegistry
from feedpipe.settings import ROOT
from feedpipe.store.client import sync_client
from feedpipe.store.keys import keys
from feedpipe.store.profiles import encode_profile
from feedpipe.topology import topology
from readapi.app import create_app

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
TEXTS = {
    "foot": ("Football club wins the championship final",
             "The striker scored twice as the football club beat its rivals in the final."),
    "vote": ("Parliament election results announced",
             "Voters elected a new parliament; the turnout was the highest in decades."),
}


def _content(cid: str, title: str, summary: str) -> dict[str, Any]:
    return {"content_id": cid, "brand": "mind", "title": title, "summary": summary,
            "url": f"https://example.test/{cid}", "categories": ["news"], "status": "published",
            "published_at": NOW_MS - 3_600_000, "language": "en"}


@pytest.fixture()
def world(redis_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:10]
    k = keys()
    r = sync_client(redis_url)  # a Redis Cluster too (FEEDPIPE_TEST_REDIS_CLUSTER=1)
    user = f"ucel-{tag}"
    ids = {name: f"{tag}-{name}" for name in TEXTS}
    metas = {name: Meta(cid, "mind", ("news",), ("news",), NOW_MS - 3_600_000,
                        tuple(encode(list(TEXTS[name]), "en").items()))
             for name, cid in ids.items()}
    p = new_profile(user, NOW_MS, topology().profiles)
    p.update(category_affinity={"news": 1.0}, topic_affinity={"news": 1.0}, brands={"mind": 1},
             last_seen=NOW_MS)
    interest.add_read(p, encode(["The football club won the final"], "en"), NOW_MS)
    dg = digest(p, topology().ranking, topology().fanout, set(ids.values()))
    feed = {"user_id": user, "profile_version": 1, "generated_at": NOW_MS,
            "ranker": "learned", "items": [], "digest": dg}
    written = [k.profile(user), k.feed(user)]
    r.set(k.profile(user), encode_profile(p, "json"))
    r.set(k.feed(user), orjson.dumps(feed))
    for name, cid in ids.items():
        r.set(k.meta(cid), orjson.dumps(metas[name].to_json()))
        r.set(k.content(cid), orjson.dumps(_content(cid, *TEXTS[name])))
        r.zadd(k.celebrity("mind"), {cid: float(NOW_MS)})
        written += [k.meta(cid), k.content(cid)]
    r.incr(k.celebrity_version())
    # the brand served by the learned ranker (its fitted weight set, similarity included)
    topo_file = tmp_path / "topology.yaml"
    text = (ROOT / "topology.yaml").read_text()
    assert "    mind: affinity-seed-mind" in text
    topo_file.write_text(text.replace("    mind: affinity-seed-mind", "    mind: learned-mind", 1))
    keys_path = tmp_path / "api-keys.json"
    token = create_key(keys_path, "frontend", ["feeds:read"], 10_000, 10_000)[1]
    yield {"user": user, "ids": ids, "metas": metas, "profile": p, "r": r,
           "weights": WeightsRegistry(path=topo_file), "keys_path": keys_path, "token": token,
           "redis_url": redis_url}
    for cid in ids.values():
        r.zrem(k.celebrity("mind"), cid)
    r.incr(k.celebrity_version())
    for key in written:  # one by one: the keys live in several cluster slots
        r.delete(key)


def test_the_merged_celebrity_items_carry_the_users_content_similarity(
    world: dict[str, Any],
) -> None:
    app = create_app(world["redis_url"], default_brand="mind", keys_path=world["keys_path"])
    with TestClient(app, headers={"X-API-Key": world["token"]}) as client:
        cast(Any, app).state.weights = world["weights"]
        ids = world["ids"]

        def served() -> dict[str, Any]:
            got = client.get(f"/v1/feeds/{world['user']}",
                             params={"limit": 100, "explain": "true"})
            assert got.status_code == 200, got.text
            return {it["content_id"]: it["explain"] for it in got.json()["items"]}

        deadline = time.monotonic() + 30
        items = served()
        while not set(ids.values()) <= items.keys() and time.monotonic() < deadline:
            time.sleep(0.3)  # the endpoint's celebrity cache refreshes about every second
            items = served()
    assert set(ids.values()) <= items.keys(), items
    vec = interest.interest_of(world["profile"])
    for cid in ids.values():
        ex = items[cid]
        assert ex["source"] == "celebrity" and ex["ranker"] == "learned"
        stored = Meta.from_json(orjson.loads(world["r"].get(keys().meta(cid))))  # 4 decimals
        (want,) = similarity(vec, [dict(stored.text)])
        assert ex["similarity"] == pytest.approx(want, abs=1e-6)
    assert items[ids["foot"]]["similarity"] > 0.2  # read football: similar to the final
    assert items[ids["vote"]]["similarity"] == 0.0


def test_a_page_cache_miss_reuses_the_interest_of_the_same_profile_version(
    world: dict[str, Any],
) -> None:
    """The merge reads the profile once per profile version (readapi/interests.py): a page-cache
    miss with the same stored profile version reuses the vector read before, even when the
    profile key changed meanwhile; a feed of a new profile version reads the profile again."""
    r, k, user, ids = world["r"], keys(), world["user"], world["ids"]
    app = create_app(world["redis_url"], default_brand="mind", keys_path=world["keys_path"])
    with TestClient(app, headers={"X-API-Key": world["token"]}) as client:
        cast(Any, app).state.weights = world["weights"]

        def served(limit: int) -> dict[str, Any]:
            got = client.get(f"/v1/feeds/{user}", params={"limit": limit, "explain": "true"})
            assert got.status_code == 200, got.text
            return {it["content_id"]: it["explain"] for it in got.json()["items"]}

        deadline = time.monotonic() + 30
        items = served(100)
        while not set(ids.values()) <= items.keys() and time.monotonic() < deadline:
            time.sleep(0.3)
            items = served(100)
        assert set(ids.values()) <= items.keys(), items
        assert items[ids["foot"]]["similarity"] > 0.2 and items[ids["vote"]]["similarity"] == 0
        # the reader now reads about the election: a new profile, the feed still of version 1
        p = dict(world["profile"])
        p.pop(interest.FIELD)
        interest.add_read(p, encode(["Parliament election results"], "en"), NOW_MS)
        r.set(k.profile(user), encode_profile(p, "json"))
        again = served(99)  # another page key: a page-cache miss, same profile version
        assert again[ids["foot"]]["similarity"] == items[ids["foot"]]["similarity"]
        assert again[ids["vote"]]["similarity"] == 0.0
        feed = orjson.loads(r.get(k.feed(user)))
        r.set(k.feed(user), orjson.dumps({**feed, "profile_version": 2}))
        newer = served(100)  # the feed of profile version 2: the profile is read again
    assert newer[ids["vote"]]["similarity"] > 0.2
    assert newer[ids["foot"]]["similarity"] == 0.0


def test_celebrity_sets_of_every_brand_are_read_in_one_round_trip(
    world: dict[str, Any],
) -> None:
    """Store.refresh_celebrities reads every brand's celebrity set in one call (a pipeline),
    single Redis and Redis Cluster: the same number of Redis calls for one brand as for four,
    and every brand's items in the cache."""
    import asyncio

    from feedpipe.rank.fanout import CelebrityCache
    from feedpipe.store.client import async_client
    from readapi.guards import CircuitBreaker
    from readapi.store import Store

    r, k, ids, metas = world["r"], keys(), world["ids"], world["metas"]
    extra = {f"tidy-{uuid.uuid4().hex[:8]}-{n}": f"{ids['foot']}-b{n}" for n in range(3)}

    def refresh() -> tuple[int, set[str]]:
        async def run() -> tuple[int, set[str]]:
            client = async_client(world["redis_url"])
            store = Store(client, CircuitBreaker(5, 5.0))
            calls = 0
            inner = store.call

            async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                return await inner(fn, *args, **kwargs)

            store.call = counted  # type: ignore[method-assign]
            cache = CelebrityCache()
            try:
                await store.refresh_celebrities(cache)
            finally:
                await client.aclose()
            return calls, {m.content_id for m in cache.metas}

        return asyncio.run(run())

    calls_one, got = refresh()
    assert set(ids.values()) <= got
    meta = metas["foot"].to_json()
    try:
        for brand, cid in extra.items():
            r.set(k.meta(cid), orjson.dumps({**meta, "content_id": cid}))
            r.zadd(k.celebrity(brand), {cid: float(NOW_MS)})
        r.incr(k.celebrity_version())
        calls_four, got = refresh()
    finally:
        for brand, cid in extra.items():
            r.delete(k.celebrity(brand))
            r.delete(k.meta(cid))
        r.incr(k.celebrity_version())
    assert set(ids.values()) | set(extra.values()) <= got
    assert calls_four == calls_one
