"""A ranked feed in columns: what the click path's ranker hands to the feed codecs.

:func:`feedpipe.rank.rankers.rank_feeds` returns one :class:`RankedFeed` per user; the Redis
feed value (:func:`feedpipe.store.feeds.encode_feed`), the feeds.updated record
(:func:`feedpipe.wire.user_feed.user_feed_record`) and the feed's fingerprint
(:func:`streams.clickpath.catalogue.feed_fingerprint`) are built from its columns with numpy
array operations. The per-item dict form (the read endpoint's explanation, the reference
ranker's shape) is produced only when a reader iterates the feed (it is a ``Sequence`` of
those dicts, built once on first use).

Columns (k items, rank order): ``ids`` (content ids), ``rows`` (candidate matrix rows, int),
``scores`` (float64), ``features`` ((k, len(names)) float64, one column per name of
``names``; 0.0 where the item's ranker has no such feature), ``serving_of`` (per item, the
index of its :class:`Serving` in ``servings``: brand, ranker, weight set, version, arm,
experiment, weight values), ``bits`` (candidate source bits, int64, or None without
candidate generation) with ``sources`` (per item the source names, lists shared per bit set)
and ``digests`` (the ids as raw 32-byte SHA-256 digests when every id is 64 lowercase hex
digits, else ``b""``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Serving:
    """What served a group of a feed's items: their ``brand``, the weight set's ``ranker``,
    ``weight_set`` name, ``weight_version``, A/B ``arm`` and ``experiment`` (None outside
    experiments), the weight values ``weights`` (one mapping shared by every feed the set
    ranks) and the ranker's feature ``names`` in item order."""

    brand: str
    ranker: str
    weight_set: str
    weight_version: int
    arm: str | None
    experiment: str | None
    weights: dict[str, float]
    names: tuple[str, ...]

    def tail(self) -> dict[str, Any]:
        """The serving's fields as they close a feed item dict (same keys, same order)."""
        return {"weights": self.weights, "ranker": self.ranker, "weight_set": self.weight_set,
                "weight_version": self.weight_version, "arm": self.arm,
                "experiment": self.experiment}


class RankedFeed(Sequence[dict[str, Any]]):
    """One user's ranked feed as columns (module docstring); indexing or iterating it gives
    the item dicts of :func:`feedpipe.rank.rankers.rank_users` (``content_id``, ``brand``,
    ``rank``, ``score``, the serving ranker's features, ``sources`` when candidate generation
    ran, then :meth:`Serving.tail`)."""

    __slots__ = ("_dicts", "bits", "digests", "features", "ids", "names", "rows", "scores",
                 "serving_of", "servings", "sources")

    def __init__(self, ids: list[str], rows: npt.NDArray[np.intp], scores: Floats,
                 names: tuple[str, ...], features: Floats, servings: list[Serving],
                 serving_of: Ints, bits: Ints | None, sources: list[list[str]] | None,
                 digests: bytes) -> None:
        self.ids = ids
        self.rows = rows
        self.scores = scores
        self.names = names
        self.features = features
        self.servings = servings
        self.serving_of = serving_of
        self.bits = bits
        self.sources = sources
        self.digests = digests
        self._dicts: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self.dicts()[i]

    def first_ranker(self) -> str | None:
        """The ranker of the first item (None for an empty feed)."""
        return self.servings[int(self.serving_of[0])].ranker if len(self.ids) else None

    def column(self, name: str) -> Floats:
        """The (k,) values of feature ``name`` (zeros when no serving has it)."""
        if name in self.names:
            return self.features[:, self.names.index(name)]
        return np.zeros(len(self.ids))

    def first_seen(self) -> list[int]:
        """Indices into ``servings`` in the order their first item appears."""
        if len(self.servings) == 1:
            return [0] if len(self.ids) else []
        uniq, first = np.unique(self.serving_of, return_index=True)
        return uniq[np.argsort(first)].tolist()

    def dicts(self) -> list[dict[str, Any]]:
        """The item dicts (built once)."""
        if self._dicts is None:
            self._dicts = self._build()
        return self._dicts

    def _build(self) -> list[dict[str, Any]]:
        pos = {name: j for j, name in enumerate(self.names)}
        tails = [s.tail() for s in self.servings]
        cols = [[pos[n] for n in s.names] for s in self.servings]
        feats = self.features.tolist()
        sources = self.sources
        out: list[dict[str, Any]] = []
        for j, (cid, g, sc) in enumerate(zip(self.ids, self.serving_of.tolist(),
                                             self.scores.tolist(), strict=True)):
            s = self.servings[g]
            row = feats[j]
            item: dict[str, Any] = {"content_id": cid, "brand": s.brand, "rank": j + 1,
                                    "score": sc}
            item.update(zip(s.names, [row[c] for c in cols[g]], strict=True))
            if sources is not None:
                item["sources"] = sources[j]
            item.update(tails[g])
            out.append(item)
        return out


def feed_ids(items: Sequence[dict[str, Any]]) -> list[str]:
    """The content ids of a feed's items in rank order (a :class:`RankedFeed`'s column, or
    each dict's ``content_id``)."""
    if isinstance(items, RankedFeed):
        return items.ids
    return [it["content_id"] for it in items]
