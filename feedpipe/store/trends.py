"""Storage of the ``trend_windows`` family: the learned ranker's trending-window sums per item
(docs/redis-keys.md; the maths in :mod:`feedpipe.model.signals`).

Sharded by reader.events partition like the item stats (feedpipe/store/keys.py): a batch of
partition N writes shard N inside its partition transaction (:func:`queue_trends`: one
HINCRBYFLOAT_MANY script call per epoch hash, queued on the caller's MULTI with the offset
watermark, so a redelivered batch never counts twice, on one Redis Cluster slot). Sums of one
epoch share its landmark, so the reader adds the shards up. Reader: the click path's catalogue
(:func:`read_trends`, with the item stats).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feedpipe.model.signals import TREND_EPOCH_MS, Trend, TrendSums
from feedpipe.store import scripts
from feedpipe.store.keys import keys

FIELDS: tuple[str, ...] = ("c1", "i1", "c24", "i24")
"""Hash field suffixes, in :data:`feedpipe.model.signals.Trend` order."""

TTL_S = int(3 * TREND_EPOCH_MS // 1000)
"""Seconds an epoch hash lives after its last write (three epochs: reads use two)."""


def queue_trends(pipe: Any, partition: int, deltas: Mapping[str, Trend]) -> None:
    """Queue a batch's trending-window increments (content_id -> epoch -> 4 sums, built with
    :func:`feedpipe.model.signals.trend_add`) on ``partition``'s shard: one script call per
    epoch, fields in sorted order."""
    if not deltas:
        return
    k = keys()
    by_epoch: dict[int, list[str]] = {}
    for cid in sorted(deltas):
        for epoch, sums in deltas[cid].items():
            args = by_epoch.setdefault(epoch, [])
            for name, v in zip(FIELDS, sums, strict=True):
                if v:
                    args += [f"{cid}:{name}", repr(float(v))]
    for epoch in sorted(by_epoch):
        if by_epoch[epoch]:
            pipe.eval(scripts.HINCRBYFLOAT_MANY, 1, k.trend_windows(epoch, partition), TTL_S,
                      *by_epoch[epoch])


async def read_trends(r: Any, ids: Sequence[str], now_ms: float) -> TrendSums:
    """Sums of ``ids`` over the shards for the epoch of ``now_ms`` and the one before:
    epoch -> (len(ids), 4) array (0 where missing). One pipeline of an HMGET per shard and
    epoch."""
    k = keys()
    cur = int(now_ms // TREND_EPOCH_MS)
    epochs = (cur - 1, cur)
    out: TrendSums = {e: np.zeros((len(ids), 4)) for e in epochs}
    if not ids:
        return out
    fields = [f"{cid}:{name}" for cid in ids for name in FIELDS]
    async with r.pipeline(transaction=False) as pipe:
        for e in epochs:
            for p in k.partitions():
                pipe.hmget(k.trend_windows(e, p), fields)
        replies = await pipe.execute()
    n_parts = len(k.partitions())
    for j, got in enumerate(replies):
        vals = np.array([float(v) if v is not None else 0.0 for v in got], dtype=float)
        out[epochs[j // n_parts]] += vals.reshape(len(ids), 4)
    return out
