"""Benchmark the click path's Redis work on a single Redis and on a local Redis Cluster (three
masters) in the same run, and print the cluster / single ratio of each operation.

Usage: ``python bench/bench_redis_cluster.py [--batches 400] [--users 50] [--items 2000]
[--port 46700]`` (starts its own redis-server on ``--port`` and a cluster on ``--port + 1`` ..
``+ 3``, under a temporary directory; both stopped at the end).

Operations, each timed on both (wall clock per call, median of the calls):

* ``batch write``: one partition batch of ``--users`` users queued by
  ``streams.clickpath.write.queue_plan`` (profiles, feeds, active, item stats for 200 items,
  trending, A/B counters, the watermark) under WATCH + MULTI/EXEC, as the click path applies
  it; batches cycle over the partitions;
* ``read users``: the batch's profiles and feeds with the item-table generation
  (``feedpipe.store.profiles.read_raw``: one MGET on a single Redis, one per slot on a cluster);
* ``read stats``: the item stats of ``--items`` items summed over the partitions' shards
  (``feedpipe.store.stats.read_stats``, the catalogue refresh's read);
* ``stats 1 shard``: the same STATS_READ script calls on one partition's shard only: what the
  read cost when item stats were one key per item (the sharding multiplies it by the partition
  count);
* ``trending``: a brand's trending summed over the shards (``stats.trending_scores``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feedpipe.model.profile import new_profile  # noqa: E402
from feedpipe.store import profiles as profile_store  # noqa: E402
from feedpipe.store import scripts  # noqa: E402
from feedpipe.store import stats as stats_store  # noqa: E402
from feedpipe.store.client import async_client  # noqa: E402
from feedpipe.store.keys import keys  # noqa: E402
from feedpipe.topology import topology  # noqa: E402
from ops.infra import RedisClusterNodes, RedisServer  # noqa: E402
from streams.clickpath.fold import Plan  # noqa: E402
from streams.clickpath.write import queue_plan  # noqa: E402

OPS = ("batch write", "read users", "read stats", "stats 1 shard", "trending")


def users_by_partition(per: int) -> dict[int, list[str]]:
    """``per`` user ids of each reader.events partition."""
    k = keys()
    out: dict[int, list[str]] = {p: [] for p in k.partitions()}
    i = 0
    while any(len(v) < per for v in out.values()):
        u = f"B{i}"
        if len(out[k.partition_of(u)]) < per:
            out[k.partition_of(u)].append(u)
        i += 1
    return out


def plan(partition: int, users: list[str], offset: int, items: list[str]) -> Plan:
    """A partition batch: each user read 4 of ``items`` (stats, trending, A/B)."""
    topo = topology()
    touched = items[(offset * 4) % len(items) :][: 4 * len(users)] or items[:4]
    return Plan(
        partition, offset, len(users),
        profiles={u: new_profile(u, 0, topo.profiles) for u in users},
        feeds={u: {"user_id": u, "profile_version": 1, "generated_at": 0, "items": []}
               for u in users},
        stats={c: [1, 1] for c in touched[:200]},
        trending={("bench", 1): {c: 1.0 for c in touched[:200]}},
        ab={"bench-exp": {"a:clicks": len(users)}},
    )


async def timed(call: Awaitable[Any], out: list[float]) -> None:
    """Await ``call`` (a coroutine not started yet) and append its wall seconds to ``out``."""
    t0 = time.perf_counter()
    await call
    out.append(time.perf_counter() - t0)


async def run(url: str, cluster: bool, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per call of each operation of :data:`OPS` on one Redis."""
    topo = topology()
    json_topo = topo.model_copy(update={
        "profiles": topo.profiles.model_copy(update={"profile_format": "json"}),
        "ranking": topo.ranking.model_copy(update={"feed_format": "json"}),
    })
    k = keys()
    r = async_client(url, cluster=cluster)
    await r.flushall()
    groups = users_by_partition(args.users)
    items = [f"item{i}" for i in range(args.items)]
    times: dict[str, list[float]] = {op: [] for op in OPS}

    async def write(p: int, users: list[str], offset: int) -> None:
        wm = k.watermark("profiles", "reader.events", p)
        async with r.pipeline(transaction=True) as pipe:
            await pipe.watch(wm)
            await pipe.get(wm)
            pipe.multi()
            queue_plan(pipe, plan(p, users, offset, items), [], json_topo)
            await pipe.execute()

    for b in range(args.batches):
        p = b % len(groups)
        users = groups[p]
        await timed(write(p, users, b), times["batch write"])
        await timed(profile_store.read_raw(r, users, feeds=True), times["read users"])
        if b % 10 == 0:
            await timed(stats_store.read_stats(r, items), times["read stats"])
            one = [k.stats(c, 0) for c in items]
            await timed(r.eval(scripts.STATS_READ, len(one), *one), times["stats 1 shard"])
            await timed(stats_store.trending_scores(r, "bench"), times["trending"])
    await r.aclose()
    return {op: statistics.median(v) for op, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--port", type=int, default=46700)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-redis-cluster-") as tmp:
        single = RedisServer(Path(tmp), port=args.port)
        nodes = RedisClusterNodes(Path(tmp), port=args.port + 1)
        try:
            res_single = asyncio.run(run(single.start(), False, args))
            res_cluster = asyncio.run(run(nodes.start(), True, args))
        finally:
            single.stop()
            nodes.stop()
    print(f"{args.batches} batches of {args.users} users, {args.items} items; median per call")
    print(f"{'operation':<14} {'single µs':>10} {'cluster µs':>11} {'cluster/single':>15}")
    for op in OPS:
        s, c = res_single[op] * 1e6, res_cluster[op] * 1e6
        print(f"{op:<14} {s:>10,.0f} {c:>11,.0f} {c / s:>15.2f}")


if __name__ == "__main__":
    main()
