"""The key layout on a real Redis Cluster (three local masters, the ``redis_cluster_url``
fixture): a click path partition batch, queued by ``streams.clickpath.write.queue_plan``, is one
MULTI/EXEC under WATCH of the partition's watermark; a batch mixing two partitions' users is
refused by the cluster; the readers merge the partitions' shards and find users' keys on any
node (docs/redis-keys.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import RedisClusterException, WatchError

from feedpipe.model.profile import new_profile
from feedpipe.rank.fanout import AudienceWrites, audience_keys, parse_audience
from feedpipe.store import audience as audience_store
from feedpipe.store import pending as pending_store
from feedpipe.store import profiles as profile_store
from feedpipe.store import stats as stats_store
from feedpipe.store.client import async_client, is_cluster
from feedpipe.store.keys import keys
from feedpipe.topology import Topology, topology

pytestmark = pytest.mark.integration

WM_STAGE = "profiles"


def users_of(partition: int, n: int, prefix: str = "U") -> list[str]:
    """``n`` user ids whose Kafka partition (murmur2 of the id) is ``partition``."""
    k = keys()
    out: list[str] = []
    i = 0
    while len(out) < n:
        u = f"{prefix}{i}"
        if k.partition_of(u) == partition:
            out.append(u)
        i += 1
    return out


def json_topology() -> Topology:
    """The topology with JSON profiles and feeds (no item-ordinal table needed)."""
    topo = topology()
    return topo.model_copy(
        update={
            "profiles": topo.profiles.model_copy(update={"profile_format": "json"}),
            "ranking": topo.ranking.model_copy(update={"feed_format": "json"}),
        }
    )


def plan_for(partition: int, users: list[str], offset: int, item: str) -> Any:
    """A batch of ``partition``: every user read and clicked ``item`` (stats, trending, A/B,
    one audience registration, one pending click)."""
    from streams.clickpath.fold import Plan

    k = keys()
    topo = topology()
    return Plan(
        partition,
        offset,
        len(users),
        profiles={u: new_profile(u, 0, topo.profiles) for u in users},
        feeds={u: {"user_id": u, "profile_version": 1, "generated_at": 0, "items": []}
               for u in users},
        pending={"ghost": set(users)},
        stats={item: [len(users), len(users)]},
        trending={("mind", 7): {item: float(len(users))}},
        ab={"exp": {"a:clicks": len(users)}},
        audience=AudienceWrites(
            add={k.audience("mind", "c:news", k.partition_of(u)): {u: 1.0} for u in users[:1]}
        ),
    )


async def apply_plan(r: Any, plan: Any) -> list[Any]:
    """The click path's write: WATCH the watermark, queue the plan in MULTI, EXEC."""
    from streams.clickpath.write import queue_plan

    k = keys()
    wm = k.watermark(WM_STAGE, "reader.events", plan.partition)
    async with r.pipeline(transaction=True) as pipe:
        await pipe.watch(wm)
        await pipe.get(wm)
        pipe.multi()
        queue_plan(pipe, plan, [], json_topology())
        return list(await pipe.execute())


def on_cluster(url: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        r = async_client(url, cluster=True)
        try:
            assert is_cluster(r)
            await r.flushall()
            return await fn(r)
        finally:
            await r.aclose()

    return asyncio.run(go())


def test_partition_batches_are_transactions_and_readers_merge_the_shards(
    redis_cluster_url: str,
) -> None:
    k = keys()
    p_a, p_b = 1, 2
    users_a, users_b = users_of(p_a, 3), users_of(p_b, 2)
    assert len({k.partition_of(u) for u in users_a + users_b}) == 2

    async def body(r: Any) -> dict[str, Any]:
        await apply_plan(r, plan_for(p_a, users_a, 10, "itemX"))
        await apply_plan(r, plan_for(p_b, users_b, 20, "itemX"))
        wms = await r.mget_nonatomic(
            [k.watermark(WM_STAGE, "reader.events", p) for p in (p_a, p_b)]
        )
        raws = await profile_store.read_raw(r, users_a + users_b, feeds=True)
        reply = (await audience_store.sizes(r, [audience_keys(_meta(), k)], 10))[0]
        return {
            "wms": wms,
            "raws": raws,
            "stats": await stats_store.read_stats(r, ["itemX", "itemY"]),
            "version": await stats_store.stats_version(r),
            "trending": await stats_store.trending_scores(r, "mind"),
            "ab": await stats_store.ab_counts(r, "exp"),
            "audience": parse_audience(reply),
            "pending": await pending_store.take(r, ["ghost"]),
            "again": await pending_store.take(r, ["ghost"]),
        }

    got = on_cluster(redis_cluster_url, body)
    assert got["wms"] == [b"10", b"20"]
    assert all(raw is not None for raw in got["raws"])  # 5 profiles + 5 feeds, two slots
    assert got["stats"] == {"itemX": (5, 5), "itemY": (0, 0)}  # 3 + 2 from two shards
    assert got["version"] == 2
    assert got["trending"] == (7, [("itemX", 5.0)])
    assert got["ab"] == {"a:clicks": 5}
    assert got["audience"] == (2, sorted([users_a[0], users_b[0]]))
    assert got["pending"] == [sorted(u.encode() for u in users_a + users_b)]
    assert got["again"] == [[]]  # taken once


def _meta() -> Any:
    from feedpipe.model.item import Meta

    return Meta("itemX", "mind", ("news",), (), None)


def test_a_batch_across_partitions_is_refused_and_a_moved_watermark_aborts(
    redis_cluster_url: str,
) -> None:
    """The layout is what keeps a batch on one slot: users of two partitions in one batch
    cannot be one transaction; a zombie's write fails on the WATCH."""
    from streams.clickpath.write import queue_plan

    k = keys()
    mixed = users_of(0, 1) + users_of(3, 1)

    async def body(r: Any) -> tuple[str, str]:
        try:
            await apply_plan(r, plan_for(0, mixed, 5, "itemZ"))
            refused = "applied"
        except RedisClusterException as exc:  # a multi-key command or the EXEC across slots
            refused = str(exc)
        wm = k.watermark(WM_STAGE, "reader.events", 0)
        users = users_of(0, 2)
        try:
            async with r.pipeline(transaction=True) as pipe:
                await pipe.watch(wm)
                await r.set(wm, 99)  # another worker moved the watermark
                pipe.multi()
                queue_plan(pipe, plan_for(0, users, 6, "itemZ"), [], json_topology())
                await pipe.execute()
            zombie = "applied"
        except WatchError:
            zombie = "WatchError"
        return refused, zombie

    refused, zombie = on_cluster(redis_cluster_url, body)
    assert "slot" in refused.lower(), refused
    assert zombie == "WatchError"
