"""Storage of the ``coreads`` family: item-to-item co-read counts ("read X, then Y") of the
learned ranker's ``coread`` feature and the ``coread`` candidate source (docs/redis-keys.md;
the counting and the score in :mod:`feedpipe.model.signals`, ``coread_add`` /
``coread_scores``, the functions ``feedpipe evaluate`` runs).

Layout: one hash per reader.events partition and trending-window epoch
(``fp:{pN}:coread:{epoch}``, field X -> JSON ``{Y: count}``). A click of partition N's batch
updates shard N of its event's epoch: the click path reads the rows of the batch's prior reads
(:func:`read_state`), the fold runs ``coread_add`` on them (at most
:data:`feedpipe.model.signals.COREAD_NEIGHBOURS` Y per X and shard: bounded memory), and the
changed rows are written in the partition's MULTI/EXEC with its offset watermark
(:func:`queue_coreads`): a redelivered batch never counts twice, a zombie consumer fails on
the watermark's WATCH before writing, and every key of the transaction has the partition's
hash tag (one Redis Cluster slot). A co-read is shared by readers of every partition, so the
reader merges the shards of the current and the previous epoch (:meth:`CoReadState.table`:
counts summed, the :data:`COREAD_NEIGHBOURS` largest kept by ``coread_add``'s eviction rule).
Epoch hashes expire three epochs after their last write, so co-reads older than two weeks
fall away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from feedpipe.model.signals import COREAD_NEIGHBOURS, COREAD_WINDOW, CoReads, coread_scores
from feedpipe.store.keys import keys
from feedpipe.store.trends import TTL_S

Shard = tuple[int, int]
"""(epoch, partition) of one co-read hash."""


@dataclass(slots=True)
class CoReadState:
    """The co-read rows one partition batch reads and updates.

    Attributes:
        partition: the batch's reader.events partition (the shard it writes).
        epochs: the two epochs the ranking reads (previous, current).
        shards: (epoch, partition) -> X -> {Y: count}, the rows read; the fold updates the
            rows of ``partition`` in place with ``coread_add``.
        changed: (epoch, X) of the rows of ``partition`` the fold changed (written back).
    """

    partition: int
    epochs: tuple[int, int]
    shards: dict[Shard, CoReads] = field(default_factory=dict)
    changed: set[tuple[int, str]] = field(default_factory=set)
    _merged: dict[str, dict[str, float]] = field(default_factory=dict)

    def own(self, epoch: int) -> CoReads:
        """The partition's rows of ``epoch`` (created empty when not read)."""
        return self.shards.setdefault((epoch, self.partition), {})

    def table(self, ids: Iterable[str]) -> dict[str, dict[str, float]]:
        """The merged rows of ``ids`` over every shard of :attr:`epochs` (:func:`merge_rows`),
        cached per X: call after the fold's updates."""
        out: dict[str, dict[str, float]] = {}
        for x in ids:
            row = self._merged.get(x)
            if row is None:
                row = self._merged[x] = merge_rows(
                    s.get(x) for (e, _), s in self.shards.items() if e in self.epochs
                )
            if row:
                out[x] = row
        return out


def merge_rows(rows: Iterable[Mapping[str, float] | None],
               neighbours: int = COREAD_NEIGHBOURS) -> dict[str, float]:
    """Counts of several shards' rows of one X summed, the ``neighbours`` largest kept (ties:
    the smaller id; ``coread_add`` evicts the smallest count, ties the largest id)."""
    total: dict[str, float] = {}
    for row in rows:
        for y, n in (row or {}).items():
            total[y] = total.get(y, 0.0) + n
    if len(total) <= neighbours:
        return total
    keep = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:neighbours]
    return dict(keep)


def user_coreads(table: Mapping[str, Mapping[str, float]], reads: Sequence[str],
                 window: int = COREAD_WINDOW) -> dict[str, float]:
    """Co-read score of every neighbour of a reader's recent reads: content id -> ``coread_scores``
    (> 0 only). ``reads``: the reader's reads, oldest first; ``table``: merged rows
    (:meth:`CoReadState.table`). Items outside the result score 0."""
    recent = list(reads[-window:]) if window > 0 else []
    cands = sorted({y for x in recent for y in table.get(x, {})})
    if not cands:
        return {}
    scores = coread_scores(table, recent, cands, window)
    return {c: float(s) for c, s in zip(cands, scores.tolist(), strict=True) if s > 0}


def decode_row(raw: bytes | str | None) -> dict[str, float]:
    """One stored row; an unreadable value reads as an empty row (the next write of X replaces
    it with a valid one)."""
    if raw is None:
        return {}
    try:
        got = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(got, dict):
        return {}
    return {str(y): float(n) for y, n in got.items() if isinstance(n, int | float) and n > 0}


async def read_state(r: Any, partition: int, ids: Sequence[str], write_epochs: Iterable[int],
                     epochs: tuple[int, int], score_ids: Sequence[str] | None = None
                     ) -> CoReadState:
    """The rows a batch of ``partition`` needs: ``ids`` (the rows it may update) from its own
    shard of ``write_epochs`` (the epochs of its clicks), and ``score_ids`` (the rows it ranks
    with; None: ``ids``) from every partition's shard of ``epochs``. One pipeline of an HMGET
    per shard."""
    state = CoReadState(partition, epochs)
    score = list(ids) if score_ids is None else list(score_ids)
    k = keys()
    wanted: dict[Shard, list[str]] = {}
    if score:
        wanted.update({(e, p): score for e in epochs for p in k.partitions()})
    for e in sorted(set(write_epochs)):
        if ids:
            wanted[(e, partition)] = sorted({*ids, *wanted.get((e, partition), [])})
    shards = [sh for sh in wanted if wanted[sh]]
    if not shards:
        return state
    async with r.pipeline(transaction=False) as pipe:
        for e, p in shards:
            pipe.hmget(k.coreads(e, p), wanted[(e, p)])
        replies = await pipe.execute()
    for shard, got in zip(shards, replies, strict=True):
        rows = {x: decode_row(raw) for x, raw in zip(wanted[shard], got, strict=True)
                if raw is not None}
        state.shards[shard] = {x: row for x, row in rows.items() if row}
    return state


def queue_coreads(pipe: Any, state: CoReadState | None) -> None:
    """Queue the changed rows of the batch's partition (HSET of the rows, EXPIRE :data:`TTL_S`
    per epoch hash) and a bump of the partition's ``stats_version``: in the partition
    transaction, before its watermark. The bump tells the idle refreshers of every partition
    (streams/clickpath/refresh.py) that feeds ranked with the previous rows are stale, as
    moved item stats do: a batch of replayed history clicks changes co-reads and no stats."""
    if state is None or not state.changed:
        return
    k = keys()
    pipe.incr(k.stats_version(state.partition))
    by_epoch: dict[int, dict[str, bytes]] = {}
    for e, x in sorted(state.changed):
        # sorted keys: the stored value does not depend on the order counts were added in
        by_epoch.setdefault(e, {})[x] = orjson.dumps(state.own(e).get(x, {}),
                                                     option=orjson.OPT_SORT_KEYS)
    for e in sorted(by_epoch):
        key = k.coreads(e, state.partition)
        pipe.hset(key, mapping=by_epoch[e])
        pipe.expire(key, TTL_S)
