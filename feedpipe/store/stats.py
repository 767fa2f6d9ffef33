"""Storage of the item-signal families: ``stats``, ``stats_version``, ``trending``,
``trending_epoch``, ``ab``, ``ab_experiments`` (docs/redis-keys.md).

Writer: the click path, inside its partition transaction (:func:`queue_signals`,
:func:`queue_ab`: commands queued on the caller's MULTI, applied with the offset watermark, so
a redelivered batch never counts twice). Readers: the click path's catalogue
(:func:`read_stats`, :func:`read_trending`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from feedpipe.store import scripts
from feedpipe.store.keys import keys

STATS_READ_CHUNK = 5000
"""Items per STATS_READ script call."""


def queue_signals(
    pipe: Any,
    stats: Mapping[str, Sequence[int]],
    trending: Mapping[tuple[str, int], Mapping[str, float]],
) -> None:
    """Queue the item stats (content_id -> [impressions, clicks]: one STATS_INCR call) and the
    trending increments ((brand, epoch) -> content_id -> weight: one ZINCR_MANY call per
    epoch zset, the brand's newest epoch moved forward by SET_MAX); bump ``stats_version`` when
    stats moved."""
    k = keys()
    if stats:
        ids = sorted(stats)
        pipe.eval(
            scripts.STATS_INCR,
            len(ids),
            *[k.stats(c) for c in ids],
            *[n for c in ids for n in stats[c]],
        )
    for (brand, epoch), scores in trending.items():
        members = sorted(scores)
        pipe.eval(
            scripts.ZINCR_MANY,
            1,
            k.trending(brand, epoch),
            *[x for c in members for x in (repr(scores[c]), c)],
        )
        pipe.eval(scripts.SET_MAX, 1, k.trending_epoch(brand), epoch)
    if stats:
        pipe.incr(k.stats_version())


def queue_ab(pipe: Any, ab: Mapping[str, Mapping[str, int]]) -> None:
    """Queue the A/B counters (experiment -> {"{arm}:impressions" | "{arm}:clicks": n})."""
    if not ab:
        return
    k = keys()
    pipe.sadd(k.ab_experiments(), *sorted(ab))
    for exp_name, fields in sorted(ab.items()):
        for fld, n in sorted(fields.items()):
            pipe.hincrby(k.ab(exp_name), fld, n)


async def read_stats(r: Any, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """content_id -> (impressions, clicks) of ``ids`` (0 when missing), one STATS_READ call per
    :data:`STATS_READ_CHUNK` items."""
    k = keys()
    flat: list[Any] = []
    for lo in range(0, len(ids), STATS_READ_CHUNK):
        part = ids[lo : lo + STATS_READ_CHUNK]
        flat += await r.eval(scripts.STATS_READ, len(part), *[k.stats(i) for i in part])
    return {i: (int(flat[2 * n] or 0), int(flat[2 * n + 1] or 0)) for n, i in enumerate(ids)}


async def read_trending(r: Any, brands: Sequence[str], top: int) -> dict[str, list[str]]:
    """brand -> the ``top`` ids of its newest trending epoch, best first (brands without one
    are left out)."""
    if top <= 0 or not brands:
        return {}
    k = keys()
    epochs = await r.mget([k.trending_epoch(b) for b in brands])
    out: dict[str, list[str]] = {}
    for brand, epoch in zip(brands, epochs, strict=True):
        if epoch is not None:
            got = await r.zrevrange(k.trending(brand, int(epoch)), 0, top - 1)
            out[brand] = [x.decode() if isinstance(x, bytes) else str(x) for x in got]
    return out
