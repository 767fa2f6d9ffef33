"""The trending-window family against a real Redis (feedpipe/store/trends.py): increments
queued on a MULTI add up to the pure state of all events, whatever the batch split, and read
back as the ranker reads them; the learned ranker's features in ``rank_users`` equal the
evaluation's."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.signals import (
    TREND_EPOCH_MS,
    Trend,
    trend_add,
    trend_at,
    trend_epoch,
    trend_values,
)
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.rankers import rank_users
from feedpipe.rank.weights import RankingConfig
from feedpipe.store.keys import keys
from feedpipe.store.trends import TTL_S, queue_trends, read_trends
from feedpipe.topology import WeightSet, topology

T0 = 1_573_300_000_000


def test_batches_add_up_and_read_back(redis_url: str, redis_client: redis.Redis) -> None:
    rng = random.Random(3)
    ids = [f"{i:064x}" for i in range(6)]
    start = trend_epoch(T0) * TREND_EPOCH_MS
    events = [(rng.choice(ids[:5]), rng.random() < 0.2,
               int(start + rng.uniform(-30, 40) * HOUR_MS)) for _ in range(300)]
    whole: dict[str, Trend] = {}
    for cid, click, at in events:
        whole[cid] = trend_add(whole.get(cid), click, at)
    now = start + 40 * HOUR_MS

    async def go() -> dict[int, np.ndarray]:
        r = aioredis.Redis.from_url(redis_url)
        for n, lo in enumerate(range(0, len(events), 70)):  # batches of several partitions
            batch: dict[str, Trend] = {}
            for cid, click, at in events[lo:lo + 70]:
                batch[cid] = trend_add(batch.get(cid), click, at)
            async with r.pipeline(transaction=True) as pipe:
                queue_trends(pipe, n % 3, batch)
                await pipe.execute()
        got = await read_trends(r, ids, now)
        await r.aclose()
        return got

    sums = asyncio.run(go())
    assert sorted(sums) == [trend_epoch(now) - 1, trend_epoch(now)]
    vals = trend_values(sums, np.array([now]))[0]
    for i, cid in enumerate(ids):
        assert vals[i] == pytest.approx(trend_at(whole.get(cid), now), rel=1e-9)
    assert not vals[5].any()  # never shown
    ttl = redis_client.ttl(keys().trend_windows(trend_epoch(now), 1))
    assert 0 < ttl <= TTL_S

    # rank_users serves a learned set with these sums: trend features as the evaluation's.
    metas = [Meta(c, "mind", ("news",), ("news",), None) for c in ids]
    matrix = CandidateMatrix(metas)
    order = [ids.index(m.content_id) for m in matrix.metas]  # matrix rows -> read rows
    aligned = {e: a[order] for e, a in sums.items()}
    ws = WeightSet(ranker="learned", version=1, weights={
        **dict.fromkeys(topology().ranker_config().weight_sets["learned-mind"].weights, 0.0),
        "trend_24h": 1.0})
    cfg = topology().ranker_config()
    cfg = cfg.model_copy(update={"weight_sets": {**cfg.weight_sets, "t": ws},
                                 "brands": {"default": "t", "mind": "t"}})
    profile = {"user_id": "u", "last_seen": now, "brands": {"mind": 1}, "recent_reads": [],
               "category_affinity": {}, "topic_affinity": {}, "landmark_ms": now,
               "half_life_s": 3600}
    (items,) = rank_users([profile], matrix, {}, topology().ranking,
                          RankingConfig(cfg, {}, 0, 1), trends=aligned)
    for it in items:
        want = np.log1p(trend_at(whole.get(it["content_id"]), now)[2])
        assert it["trend_24h"] == pytest.approx(want) and it["score"] == pytest.approx(want)
    assert items[0]["content_id"] == max(
        ids[:5], key=lambda c: trend_at(whole.get(c), now)[2])
