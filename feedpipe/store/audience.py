"""Storage of the ``audience`` family: ``fp:{p<N>}:audience:{brand}:{facet}`` zsets, user_id ->
registration time (wall ms) of the users of reader.events partition N (docs/redis-keys.md; what
is registered: feedpipe/rank/fanout.py). An item's audience is the union of the partitions'
sets: :func:`sizes` runs the AUDIENCE script once per partition (one slot each) and merges.

Writers: the click path, inside its partition transaction (:func:`queue_writes`), and its idle
refresher (:func:`trim`). Readers: the enrich stage and ``feedpipe rebuild`` (:func:`sizes`:
an item's audience through the AUDIENCE script, which never ships a celebrity-sized list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from feedpipe.store import scripts
from feedpipe.store.keys import keys

TRIM_CHUNK = 500
"""Audience sets per trim pipeline."""


async def all_keys(r: Any, partitions: Iterable[int] | None = None) -> list[str]:
    """Every audience zset key of ``partitions`` (default: all), sorted (SCAN; on a cluster,
    of every primary)."""
    k = keys()
    parts = k.partitions() if partitions is None else sorted(set(partitions))
    found: set[str] = set()
    for p in parts:
        found |= {
            x.decode() if isinstance(x, bytes) else str(x)
            async for x in r.scan_iter(match=k.audience("*", "*", p), count=1000)
        }
    return sorted(found)


async def user_keys(r: Any, users: Iterable[str]) -> list[str]:
    """The audience zset keys of the partitions of ``users`` (the sets an erased user may be
    in: :meth:`feedpipe.store.keys.Keys.partition_of`)."""
    k = keys()
    parts = {k.partition_of(u) for u in users}
    return await all_keys(r, parts) if parts else []


def queue_writes(
    pipe: Any,
    add: Mapping[str, Mapping[str, float]],
    remove: Mapping[str, Sequence[str]],
    erased: Iterable[str] = (),
    erased_from: Sequence[str] = (),
) -> None:
    """Queue a batch's audience changes: the ``erased`` users leave every set of
    ``erased_from`` (one ZREM_ALL call), then ZREM ``remove`` (key -> users) and ZADD ``add``
    (key -> user -> registration ms)."""
    gone = sorted(erased)
    if erased_from and gone:
        pipe.eval(scripts.ZREM_ALL, len(erased_from), *erased_from, *gone)
    for key, users in sorted(remove.items()):
        pipe.zrem(key, *users)
    for key, members in sorted(add.items()):
        pipe.zadd(key, members)


def _merge(replies: Sequence[Any], threshold: int) -> list[Any]:
    """One item's AUDIENCE replies of its partitions as one reply: ``[size]`` (a lower bound)
    when a partition or the sum is over ``threshold``, else ``[size, members]`` (the
    partitions' members are disjoint: a user is in its own partition's sets only)."""
    size = sum(int(rep[0]) for rep in replies)
    if size > threshold or any(len(rep) < 2 for rep in replies):
        return [size]
    return [size, [m for rep in replies for m in rep[1]]]


async def sizes(
    r: Any, key_lists: Sequence[Sequence[Sequence[str]]], threshold: int
) -> list[Any]:
    """The AUDIENCE reply of each item, given per item its per-partition ``[scratch key,
    facet set keys...]`` lists (feedpipe.rank.fanout.audience_keys); one pipeline of one
    script call per item and partition, merged per item; parse with
    :func:`feedpipe.rank.fanout.parse_audience`."""
    if not key_lists:
        return []
    async with r.pipeline(transaction=False) as pipe:
        for per_part in key_lists:
            for ks in per_part:
                pipe.eval(scripts.AUDIENCE, len(ks), *ks, threshold)
        flat = list(await pipe.execute())
    out: list[Any] = []
    pos = 0
    for per_part in key_lists:
        out.append(_merge(flat[pos : pos + len(per_part)], threshold))
        pos += len(per_part)
    return out


async def trim(r: Any, cutoff_ms: float) -> int:
    """Drop members registered before ``cutoff_ms`` from every audience set; return how many."""
    names = await all_keys(r)
    removed = 0
    for lo in range(0, len(names), TRIM_CHUNK):
        async with r.pipeline(transaction=False) as pipe:
            for name in names[lo : lo + TRIM_CHUNK]:
                pipe.zremrangebyscore(name, "-inf", f"({cutoff_ms}")
            removed += sum(int(x) for x in await pipe.execute())
    return removed
