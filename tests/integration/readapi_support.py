"""The read endpoint's integration-test world (test_readapi*.py): synthetic records in the
shapes the pipeline writes (invented ids and text, every id carrying a per-run tag so runs sharing
a Redis never collide; the keys are deleted afterwards) and a keys file with one key per access
profile. The ``world`` and ``tokens`` fixtures of tests/integration/conftest.py serve them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from feedpipe.apikeys import create_key
from feedpipe.store.feeds import encode_feed
from feedpipe.store.keys import keys

HOUR_MS = 3_600_000
NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
EPOCH = 2810


@dataclass
class World:
    """Ids of the synthetic records written for one test module."""

    tag: str
    brand_a: str
    brand_b: str
    brand_empty: str
    user: str
    user_b_only: str
    user_empty_feed: str
    user_vanished: str
    experiment: str
    user_compact: str = ""
    c: dict[int, str] = field(default_factory=dict)


def content_doc(cid: str, brand: str, n: int) -> dict[str, Any]:
    return {
        "content_id": cid,
        "source": "synthetic",
        "source_id": f"s{n}",
        "kind": "article",
        "brand": brand,
        "status": "published",
        "title": f"Invented headline number {n}",
        "summary": f"A short made-up summary for item {n}.",
        "body": f"Body text of made-up item {n}. It says very little.",
        "url": f"https://example.test/items/{n}",
        "authors": ["Test Writer"],
        "published_at": NOW_MS - n * HOUR_MS,
        "updated_at": None,
        "categories": ["sport" if n % 2 else "food"],
        "tags": ["made-up"],
        "media": [],
        "language": "en",
        "language_confidence": 0.99,
        "word_count": 11,
        "reading_time_s": 3,
        "reading_level": 80.0,
        "reading_grade": 3.1,
        "sentiment": 0.0,
        "keywords": ["made-up item"],
        "topics": ["sport" if n % 2 else "food", "made-up"],
        "entities": [],
        "content_hash": f"hash{n}",
        "enriched_at": NOW_MS,
    }


def feed_entry(cid: str, brand: str, rank: int, score: float) -> dict[str, Any]:
    return {
        "content_id": cid,
        "brand": brand,
        "rank": rank,
        "score": score,
        "affinity": score / 2,
        "recency": 0.5,
        "engagement": 0.25,
        "weights": {"a": 0.6, "b": 0.2, "c": 0.2},
    }


def feed_doc(user: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "user_id": user,
        "profile_version": 7,
        "generated_at": NOW_MS,
        "ranker": "affinity",
        "stats_version": 3,
        "items": entries,
    }


def seed_world(redis_url: str) -> Iterator[World]:
    """Write the :class:`World` records to ``redis_url``, yield it, delete them."""
    tag = uuid.uuid4().hex[:10]
    w = World(
        tag=tag,
        brand_a=f"alpha{tag}",
        brand_b=f"beta{tag}",
        brand_empty=f"empty{tag}",
        user=f"u-{tag}",
        user_b_only=f"ub-{tag}",
        user_empty_feed=f"ue-{tag}",
        user_vanished=f"uv-{tag}",
        experiment=f"exp-{tag}",
        user_compact=f"uc-{tag}",
        c={n: f"{tag}-c{n}" for n in range(1, 7)},
    )
    k = keys()
    brand_of = {1: w.brand_a, 2: w.brand_b, 3: w.brand_a, 4: w.brand_b, 5: w.brand_a, 6: w.brand_a}
    r = redis.Redis.from_url(redis_url)
    written: list[str] = []

    def put(key: str, value: Any) -> None:
        r.set(key, orjson.dumps(value))
        written.append(key)

    for n, cid in w.c.items():
        if n != 6:  # c6 is ranked and trending but its content key has vanished
            put(k.content(cid), content_doc(cid, brand_of[n], n))
    order = [(1, 0.9), (2, 0.8), (6, 0.75), (3, 0.7), (4, 0.6), (5, 0.5)]
    entries = [feed_entry(w.c[n], brand_of[n], i + 1, s) for i, (n, s) in enumerate(order)]
    entries[0].update(ranker="two_tower", weight_version="w7", arm="treatment")
    put(k.feed(w.user), feed_doc(w.user, entries))
    put(
        k.feed(w.user_b_only),
        feed_doc(
            w.user_b_only,
            [feed_entry(w.c[2], w.brand_b, 1, 0.9), feed_entry(w.c[4], w.brand_b, 2, 0.1)],
        ),
    )
    put(k.feed(w.user_empty_feed), feed_doc(w.user_empty_feed, []))
    # The compact binary feed form (feedpipe.store.feeds) reads like the JSON one.
    compact = feed_doc(
        w.user_compact,
        [feed_entry(w.c[3], w.brand_a, 1, 0.5), feed_entry(w.c[1], w.brand_a, 2, 0.25)],
    )
    r.set(k.feed(w.user_compact), encode_feed(compact, "compact"))
    written.append(k.feed(w.user_compact))
    put(k.feed(w.user_vanished), feed_doc(w.user_vanished, [feed_entry(w.c[6], w.brand_a, 1, 0.9)]))

    # Trending of brand_a: newest epoch EPOCH; an older epoch that must not be served. Two
    # partitions' shards, summed by the reader (c5: 5 + 4).
    r.set(k.trending_epoch(w.brand_a, 0), EPOCH)
    r.set(k.trending_epoch(w.brand_a, 1), EPOCH - 1)
    r.zadd(k.trending(w.brand_a, EPOCH, 0), {w.c[5]: 5.0, w.c[6]: 8.0, w.c[3]: 7.5})
    r.zadd(k.trending(w.brand_a, EPOCH, 1), {w.c[5]: 4.0, w.c[1]: 1.0})
    r.zadd(k.trending(w.brand_a, EPOCH - 1, 1), {w.c[2]: 100.0})
    written += [
        k.trending_epoch(w.brand_a, 0),
        k.trending_epoch(w.brand_a, 1),
        k.trending(w.brand_a, EPOCH, 0),
        k.trending(w.brand_a, EPOCH, 1),
        k.trending(w.brand_a, EPOCH - 1, 1),
    ]
    # Catalogue of brand_b only (no trending): the "latest" level. c4 is newer than c2.
    r.zadd(k.catalogue(w.brand_b), {w.c[2]: NOW_MS - 2 * HOUR_MS, w.c[4]: NOW_MS - HOUR_MS})
    written.append(k.catalogue(w.brand_b))
    # A/B counts as the pipeline writes them (two partitions' shards, summed by the reader),
    # plus one malformed field.
    r.sadd(k.ab_experiments(0), w.experiment)
    r.hset(
        k.ab(w.experiment, 0),
        mapping={
            "control:impressions": 600,
            "control:clicks": 20,
            "treatment:impressions": 400,
            "treatment:oops": 1,
        },
    )
    r.hset(k.ab(w.experiment, 2), mapping={"control:impressions": 400, "control:clicks": 30})
    r.hset(k.ab(w.experiment, 2), mapping={"treatment:clicks": 30})
    r.sadd(k.ab_experiments(2), w.experiment)
    written += [k.ab(w.experiment, 0), k.ab(w.experiment, 2)]

    half_life_s = 7 * 24 * 3600.0
    put(
        k.profile(w.user),
        {
            "user_id": w.user,
            "version": 12,
            "landmark_ms": NOW_MS - 48 * HOUR_MS,
            "half_life_s": half_life_s,
            "category_affinity": {"sport": 3.0, "food": 1.0, "weather": 0.0},
            "topic_affinity": {f"topic-{i:02d}": float(i) for i in range(1, 26)},
            "recent_reads": [
                {"content_id": w.c[1], "at": NOW_MS},
                {"content_id": w.c[3], "at": NOW_MS - HOUR_MS},
            ],
            "pending": [{"content_id": f"{tag}-later", "at": NOW_MS}],
            "brands": {w.brand_a: 2},
            "impressions": 10,
            "clicks": 2,
            "engagement_rate": 0.2,
            "first_seen": NOW_MS - 72 * HOUR_MS,
            "last_seen": NOW_MS,
        },
    )
    try:
        yield w
    finally:
        for name in written:
            r.delete(name)
        for p in k.partitions():
            r.srem(k.ab_experiments(p), w.experiment)
        r.close()


@dataclass
class Tokens:
    """A keys file with one key per access profile used by the tests."""

    path: Path
    admin: str
    feeds: str
    profiles: str
    slow: str


def make_tokens(path: Path) -> Tokens:
    """Write one key per access profile to the keys file ``path``."""
    return Tokens(
        path=path,
        admin=create_key(path, "admin", ["admin"], 10_000, 10_000)[1],
        feeds=create_key(path, "frontend", ["feeds:read"], 10_000, 10_000)[1],
        profiles=create_key(path, "crm", ["profiles:read"], 10_000, 10_000)[1],
        slow=create_key(path, "slow", ["feeds:read"], 0.01, 2)[1],
    )
