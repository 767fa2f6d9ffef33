"""Item interning against a real Redis (feedpipe/store/interning.py): allocation agreement between
processes' tables, resolution, and a wiped table (FLUSHDB) never decoding stale ordinals."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import redis
import redis.asyncio as aioredis

from feedpipe.store.feeds import FeedFormatError, decode_feed, encode_feed
from feedpipe.store.interning import (
    ItemTable,
    ItemTableError,
    intern,
    intern_sync,
    resolve,
    resolve_sync,
)
from feedpipe.store.keys import keys


def _ids(n: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def test_concurrent_tables_agree_on_ordinals(redis_url: str, redis_client: redis.Redis) -> None:
    ids = _ids(300)

    async def go() -> list[ItemTable]:
        r = aioredis.Redis.from_url(redis_url)
        tables = [ItemTable() for _ in range(4)]
        # overlapping id sets interned at the same time by four "workers"
        await asyncio.gather(
            *(intern(r, ids[40 * i : 40 * i + 180], t) for i, t in enumerate(tables))
        )
        await r.aclose()
        return tables

    tables = asyncio.run(go())
    k = keys()
    stored = {c.decode(): int(o) for c, o in redis_client.hgetall(k.item_ord()).items()}
    back = {int(o): c.decode() for o, c in redis_client.hgetall(k.item_id()).items()}
    assert sorted(stored.values()) == list(range(len(stored)))  # dense, no ordinal twice
    assert {o: c for c, o in stored.items()} == back
    gens = {t.gen for t in tables}
    assert len(gens) == 1 and None not in gens
    for t in tables:
        assert all(stored[c] == o for c, o in t.ords.items())
    reader = ItemTable()
    reader.sync(redis_client.get(k.item_gen()))
    resolve_sync(redis_client, [0, 5, len(stored) - 1, len(stored) + 10], reader)
    assert reader.ids == {o: back[o] for o in (0, 5, len(stored) - 1)}  # unknown: not cached


def test_a_wiped_table_is_detected(redis_client: redis.Redis) -> None:
    k = keys()
    t = ItemTable()
    t.sync(redis_client.get(k.item_gen()))
    ids = _ids(5)
    intern_sync(redis_client, ids, t)
    doc = {
        "user_id": "U1",
        "items": [
            {"content_id": c, "rank": i + 1, "score": 0.5, "brand": "mind"}
            for i, c in enumerate(ids)
        ],
    }
    raw = encode_feed(doc, "compact", t)
    assert decode_feed(raw, t)["items"][3]["content_id"] == ids[3]
    old_gen = t.gen
    redis_client.flushdb()
    with pytest.raises(ItemTableError):  # a batch that synced before the wipe must not commit
        intern_sync(redis_client, _ids(2, "new"), t)
    assert t.gen != old_gen and not t.ords  # the cache now follows the new table
    intern_sync(redis_client, _ids(2, "new"), t)  # ordinals 0 and 1 again, other items
    with pytest.raises(FeedFormatError, match="generation"):
        decode_feed(raw, t)


def test_resolve_fills_a_fresh_process_cache(redis_url: str, redis_client: redis.Redis) -> None:
    writer = ItemTable()
    writer.sync(None)
    ids = _ids(50, "x")
    intern_sync(redis_client, ids, writer)

    async def go() -> ItemTable:
        r = aioredis.Redis.from_url(redis_url)
        t = ItemTable()
        t.sync(await r.get(keys().item_gen()))
        await resolve(r, [writer.ords[c] for c in ids], t)
        await r.aclose()
        return t

    reader = asyncio.run(go())
    assert reader.ids == writer.ids
