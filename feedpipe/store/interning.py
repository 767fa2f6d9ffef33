"""Item interning: a catalogue-wide ordinal (uint32) per content id, kept in Redis.

Compact feeds and profiles (feedpipe/store/feeds.py, feedpipe/store/profiles.py) store a 4-byte
ordinal instead of a 64-hex sha256 content id (32 bytes even raw). The table lives in three
keys (docs/redis-keys.md):

* ``fp:item:ord`` hash content_id -> ordinal (decimal), ``fp:item:id`` hash ordinal -> content_id;
* ``fp:item:gen`` the table's *generation*, a random uint32 set when the first ordinal is
  allocated. Ordinals are allocated by one Lua script (:data:`INTERN_LUA`: HGET, else
  ordinal = HLEN of ``fp:item:id`` and HSET both ways), so concurrent workers agree, and an
  ordinal is never reassigned while the table lives.

Every process keeps an in-process copy (:class:`ItemTable`, both directions) that only grows:
the mapping is immutable, so a cached entry stays right as long as the generation is the same.
Stored compact values carry the generation they were written under; readers learn the current
generation in the MGET they already do (the profile or feed read), call :meth:`ItemTable.sync`
(which drops the copy when the table was wiped, e.g. FLUSHDB) and refuse a value of another
generation (its ordinals would name other items). In steady state, interning costs no Redis
round trip: only ids never seen by the process go to Redis (:func:`intern`, :func:`resolve`).

Memory: per *item*, not per user: two hash fields of ~64 + ~8 bytes each
(``bench/bench_memory.py`` prints the table's ``MEMORY USAGE`` per item).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from feedpipe.store import scripts
from feedpipe.store.keys import keys

INTERN_LUA = scripts.INTERN
RESOLVE_LUA = scripts.RESOLVE

MAX_ORDINAL = 2**32 - 1
CACHE_MAX = 4_000_000
"""Cached items before the in-process copy is dropped and refilled (~250 bytes each)."""


class ItemTableError(RuntimeError):
    """The ordinal table changed generation while a batch was using it (it was wiped), or an
    allocated ordinal does not fit in uint32. The caller does not commit: the batch is retried."""


def _gen(raw: Any) -> int | None:
    if raw is None or raw == b"" or raw == "":
        return None
    return int(raw)


class ItemTable:
    """In-process copy of the ordinal table of one Redis (both directions) and its generation.

    ``gen`` is ``None`` until the process has seen the table's generation (or when Redis has
    no table yet). All methods are in-memory; the Redis side is :func:`intern` /
    :func:`resolve` (asyncio) and :func:`intern_sync` / :func:`resolve_sync` (redis-py).
    """

    def __init__(self) -> None:
        self.gen: int | None = None
        self.ords: dict[str, int] = {}
        self.ids: dict[int, str] = {}

    def sync(self, raw_gen: bytes | str | int | None) -> None:
        """Adopt the generation read from ``fp:item:gen`` (raw value; ``None`` when absent);
        drops the cached mapping when it differs from the cached one."""
        gen = _gen(raw_gen)
        if gen != self.gen or len(self.ids) > CACHE_MAX:
            self.ords.clear()
            self.ids.clear()
            self.gen = gen

    def learn(self, ordinals: Sequence[int], ids: Sequence[str]) -> None:
        """Remember ordinal ``ordinals[i]`` <-> ``ids[i]`` (the same generation)."""
        for o, cid in zip(ordinals, ids, strict=True):
            self.ords[cid] = o
            self.ids[o] = cid

    def unknown_ids(self, ids: Iterable[str]) -> list[str]:
        """The distinct ids of ``ids`` without a cached ordinal, sorted."""
        return sorted(set(ids).difference(self.ords))

    def unknown_ordinals(self, ordinals: Iterable[int]) -> list[int]:
        """The distinct ordinals of ``ordinals`` without a cached id, sorted."""
        return sorted(set(ordinals).difference(self.ids))


ITEMS = ItemTable()
"""The process's copy (worker, read endpoint, benchmarks, tests)."""


def _propose() -> str:
    return str(random.SystemRandom().randrange(1, 2**32))


def _adopt(table: ItemTable, ids: Sequence[str], got: Sequence[Any]) -> None:
    gen = _gen(got[0])
    if table.gen is not None and gen != table.gen:
        table.sync(gen)
        raise ItemTableError(f"item table generation moved to {gen} during a batch")
    table.gen = gen
    ords = [int(o) for o in got[1:]]
    if ords and max(ords) > MAX_ORDINAL:
        raise ItemTableError("item ordinal exceeds uint32")
    table.learn(ords, ids)


async def intern(r: Any, ids: Iterable[str], table: ItemTable = ITEMS) -> None:
    """Make sure every id of ``ids`` has a cached ordinal: allocates the unknown ones in Redis
    (one EVAL, none when all are cached). ``r``: a redis.asyncio client.

    Raises:
        ItemTableError: the table's generation is not the cached one (it was wiped after the
            caller's :meth:`ItemTable.sync`); the cache now holds the new generation.
    """
    todo = table.unknown_ids(ids)
    if not todo:
        return
    k = keys()
    got = await r.eval(INTERN_LUA, 3, k.item_ord(), k.item_id(), k.item_gen(), _propose(), *todo)
    _adopt(table, todo, got)


def intern_sync(r: Any, ids: Iterable[str], table: ItemTable = ITEMS) -> None:
    """:func:`intern` with a synchronous redis-py client (benchmarks, tests)."""
    todo = table.unknown_ids(ids)
    if not todo:
        return
    k = keys()
    got = r.eval(INTERN_LUA, 3, k.item_ord(), k.item_id(), k.item_gen(), _propose(), *todo)
    _adopt(table, todo, got)


def _learn_ids(table: ItemTable, todo: Sequence[int], got: Sequence[Any]) -> None:
    gen = _gen(got[0])
    if gen != table.gen:
        table.sync(gen)
        return  # values of the old generation are unreadable anyway (their decoders say so)
    pairs = [(o, v) for o, v in zip(todo, got[1:], strict=True) if v]
    table.learn(
        [o for o, _ in pairs],
        [v.decode() if isinstance(v, bytes) else str(v) for _, v in pairs],
    )


async def resolve(r: Any, ordinals: Iterable[int], table: ItemTable = ITEMS) -> None:
    """Cache the content id of every ordinal of ``ordinals`` (one EVAL reading ``fp:item:id``,
    none when all are cached). Ordinals unknown to Redis stay unknown (the decoder then raises
    its format error). ``r``: a redis.asyncio client."""
    todo = table.unknown_ordinals(ordinals)
    if not todo:
        return
    k = keys()
    _learn_ids(table, todo, await r.eval(RESOLVE_LUA, 2, k.item_id(), k.item_gen(), *todo))


def resolve_sync(r: Any, ordinals: Iterable[int], table: ItemTable = ITEMS) -> None:
    """:func:`resolve` with a synchronous redis-py client (benchmarks, tests)."""
    todo = table.unknown_ordinals(ordinals)
    if not todo:
        return
    k = keys()
    _learn_ids(table, todo, r.eval(RESOLVE_LUA, 2, k.item_id(), k.item_gen(), *todo))
