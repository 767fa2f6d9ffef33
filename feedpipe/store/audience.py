"""Storage of the ``audience`` family: ``fp:audience:{brand}:{facet}`` zsets, user_id ->
registration time (wall ms) (docs/redis-keys.md; what is registered: feedpipe/rank/fanout.py).

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


async def all_keys(r: Any) -> list[str]:
    """Every audience zset key (SCAN)."""
    k = keys()
    return [
        x.decode() if isinstance(x, bytes) else str(x)
        async for x in r.scan_iter(match=k.audience("*", "*"), count=1000)
    ]


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


async def sizes(r: Any, key_lists: Sequence[Sequence[str]], threshold: int) -> list[Any]:
    """The AUDIENCE script's reply for each ``[scratch key, facet set keys...]`` list
    (feedpipe.rank.fanout.audience_keys), one pipeline; parse with
    :func:`feedpipe.rank.fanout.parse_audience`."""
    if not key_lists:
        return []
    async with r.pipeline(transaction=False) as pipe:
        for ks in key_lists:
            pipe.eval(scripts.AUDIENCE, len(ks), *ks, threshold)
        return list(await pipe.execute())


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
