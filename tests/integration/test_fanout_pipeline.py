"""Fan-out on write and the celebrity switch on real Kafka, real Redis and a real worker plus
read endpoint (feedpipe/rank/fanout.py, docs/ranking.md "Fan-out on write and the celebrity
switch").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from confluent_kafka import Producer
from pipeline import (
    api_headers,
    drain,
    kafka_consumer,
    run_store,
    running_pipeline,
    wait_feeds_converged,
)

from feedpipe.ids import content_id, event_id
from feedpipe.model.item import Meta
from feedpipe.rank.fanout import audience_keys, parse_audience
from feedpipe.store import audience as audience_store
from feedpipe.store.feeds import FeedFormatError, decode_feed
from feedpipe.store.keys import keys
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration

USER = "UFANOUT1"
WAIT_S = 90.0  # a bound on waiting, never an assertion on speed


def register(r: redis.Redis, brand: str, facet: str, members: dict[str, float]) -> None:
    """ZADD ``members`` (user -> ms) to the audience sets of ``brand``/``facet``, each user in
    its partition's set, as the click path registers them."""
    k = keys()
    for u, at in members.items():
        r.zadd(k.audience(brand, facet, k.partition_of(u)), {u: at})


def wait_until(pred: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def news(nid: str, category: str, sub: str, title: str, delete: bool = False) -> bytes:
    """A RawCmsEvent carrying one MIND news.tsv row (or its delete)."""
    row = "\t".join(
        [nid, category, sub, title, f"{title}. The report follows the week's events.", "", "[]",
         "[]"]
    ).encode()
    return codec("RawCmsEvent").encode(
        {
            "event_id": event_id("fanout-test", nid, "delete" if delete else "upsert"),
            "kind": "mind.news",
            "op": "delete" if delete else "upsert",
            "source": "mind",
            "brand": "mind",
            "source_id": nid,
            "content_type": "text/tab-separated-values",
            "payload": b"" if delete else row,
            "origin": "test",
            "emitted_at": datetime.now(UTC),
        }
    )


def click(user: str, cid: str) -> bytes:
    at = datetime.now(UTC)
    return codec("ReaderEvent").encode(
        {
            "event_id": event_id(user, "click", cid, at.isoformat()),
            "type": "click",
            "user_id": user,
            "content_id": cid,
            "occurred_at": at,
            "origin": "live",
        }
    )


def test_audience_script_switches_by_size(redis_url: str) -> None:
    """The switch on real Redis: members up to the threshold, only the size above it."""
    r = redis.Redis.from_url(redis_url)
    k = keys()
    r.flushdb()
    meta = Meta(content_id("t", "x"), "mind", ("cat-a",), ("top-b",), None)
    register(r, "mind", "c:cat-a", {"U1": 1, "U2": 1})
    register(r, "mind", "t:top-b", {"U2": 2, "U3": 2})
    lists = audience_keys(meta, k)
    assert len(lists) == len(k.partitions())  # one script call per partition's sets

    def sizes(threshold: int) -> tuple[int, list[str] | None]:
        return parse_audience(run_store(audience_store.sizes, [lists], threshold)[0])

    assert sizes(3) == (3, ["U1", "U2", "U3"])
    assert sizes(2) == (3, None)
    assert sizes(1)[1] is None
    assert not any(r.exists(ks[0]) for ks in lists)  # the scratch union never stays


def test_backfilled_items_are_not_fanned_out(redis_url: str) -> None:
    """materialise() on real Redis: of two new items with the same audience, the one published
    now is fanned out, the one published 10 days ago (a backfill, > fanout.max_age_hours) is
    only materialised; both are in the catalogue and neither is a celebrity."""
    import asyncio

    from streams import runtime
    from streams.stages.enrich import materialise

    r = redis.Redis.from_url(redis_url)
    k = keys()
    r.flushdb()
    register(r, "mind", "c:backfillcat", {"UB1": 1, "UB2": 1})
    now_ms = int(time.time() * 1000)

    def doc(nid: str, published_ms: int) -> dict[str, Any]:
        return {
            "content_id": content_id("mind", nid), "brand": "mind", "status": "published",
            "categories": ["backfillcat"], "topics": [], "published_at": published_ms,
            "updated_at": published_ms, "enriched_at": now_ms, "content_hash": "h-" + nid,
        }

    new, old = doc("NBFNEW", now_ms - 60_000), doc("NBFOLD", now_ms - 10 * 86_400_000)
    fanout: dict[str, tuple[list[str], str]] = {}
    runtime.redis_client.cache_clear()
    try:
        published = asyncio.run(materialise([new, old], fanout))
    finally:
        runtime.redis_client.cache_clear()
    assert sorted(published) == sorted([new["content_id"], old["content_id"]])
    assert fanout == {new["content_id"]: (["UB1", "UB2"], "h-NBFNEW")}
    assert r.zscore(k.catalogue("mind"), old["content_id"]) is not None
    assert not r.zcard(k.celebrity("mind"))


def test_update_in_place_reclassifies_the_celebrity_status(redis_url: str) -> None:
    """materialise() on real Redis: an item updated in place is classified again by audience
    size (its categories moved to a huge audience: it becomes a celebrity; back: it leaves the
    celebrity set), without a second fan-out; each move bumps fp:celebrity:version."""
    import asyncio

    from streams import runtime
    from streams.stages.enrich import materialise

    r = redis.Redis.from_url(redis_url)
    k = keys()
    r.flushdb()
    register(r, "mind", "c:smallcat", {"US1": 1})
    register(r, "mind", "c:hugecat", {f"UH{i:05d}": 1 for i in range(10_001)})
    now_ms = int(time.time() * 1000)

    def doc(category: str, version: int) -> dict[str, Any]:
        return {
            "content_id": content_id("mind", "NRECLASS"), "brand": "mind", "status": "published",
            "categories": [category], "topics": [], "published_at": now_ms,
            "updated_at": now_ms + version, "enriched_at": now_ms, "content_hash": f"h{version}",
        }

    def run(d: dict[str, Any]) -> dict[str, tuple[list[str], str]]:
        fanout: dict[str, tuple[list[str], str]] = {}
        runtime.redis_client.cache_clear()
        try:
            asyncio.run(materialise([d], fanout))
        finally:
            runtime.redis_client.cache_clear()
        return fanout

    cid = content_id("mind", "NRECLASS")
    assert run(doc("smallcat", 1)) == {cid: (["US1"], "h1")}  # new: fanned out
    assert r.zscore(k.celebrity("mind"), cid) is None
    v0 = int(r.get(k.celebrity_version()) or 0)
    assert run(doc("hugecat", 2)) == {}  # updated into a huge audience: celebrity, no push
    assert r.zscore(k.celebrity("mind"), cid) is not None
    v1 = int(r.get(k.celebrity_version()) or 0)
    assert v1 > v0
    assert run(doc("smallcat", 3)) == {}  # back to a small audience: not pushed again
    assert r.zscore(k.celebrity("mind"), cid) is None
    assert int(r.get(k.celebrity_version()) or 0) > v1
    assert r.zscore(k.catalogue("mind"), cid) is not None


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    with running_pipeline(kafka_bootstrap, redis_url, tmp_path_factory.mktemp("fanout")) as s:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
        yield {"s": s, "producer": producer, "redis": redis.Redis.from_url(redis_url),
               "redis_url": redis_url, "base": f"http://{s.api_host}:{s.api_port}",
               "headers": api_headers(s)}


def _send(producer: Producer, topic: str, key: str, value: bytes) -> None:
    producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(10) == 0


def stored_feed(r: redis.Redis, key: str | bytes) -> dict[str, Any]:
    """A stored feed decoded as the worker wrote it ({} when missing); an interned feed's
    item ordinals are resolved first (feedpipe/store/interning.py) when the module exists."""
    raw = r.get(key)
    if raw is None:
        return {}
    try:
        return decode_feed(raw)
    except FeedFormatError:
        from feedpipe.store import feeds as feedstore
        from feedpipe.store import interning  # the memory work's item table

        interning.ITEMS.sync(r.get(keys().item_gen()))
        interning.resolve_sync(r, feedstore.feed_ordinals(raw))
        return decode_feed(raw)


def _stored_ids(r: redis.Redis, user: str) -> list[str]:
    return [it["content_id"] for it in stored_feed(r, keys().feed(user)).get("items", [])]


def test_fanout_then_celebrity_merge_then_unpublish(stack: dict[str, Any]) -> None:
    s, producer, r = stack["s"], stack["producer"], stack["redis"]
    k = keys()
    a, b, c = (content_id("mind", n) for n in ("NFANA", "NFANB", "NFANC"))
    # a first item, then the user's click on it registers their interests
    _send(producer, "cms.raw", "mind:NFANA", news("NFANA", "fanoutsport", "fanoutleague",
                                                    "Home team wins the league final"))
    wait_until(lambda: r.exists(k.meta(a)), "item A materialised")
    _send(producer, "reader.events", USER, click(USER, a))
    wait_until(
        lambda: r.zscore(k.audience("mind", "c:fanoutsport", k.partition_of(USER)), USER),
        "audience registered",
    )
    drain(s.kafka_bootstrap, s.app_id)
    wait_feeds_converged(stack["redis_url"])
    assert b not in _stored_ids(r, USER)

    # 1. small audience: B reaches the user's stored feed with no further event of the user
    _send(producer, "cms.raw", "mind:NFANB", news("NFANB", "fanoutsport", "fanoutleague",
                                                    "Coach signs a new contract with the club"))
    wait_until(lambda: b in _stored_ids(r, USER), "B fanned out into the stored feed")
    consumer = kafka_consumer(s.kafka_bootstrap)
    consumer.subscribe(["reader.events"])
    dec = codec("ReaderEvent").decode
    fanned: list[dict[str, Any]] = []

    def seen_fanout() -> bool:
        for msg in consumer.consume(500, timeout=1.0):
            if msg.error() is None and msg.value():
                ev = dec(msg.value())
                if ev["type"] == "fanout":
                    fanned.append(ev)
        return any(ev["content_id"] == b for ev in fanned)

    try:
        wait_until(seen_fanout, "the fanout record of B")
    finally:
        consumer.close()
    assert [(ev["user_id"], ev["content_id"]) for ev in fanned] == [(USER, b)]

    # 2. audience over the threshold: a celebrity, in no stored feed, merged when served
    wide = {f"USYN{i:05d}": time.time() * 1000 for i in range(10_001)}
    register(r, "mind", "c:fanoutceleb", wide)
    _send(producer, "cms.raw", "mind:NFANC", news("NFANC", "fanoutceleb", "fanoutglobal",
                                                    "Global summit agrees on a new climate plan"))
    wait_until(lambda: r.zscore(k.celebrity("mind"), c) is not None, "C classified celebrity")
    version = int(stored_feed(r, k.feed(USER))["profile_version"])
    _send(producer, "reader.events", USER, click(USER, b))  # the user is re-ranked after C
    wait_until(lambda: stored_feed(r, k.feed(USER))["profile_version"] > version,
               "the user's feed re-ranked")
    for key in r.scan_iter(match=k.feed("*"), count=1000):
        assert c not in {it["content_id"] for it in stored_feed(r, key)["items"]}, key
    with httpx.Client(base_url=stack["base"], headers=stack["headers"], timeout=10) as client:

        def served() -> dict[str, Any]:
            got = client.get(f"/v1/feeds/{USER}", params={"limit": 100, "explain": "true"})
            assert got.status_code == 200, got.text
            return {it["content_id"]: it for it in got.json()["items"]}

        item = wait_until(lambda: served().get(c), "C merged into the served feed")
        assert item["explain"]["source"] == "celebrity"
        assert item["explain"]["weight_set"] and item["explain"]["score"] > 0
        # 3. unpublishing the celebrity takes it out of the served feed
        _send(producer, "cms.raw", "mind:NFANC", news("NFANC", "fanoutceleb", "fanoutglobal",
                                                        "", delete=True))
        wait_until(lambda: c not in served(), "C left the served feed")
        assert r.zscore(k.celebrity("mind"), c) is None

