"""The clock a worker ranks with (the "now" of the co-read and trending windows,
:attr:`streams.clickpath.catalogue.Catalogue.event_ms`) is the newest event time of the item
stats it loaded, read from Redis with their version: two workers that saw different batches
(one partition each) rank one stats version with the same windows."""

from __future__ import annotations

import asyncio

import pytest
import redis

from feedpipe.model.signals import TREND_EPOCH_MS, trend_epoch
from feedpipe.store import stats as stats_store

pytestmark = pytest.mark.integration


async def _write(partition: int, content_id: str, newest_ms: int) -> None:
    """One partition batch's stats (one impression of ``content_id``) in its own transaction,
    through the worker's client (one slot on a Redis Cluster), as the click path writes them."""
    from streams.runtime import redis_client

    async with redis_client().pipeline(transaction=True) as pipe:
        stats_store.queue_signals(pipe, partition, {content_id: [1, 0]}, {}, newest_ms)
        await pipe.execute()


def test_workers_that_saw_different_batches_rank_with_one_clock(
    redis_client: redis.Redis,
) -> None:
    from streams import runtime
    from streams.clickpath.catalogue import Catalogue

    boundary = 2602 * TREND_EPOCH_MS
    older, newer = boundary - 3_600_000, boundary + 3_600_000  # either side of an epoch start

    async def load() -> tuple[Catalogue, Catalogue]:
        runtime.redis_client.cache_clear()
        try:
            await _write(0, "c1", older)
            await _write(1, "c2", newer)
            await _write(1, "c2", older)  # a late event never moves the clock back
            one, two = Catalogue(), Catalogue()
            await one.refresh(event_ms=older)  # this worker's batches ended in the older epoch
            await two.refresh(event_ms=newer)
            return one, two
        finally:
            runtime.redis_client.cache_clear()

    one, two = asyncio.run(load())
    assert one.stats_version == two.stats_version == 3
    assert one.event_ms == two.event_ms == newer
    assert trend_epoch(one.event_ms) == trend_epoch(boundary)
