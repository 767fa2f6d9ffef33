"""Live co-reads (feedpipe/store/coreads.py) through the batch click path on real Kafka and
Redis: one reader's "read X, then Y" raises Y in another reader's feed (another partition),
is counted once under redelivery and after a restart, and the rows stay bounded.

Run also with FEEDPIPE_TEST_REDIS_CLUSTER=1 (every write in one slot per transaction).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
import redis
from clickpath_support import (
    T0,
    Sent,
    apply,
    reader,
    records,
    seed_catalogue,
    stored_feed,
    with_path,
)

from feedpipe.model.signals import COREAD_NEIGHBOURS, trend_epoch
from feedpipe.rank.weights import RankingConfig
from feedpipe.store.keys import keys
from feedpipe.topology import WeightSet, topology

pytestmark = pytest.mark.integration


def coread_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve the mind brand a learned weight set whose only weight is ``coread``."""
    from streams.clickpath.catalogue import REGISTRY

    cfg = topology().ranker_config()
    names = cfg.weight_sets["learned-mind"].weights
    ws = WeightSet(ranker="learned", version=1, weights={**dict.fromkeys(names, 0.0),
                                                         "coread": 1.0})
    cfg = cfg.model_copy(update={"weight_sets": {**cfg.weight_sets, "co": ws},
                                 "brands": {"default": "co", "mind": "co"}})
    rc = RankingConfig(cfg, {}, 0, 1)
    monkeypatch.setattr(REGISTRY, "current", lambda: rc)


def users_on_distinct_partitions(n: int) -> list[str]:
    """``n`` fresh user ids keyed to ``n`` different reader.events partitions."""
    k = keys()
    out: dict[int, str] = {}
    while len(out) < n:
        u = f"U{uuid.uuid4().hex[:8]}"
        out.setdefault(k.partition_of(u), u)
    return list(out.values())[:n]


def stored_row(r: redis.Redis, user: str, x: str) -> dict[str, float]:
    """The co-read row of ``x`` in the shard of ``user``'s partition (T0's epoch)."""
    k = keys()
    raw = r.hget(k.coreads(trend_epoch(T0.timestamp() * 1000), k.partition_of(user)), x)
    return orjson.loads(raw) if raw else {}


def test_a_coread_raises_the_item_for_another_reader_once(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coread_only(monkeypatch)
    x, y, z, w = seed_catalogue(redis_client, ["sports", "news", "autos", "music"])
    a, b, c = users_on_distinct_partitions(3)
    k = keys()
    pa, pb, pc = (k.partition_of(u) for u in (a, b, c))
    a_clicks = [reader(a, "click", x, T0), reader(a, "click", y, T0 + timedelta(minutes=1))]

    async def body(path: Any, sent: Sent) -> None:
        await apply(path, records(b, [reader(b, "click", w, T0)], 0, pb))
        before = {it["content_id"]: it for it in stored_feed(redis_client, b)["items"]}
        assert before[y]["coread"] == 0.0 and "coread" not in before[y]["sources"]
        await apply(path, records(a, a_clicks, 0, pa))
        await apply(path, records(a, a_clicks, 0, pa))  # redelivered: skipped
        await apply(path, records(b, [reader(b, "click", x, T0 + timedelta(minutes=2))], 1, pb))
        await apply(path, records(c, [reader(c, "click", z, T0 + timedelta(minutes=2))], 0, pc))
        # the idle refresher ranks with the same co-reads: b's feed rebuilt by it
        from streams.clickpath.refresh import rank_and_store

        ranked = stored_feed(redis_client, b)["items"]
        redis_client.delete(k.feed(b))
        assert await rank_and_store([b], pb) == 1
        again = stored_feed(redis_client, b)["items"]
        def co(items: list[dict[str, Any]]) -> list[tuple[str, float, bool]]:
            return [(it["content_id"], it["coread"], "coread" in it["sources"]) for it in items]

        assert co(again) == co(ranked)  # trending moved meanwhile: other sources may differ

    asyncio.run(with_path(kafka_bootstrap, body))
    assert stored_row(redis_client, a, x) == {y: 1.0}
    items = stored_feed(redis_client, b)["items"]
    top = items[0]
    # coread_scores: count(x -> y) / (1 + total count of x) = 1 / 2, the only non-zero weight
    # (the compact feed store keeps values to ~1e-5)
    assert top["content_id"] == y and top["coread"] == pytest.approx(0.5, rel=1e-4)
    assert top["score"] == pytest.approx(0.5, rel=1e-4) and "coread" in top["sources"]
    assert all(it["coread"] == 0.0 for it in items[1:])
    # a reader who did not read x gets no co-read of y
    other = {it["content_id"]: it for it in stored_feed(redis_client, c)["items"]}
    assert other[y]["coread"] == 0.0

    async def restarted(path: Any, sent: Sent) -> None:
        # a new worker: the batch of a's clicks comes again with one new record after it
        more = [*a_clicks, reader(a, "click", z, T0 + timedelta(minutes=3))]
        res = await apply(path, records(a, more, 0, pa))
        assert res.skipped_offsets == 2 and res.applied == 1

    asyncio.run(with_path(kafka_bootstrap, restarted))
    assert stored_row(redis_client, a, x) == {y: 1.0, z: 1.0}
    assert stored_row(redis_client, a, y) == {z: 1.0}
    assert redis_client.ttl(k.coreads(trend_epoch(T0.timestamp() * 1000), pa)) > 0


def test_rows_keep_at_most_the_neighbour_bound(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coread_only(monkeypatch)
    n = COREAD_NEIGHBOURS + 5
    ids = seed_catalogue(redis_client, [f"c{i}" for i in range(n + 1)])
    x = ids[0]
    users = [f"U{uuid.uuid4().hex[:8]}" for _ in range(n)]
    part = keys().partition_of(users[0])
    users = [u for u in users if keys().partition_of(u) == part]
    while len(users) < n:
        u = f"U{uuid.uuid4().hex[:8]}"
        if keys().partition_of(u) == part:
            users.append(u)

    async def body(path: Any, sent: Sent) -> None:
        from streams.clickpath.records import Record

        recs = []
        for i, u in enumerate(users):  # each reads x, then its own item
            for j, v in enumerate([reader(u, "click", x, T0),
                                   reader(u, "click", ids[i + 1], T0 + timedelta(minutes=1))]):
                recs.append(Record("reader.events", part, 2 * i + j, u.encode(), v))
        await apply(path, recs)

    asyncio.run(with_path(kafka_bootstrap, body))
    row = stored_row(redis_client, users[0], x)
    assert len(row) == COREAD_NEIGHBOURS and set(row.values()) == {1.0}
    # coread_add evicts the largest ids among equal counts: the smallest ones stay
    assert sorted(row) == sorted(ids[1:])[:COREAD_NEIGHBOURS]
