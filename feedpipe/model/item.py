"""Content items as the ranking sees them: their features, their live signals, and a catalogue
as dense arrays.

No I/O here: the stages read ``meta`` values and item stats from Redis, call these functions,
and write the results.

* :class:`Meta`: the ranking features of one item (the ``meta`` Redis value).
* Item signals (click path): :func:`add_item_signal` counts a batch's live impressions and
  clicks per item and adds each click's forward-decayed weight to its brand's trending list
  (:func:`trending_weight`).
* :class:`CandidateMatrix`: a catalogue's items as numpy arrays, the input of the vectorised
  rankers (:func:`feedpipe.rank.rankers.rank_users`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from feedpipe.model.interest import TextIndex, text_index
from feedpipe.model.text import from_json, to_json


@dataclass(frozen=True, slots=True)
class Meta:
    """Ranking features of a content item (the ``meta`` Redis value).

    Attributes:
        content_id: sha256 hex id.
        brand: the item's brand.
        categories: brand taxonomy categories; the first is the item's *primary* category.
        topics: topic labels (categories, subcategories, tags as slugs).
        published_at: epoch ms UTC, or None when the source gives none.
        text: the item's text vector (:func:`feedpipe.model.text.encode` at enrichment) as
            ``(hashed term, weight)`` pairs; ``()`` when unknown. Stored as ``"text"``:
            :func:`feedpipe.model.text.to_json` form, omitted when empty.
    """

    content_id: str
    brand: str
    categories: tuple[str, ...]
    topics: tuple[str, ...]
    published_at: int | None
    text: tuple[tuple[int, float], ...] = ()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Meta:
        """Build from the stored JSON mapping (keys as the attribute names).

        Raises:
            KeyError: ``content_id``, ``brand``, ``categories`` or ``topics`` missing.
            ValueError: ``text`` is not a list of ``[index, weight]`` pairs.
        """
        return cls(
            d["content_id"],
            d["brand"],
            tuple(d["categories"]),
            tuple(d["topics"]),
            d.get("published_at"),
            tuple(from_json(d.get("text")).items()),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON mapping stored in Redis (the inverse of :meth:`from_json`)."""
        return {
            "content_id": self.content_id,
            "brand": self.brand,
            "categories": list(self.categories),
            "topics": list(self.topics),
            "published_at": self.published_at,
            **({"text": to_json(dict(self.text))} if self.text else {}),
        }


def trending_weight(at_ms: int, epoch: int, epoch_ms: float, half_life_ms: float) -> float:
    """Forward-decay weight of a click at ``at_ms`` (epoch ms) in trending ``epoch``.

    The epoch's landmark L is its start, ``epoch * epoch_ms`` (ms); the weight is
    ``2 ** ((at_ms - L) / half_life_ms)``, in [1, 2 ** (epoch_ms / half_life_ms)) for a click
    inside the epoch. Forward decay as for profiles (Cormode, Shkapenyuk, Srivastava, Xu:
    "Forward Decay: A Practical Time Decay Model for Streaming Systems", ICDE 2009): summing
    weights ranks items by their exponentially decayed click counts at any later time.
    """
    return float(2.0 ** ((at_ms - epoch * epoch_ms) / half_life_ms))


def add_item_signal(
    stats: dict[str, list[int]],
    trending: dict[tuple[str, int], dict[str, float]],
    kind: str,
    content_id: str,
    at_ms: int,
    meta: Meta | None,
    epoch_ms: float,
    half_life_ms: float,
) -> None:
    """Count one live impression or click into a batch's item signals, in place.

    Args:
        stats: content id -> [impressions, clicks]; a ``defaultdict(lambda: [0, 0])``.
        trending: (brand, epoch) -> content id -> summed click weight; a defaultdict of
            ``defaultdict(float)``.
        kind: ``impression``; anything else counts as a click.
        content_id: the item.
        at_ms: event time, epoch ms.
        meta: the item's features, None when it is not materialised yet (the click is
            counted, but has no brand to trend in).
        epoch_ms: length of a trending epoch (ms); the click's epoch is
            ``floor(at_ms / epoch_ms)``.
        half_life_ms: trending half-life (ms), see :func:`trending_weight`.
    """
    if kind == "impression":
        stats[content_id][0] += 1
        return
    stats[content_id][1] += 1
    if meta is not None:
        epoch = math.floor(at_ms / epoch_ms)
        trending[(meta.brand, epoch)][content_id] += trending_weight(
            at_ms, epoch, epoch_ms, half_life_ms
        )


