"""Storage of the item-signal families: ``stats``, ``stats_version``, ``stats_newest``,
``trending``, ``trending_epoch``, ``ab``, ``ab_experiments`` (docs/redis-keys.md).

Each family is sharded by reader.events partition (feedpipe/store/keys.py): a click path
batch of partition N writes shard N inside its partition transaction (:func:`queue_signals`,
:func:`queue_ab`: commands queued on the caller's MULTI, applied with the offset watermark, so
a redelivered batch never counts twice, and on one Redis Cluster slot). Readers sum the shards:
counters add up, trending scores of one brand and epoch share their landmark (the epoch start)
so they add up too, and a version that is a sum of counters that only grow moves whenever one
shard moves. Readers: the click path's catalogue (:func:`read_stats`, :func:`read_trending`,
:func:`stats_version`), the read endpoint (:func:`trending_page`, :func:`experiments`,
:func:`ab_counts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import add
from typing import Any

from feedpipe.store import scripts
from feedpipe.store.client import mget
from feedpipe.store.keys import keys

STATS_READ_CHUNK = 5000
"""Items per STATS_READ script call."""


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def queue_signals(
    pipe: Any,
    partition: int,
    stats: Mapping[str, Sequence[int]],
    trending: Mapping[tuple[str, int], Mapping[str, float]],
    newest_ms: int = 0,
) -> None:
    """Queue the item stats (content_id -> [impressions, clicks]: one STATS_INCR call) and the
    trending increments ((brand, epoch) -> content_id -> weight: one ZINCR_MANY call per
    epoch zset, the brand's newest epoch moved forward by SET_MAX) on ``partition``'s shards;
    when stats moved, bump its ``stats_version`` and move its ``stats_newest`` forward to
    ``newest_ms`` (the newest event time, epoch ms, of the counted events; SET_MAX), so a
    stats version names one newest event time whichever process reads it."""
    k = keys()
    if stats:
        ids = sorted(stats)
        pipe.eval(
            scripts.STATS_INCR,
            len(ids),
            *[k.stats(c, partition) for c in ids],
            *[n for c in ids for n in stats[c]],
        )
    for (brand, epoch), scores in trending.items():
        members = sorted(scores)
        pipe.eval(
            scripts.ZINCR_MANY,
            1,
            k.trending(brand, epoch, partition),
            *[x for c in members for x in (repr(scores[c]), c)],
        )
        pipe.eval(scripts.SET_MAX, 1, k.trending_epoch(brand, partition), epoch)
    if stats:
        if newest_ms > 0:
            pipe.eval(scripts.SET_MAX, 1, k.stats_newest(partition), int(newest_ms))
        pipe.incr(k.stats_version(partition))


def queue_ab(pipe: Any, partition: int, ab: Mapping[str, Mapping[str, int]]) -> None:
    """Queue the A/B counters (experiment -> {"{arm}:impressions" | "{arm}:clicks": n}) on
    ``partition``'s shard."""
    if not ab:
        return
    k = keys()
    pipe.sadd(k.ab_experiments(partition), *sorted(ab))
    for exp_name, fields in sorted(ab.items()):
        for fld, n in sorted(fields.items()):
            pipe.hincrby(k.ab(exp_name, partition), fld, n)


async def stats_version(r: Any) -> int:
    """The stats version: the sum of the shards' ``stats_version`` (0 when none is set)."""
    k = keys()
    return sum(int(v or 0) for v in await mget(r, [k.stats_version(p) for p in k.partitions()]))


async def read_stats(r: Any, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """content_id -> (impressions, clicks) of ``ids`` summed over the shards (0 when missing),
    one STATS_READ call per shard and :data:`STATS_READ_CHUNK` items, in one pipeline."""
    k = keys()
    if not ids:
        return {}
    total = [0] * (2 * len(ids))  # impressions, clicks of ids[0], ids[1], ...
    async with r.pipeline(transaction=False) as pipe:
        starts = []
        for p in k.partitions():
            # the key of every id from one template (content ids cannot hold a NUL)
            head, _, tail = k.stats("\0", p).partition("\0")
            for lo in range(0, len(ids), STATS_READ_CHUNK):
                part = ids[lo : lo + STATS_READ_CHUNK]
                starts.append(lo)
                pipe.eval(scripts.STATS_READ, len(part), *[head + i + tail for i in part])
        replies = await pipe.execute()
    for lo, flat in zip(starts, replies, strict=True):
        counts = list(map(int, _s(flat).split(",")))
        total[2 * lo : 2 * lo + len(counts)] = map(add, total[2 * lo : 2 * lo + len(counts)],
                                                   counts)
    return {i: (total[2 * n], total[2 * n + 1]) for n, i in enumerate(ids)}


async def trending_scores(r: Any, brand: str) -> tuple[int | None, list[tuple[str, float]]]:
    """(newest epoch of ``brand`` over the shards, [(content_id, score)] of that epoch summed
    over the shards, best first, ties by id); ``(None, [])`` when the brand has no trending."""
    k = keys()
    parts = list(k.partitions())
    epochs = [int(e) for e in await mget(r, [k.trending_epoch(brand, p) for p in parts]) if e]
    if not epochs:
        return None, []
    epoch = max(epochs)
    async with r.pipeline(transaction=False) as pipe:
        for p in parts:
            pipe.zrange(k.trending(brand, epoch, p), 0, -1, withscores=True)
        shards = await pipe.execute()
    scores: dict[str, float] = {}
    for pairs in shards:
        for m, s in pairs:
            cid = _s(m)
            scores[cid] = scores.get(cid, 0.0) + float(s)
    return epoch, sorted(scores.items(), key=lambda cs: (-cs[1], cs[0]))


async def read_trending(r: Any, brands: Sequence[str], top: int) -> dict[str, list[str]]:
    """brand -> the ``top`` ids of its newest trending epoch, best first (brands without one
    are left out)."""
    if top <= 0 or not brands:
        return {}
    out: dict[str, list[str]] = {}
    for brand in brands:
        epoch, pairs = await trending_scores(r, brand)
        if epoch is not None:
            out[brand] = [c for c, _ in pairs[:top]]
    return out


async def trending_page(
    r: Any, brand: str, offset: int, count: int
) -> tuple[int | None, list[tuple[str, float]]]:
    """(epoch, [(content_id, score)] best first from ``offset``, at most ``count``) of the
    brand's newest trending epoch (:func:`trending_scores`)."""
    epoch, pairs = await trending_scores(r, brand)
    return epoch, pairs[offset : offset + count]


async def experiments(r: Any) -> list[str]:
    """Names of the experiments with A/B counts in any shard, sorted."""
    k = keys()
    async with r.pipeline(transaction=False) as pipe:
        for p in k.partitions():
            pipe.smembers(k.ab_experiments(p))
        sets = await pipe.execute()
    return sorted({_s(n) for names in sets for n in names})


async def ab_counts(r: Any, experiment: str) -> dict[str, int] | None:
    """The experiment's counters (``{arm}:impressions`` / ``{arm}:clicks`` -> n) summed over
    the shards, or ``None`` when no shard knows the experiment."""
    k = keys()
    parts = list(k.partitions())
    async with r.pipeline(transaction=False) as pipe:
        for p in parts:
            pipe.sismember(k.ab_experiments(p), experiment)
            pipe.hgetall(k.ab(experiment, p))
        res = await pipe.execute()
    known = any(res[0::2])
    out: dict[str, int] = {}
    for fields in res[1::2]:
        for f, v in fields.items():
            out[_s(f)] = out.get(_s(f), 0) + int(v)
    if not known and not out:
        return None
    return out
