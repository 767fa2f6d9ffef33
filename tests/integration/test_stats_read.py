"""Item stats read back over the shards (feedpipe.store.stats.read_stats) on a real Redis (a
Redis Cluster under ``FEEDPIPE_TEST_REDIS_CLUSTER``): one STATS_READ string per shard and
chunk, summed per item."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis

from feedpipe.store import stats as stats_store
from feedpipe.store.client import async_client
from feedpipe.store.keys import keys

pytestmark = pytest.mark.integration


def test_stats_summed_over_shards_and_chunks(
    redis_client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_store, "STATS_READ_CHUNK", 7)  # several chunks per shard
    k = keys()
    rng = random.Random(15)
    ids = [f"N{i}" for i in range(40)]
    want = {i: [0, 0] for i in ids}
    for i in ids:
        for p in k.partitions():
            roll = rng.random()
            if roll < 0.5:
                imps, clicks = rng.randint(0, 10_000), rng.randint(0, 90)
                redis_client.hset(k.stats(i, p), mapping={"impressions": imps, "clicks": clicks})
                want[i][0] += imps
                want[i][1] += clicks
            elif roll < 0.7:  # a shard with clicks only (impressions missing)
                redis_client.hset(k.stats(i, p), mapping={"clicks": 3})
                want[i][1] += 3

    async def read() -> dict[str, tuple[int, int]]:
        r = async_client(redis_url)
        try:
            return await stats_store.read_stats(r, ids)
        finally:
            await r.aclose()

    got = asyncio.run(read())
    assert got == {i: (v[0], v[1]) for i, v in want.items()}
    assert sum(v[0] for v in got.values()) > 0
