"""Storage of the content families: ``content``, ``meta``, ``catalogue``, ``catalogue_version``,
``celebrity``, ``celebrity_version`` (docs/redis-keys.md).

Writer: the enrich stage (:func:`write_items`, one MULTI/EXEC per batch) and ``feedpipe rebuild``
(:func:`add_celebrities`). Readers: the click path's candidate matrix (:func:`read_catalogue`,
:func:`read_metas`) and the enrich stage's event-time guard (:func:`read_content`).
Guarantees: an item's content, meta, catalogue entry and celebrity membership change in one
transaction with a ``catalogue_version`` bump, so a reader that sees the version sees them all.
The families share the ``{cat}`` hash tag (one Redis Cluster slot, feedpipe/store/keys.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from feedpipe.store.client import mget
from feedpipe.store.keys import keys


@dataclass(frozen=True, slots=True)
class ItemWrite:
    """One item of an enrich batch: ``doc`` is its content JSON (``status`` published or not),
    ``meta`` its ranking features (``feedpipe.model.profile.Meta.to_json``); ``celebrity``:
    True joins the brand's celebrity set, False leaves it, None leaves it as is."""

    content_id: str
    doc: dict[str, Any]
    meta: dict[str, Any] | None
    celebrity: bool | None


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_content(r: Any, ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """The stored content JSON of ``ids`` (None where missing), one MGET."""
    if not ids:
        return []
    k = keys()
    raws = await r.mget([k.content(i) for i in ids])
    return [orjson.loads(raw) if raw else None for raw in raws]


async def celebrity_scores(
    r: Any, items: Sequence[tuple[str, str]]
) -> list[float | None]:
    """The celebrity-set score of each (brand, content_id) (None: not a celebrity), one
    pipeline."""
    if not items:
        return []
    k = keys()
    async with r.pipeline(transaction=False) as pipe:
        for brand, cid in items:
            pipe.zscore(k.celebrity(brand), cid)
        return list(await pipe.execute())


async def write_items(r: Any, items: Sequence[ItemWrite]) -> list[str]:
    """Apply an enrich batch in one MULTI/EXEC; return the ids now published.

    A published item: ``content`` and ``meta`` SET, ZADD to ``catalogue:{brand}`` (score:
    published_at, else enriched_at, epoch ms), celebrity set per ``celebrity``. An unpublished
    one: content and meta deleted, removed from the catalogue and the celebrity set. Each
    celebrity change bumps ``celebrity_version``; the batch bumps ``catalogue_version``.
    """
    if not items:
        return []
    k = keys()
    published: list[str] = []
    async with r.pipeline(transaction=True) as pipe:
        for it in items:
            cid, doc = it.content_id, it.doc
            if doc["status"] != "published":
                pipe.delete(k.content(cid), k.meta(cid))
                pipe.zrem(k.catalogue(doc["brand"]), cid)
                pipe.zrem(k.celebrity(doc["brand"]), cid)
                pipe.incr(k.celebrity_version())
                continue
            assert it.meta is not None, "a published item has its meta"
            at = doc["published_at"] or doc["enriched_at"]
            pipe.set(k.content(cid), orjson.dumps(doc))
            pipe.set(k.meta(cid), orjson.dumps(it.meta))
            pipe.zadd(k.catalogue(doc["brand"]), {cid: at})
            if it.celebrity is True:
                pipe.zadd(k.celebrity(doc["brand"]), {cid: at})
                pipe.incr(k.celebrity_version())
            elif it.celebrity is False:
                pipe.zrem(k.celebrity(doc["brand"]), cid)
                pipe.incr(k.celebrity_version())
            published.append(cid)
        pipe.incr(k.catalogue_version())
        await pipe.execute()
    return published


async def add_celebrities(r: Any, items: Sequence[tuple[str, str, float]]) -> None:
    """ZADD (brand, content_id, score) to the brands' celebrity sets and bump
    ``celebrity_version``, in one MULTI/EXEC."""
    if not items:
        return
    k = keys()
    async with r.pipeline(transaction=True) as pipe:
        for brand, cid, score in items:
            pipe.zadd(k.celebrity(brand), {cid: score})
        pipe.incr(k.celebrity_version())
        await pipe.execute()


async def read_metas(r: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The ranking features (meta JSON) of ``ids`` that are materialised, one MGET."""
    if not ids:
        return {}
    k = keys()
    raws = await r.mget([k.meta(i) for i in ids])
    return {i: orjson.loads(m) for i, m in zip(ids, raws, strict=True) if m}


async def materialised(r: Any, ids: Sequence[str]) -> list[str]:
    """The ids of ``ids`` whose meta exists (the item is materialised), one MGET."""
    if not ids:
        return []
    k = keys()
    raws = await r.mget([k.meta(i) for i in ids])
    return [i for i, m in zip(ids, raws, strict=True) if m]


async def all_metas(r: Any) -> list[dict[str, Any]]:
    """Every stored meta JSON (SCAN, then MGET per 1000 keys; the metas share a slot)."""
    k = keys()
    found = [_as_str(x) async for x in r.scan_iter(match=k.meta("*"), count=1000)]
    out: list[dict[str, Any]] = []
    for lo in range(0, len(found), 1000):
        raws = await r.mget(found[lo : lo + 1000])
        out += [orjson.loads(raw) for raw in raws if raw]
    return out


async def versions(r: Any) -> tuple[int, int, int]:
    """(catalogue_version, stats_version, stats_newest), 0 when unset, in one MGET: the stats
    version is the sum of its shards (:func:`feedpipe.store.stats.stats_version`), the newest
    event time (epoch ms) of the stats the max of theirs (``stats_newest``, written with the
    version bump), so each version comes with the event time it was counted up to."""
    k = keys()
    parts = k.partitions()
    vals = await mget(r, [k.catalogue_version(), *(k.stats_version(p) for p in parts),
                          *(k.stats_newest(p) for p in parts)])
    n = len(parts)
    return (int(vals[0] or 0), sum(int(v or 0) for v in vals[1 : 1 + n]),
            max((int(v or 0) for v in vals[1 + n :]), default=0))


async def brands(r: Any) -> set[str]:
    """The brands with a catalogue zset (SCAN)."""
    k = keys()
    prefix = k.catalogue("")
    version = k.catalogue_version()
    return {
        _as_str(key)[len(prefix) :]
        async for key in r.scan_iter(match=prefix + "*", count=1000)
        if _as_str(key) != version
    }


async def read_catalogue(
    r: Any, brand_names: Iterable[str]
) -> tuple[list[str], dict[str, float], set[str]]:
    """(content ids in brand then score order, id -> catalogue score, celebrity ids) of
    ``brand_names``."""
    k = keys()
    ids: list[str] = []
    added: dict[str, float] = {}
    celebrities: set[str] = set()
    for brand in brand_names:
        got: list[Any] = await r.zrange(k.catalogue(brand), 0, -1, withscores=True)
        for x, at in got:
            ids.append(_as_str(x))
            added[ids[-1]] = float(at)
        celebrities |= {_as_str(x) for x in await r.zrange(k.celebrity(brand), 0, -1)}
    return ids, added, celebrities