class CandidateMatrix:
    """The items of a catalogue as dense numpy arrays, for ranking many users at once.

    Rows are the items sorted by content id (so a row order is a content-id order). Built once
    per catalogue version (the click path caches it). Memory: n_items x (n_categories +
    n_topics) float64, about 7 MB for the 2,000-item MIND sample; the one-hot matrices grow
    with the catalogue, so a catalogue of ~10^5 items would need a sparse layout.

    Args:
        metas: the catalogue's items.
        added_ms: content_id -> when the item entered the catalogue (epoch ms, the
            ``fp:catalogue:{brand}`` score); only used for items without a publication time.

    Attributes:
        metas: the items, sorted by content id (row order); ``index``: content id -> row.
        cat, topic: (n, C) and (n, T) float64 one-hot labels (C, T >= 1: one zero column when
            the catalogue has no label of that kind); ``cat_index`` / ``topic_index``: label ->
            column.
        brands: (n,) object array of brands.
        primary: per row, the column of the item's primary (first) category, -1 without one
            (the diversity cap's key, :func:`feedpipe.rank.candidates.diversify`).
        published: (n,) publication time, epoch ms, NaN when unknown.
        fresh_at: (n,) the publication time, else the catalogue entry time, else NaN: the
            time the *fresh* candidate source measures age from
            (:func:`feedpipe.rank.candidates.candidate_sources`).
        text: the items' text vectors indexed by term
            (:func:`feedpipe.model.interest.text_index`; columns = rows of this matrix), built
            at first use.
    """

    def __init__(self, metas: Sequence[Meta], added_ms: Mapping[str, float] | None = None) -> None:
        self.metas = sorted(metas, key=lambda m: m.content_id)
        self.index = {m.content_id: i for i, m in enumerate(self.metas)}
        cats = sorted({c for m in self.metas for c in m.categories})
        tops = sorted({t for m in self.metas for t in m.topics})
        self.cat_index = {c: i for i, c in enumerate(cats)}
        self.topic_index = {t: i for i, t in enumerate(tops)}
        n = len(self.metas)
        self.cat = np.zeros((n, max(1, len(cats))))
        self.topic = np.zeros((n, max(1, len(tops))))
        for i, m in enumerate(self.metas):
            for c in m.categories:
                self.cat[i, self.cat_index[c]] = 1.0
            for t in m.topics:
                self.topic[i, self.topic_index[t]] = 1.0
        self.brands = np.array([m.brand for m in self.metas], dtype=object)
        self.primary: list[int] = [
            self.cat_index[m.categories[0]] if m.categories else -1 for m in self.metas
        ]
        self.published = np.array(
            [np.nan if m.published_at is None else float(m.published_at) for m in self.metas]
        )
        added = added_ms or {}
        self.fresh_at = np.array(
            [
                float(m.published_at)
                if m.published_at is not None
                else float(added.get(m.content_id, np.nan))
                for m in self.metas
            ]
        )

    @cached_property
    def slots(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """:func:`label_slots` of :attr:`cat` and :attr:`topic` (each item's few label
        columns, for the gathers of :func:`feedpipe.rank.candidates.label_sums`), built at
        first use."""
        return label_slots(self.cat), label_slots(self.topic)

    @cached_property
    def text(self) -> TextIndex:
        """The items' text vectors by term (see the class docstring)."""
        return text_index([dict(m.text) for m in self.metas])

    def __len__(self) -> int:
        return len(self.metas)


def label_slots(onehot: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """(n, K) int: the label columns of each row of a one-hot (n x L) label matrix
    (:class:`CandidateMatrix` ``cat`` / ``topic``), K = the most labels
    of any row, padded with L (a column of zeros in :func:`feedpipe.rank.candidates.label_sums`)."""
    n, width = onehot.shape
    counts = (onehot != 0).sum(axis=1)
    k = max(1, int(counts.max())) if n else 1
    out = np.full((n, k), width, dtype=np.int64)
    rows, cols = np.nonzero(onehot)
    pos = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, pos] = cols
    return out
