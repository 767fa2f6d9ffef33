"""Candidate generation and diversity for the feed ranking (pure numpy, no I/O).

A user's *candidate brands* (:func:`candidate_brands`) are the catalogues that feed them.
Candidate generation picks, per user, the items worth scoring from several sources, the way
two-stage recommenders do (Covington, Adams, Sargin: "Deep Neural Networks for YouTube
Recommendations", RecSys 2016: candidate generation, then ranking):

* **fresh**: items of the user's candidate brands published (or, without a publication time,
  added to the catalogue) within ``fresh_hours`` before the user's reference time (their last
  event); items newer than the reference time are fresh too;
* **trending**: the ``trending_k`` items with the highest time-decayed click counts per brand
  (the ``fp:trending:{brand}:{epoch}`` zsets the click path maintains);
* **affinity**: items sharing a category or a topic with the user's ``top_affinities``
  strongest categories/topics (ties at the cut kept: :func:`top_columns`);
* **coread**: items read after the user's recent reads by other readers (a positive
  :func:`feedpipe.model.signals.coread_scores`; item-to-item co-reads, Linden, Smith, York,
  IEEE Internet Computing 2003).

:func:`feedpipe.rank.rankers.rank_users` scores only the candidates (the pipeline's click path
passes :class:`CandidateInputs`); each feed item carries the names of its sources (``sources``).

Items the user already read are excluded from every source. An item can come from several
sources; :func:`sources_of` names them (the feed item's explanation carries them).

Diversity (:func:`diversify`): the top ``k`` of a ranked list with at most ``per_category``
items of any one primary category (the first category of the item), filled greedily in score
order, then, when the caps leave fewer than ``k`` items, topped up with the best capped-out
items so a feed is never shorter than its candidates allow (the "maximal marginal relevance"
idea reduced to a hard cap: Carbonell, Goldstein, SIGIR 1998).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from feedpipe.model.units import HOUR_MS
from feedpipe.topology import CandidatesSpec as CandidateSpec
from feedpipe.topology import RankingSpec

FRESH: int = 1
"""Source bit: the item is fresh."""
TRENDING: int = 2
"""Source bit: the item is in its brand's trending list."""
AFFINITY: int = 4
"""Source bit: the item shares a label with the user's top affinities."""
COREAD: int = 8
"""Source bit: the item was co-read after one of the user's recent reads."""
SOURCE_NAMES: dict[int, str] = {FRESH: "fresh", TRENDING: "trending", AFFINITY: "affinity",
                                COREAD: "coread"}
"""Source bit -> name, in the order :func:`sources_of` lists them."""

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CandidateInputs:
    """What candidate generation needs besides the catalogue and the profiles.

    Attributes:
        spec: windows and sizes (``ranking.candidates`` of topology.yaml).
        trending: brand -> content ids of its trending list, best first (the worker reads
            the top ``spec.trending_k`` of ``fp:trending:{brand}:{epoch}``, current epoch).
    """

    spec: CandidateSpec
    trending: Mapping[str, Sequence[str]]


def candidate_brands(profile: Mapping[str, Any], spec: RankingSpec) -> list[str]:
    """Brands whose catalogue feeds this user, sorted: the brands of the items they clicked
    (``profile["brands"]`` counts > 0), else ``[spec.default_brand]``."""
    brands = sorted(b for b, n in profile.get("brands", {}).items() if n > 0)
    return brands or [spec.default_brand]


def top_columns(shares: FloatArray, n: int) -> BoolArray:
    """(m, C) bool: for each row of ``shares`` (m users x C categories or topics), the columns
    whose strictly positive value is at least the row's ``n``-th largest value: the ``n``
    largest, plus every column tied with the ``n``-th (so the choice never depends on column
    order; :func:`top_labels_with_ties` is the same rule on a mapping)."""
    m, c = shares.shape
    if n <= 0 or c == 0 or m == 0:
        return np.zeros((m, c), dtype=bool)
    k = min(n, c)
    kth = -np.partition(-shares, k - 1, axis=1)[:, k - 1]
    return columns_at_least(shares, kth)


def columns_at_least(shares: FloatArray, kth: FloatArray) -> BoolArray:
    """(m, C) bool: the strictly positive values of ``shares`` (m x C) at least their row's cut
    ``kth`` (m,)."""
    return (shares >= kth[:, None]) & (shares > 0)


def kth_share(values: Mapping[str, float], n: int) -> float:
    """The ``n``-th largest value of ``values`` (its smallest when it has fewer; +inf when
    empty or ``n`` <= 0, so nothing passes ``>=``)."""
    if n <= 0 or not values:
        return math.inf
    ranked = sorted(values.values(), reverse=True)
    return ranked[min(n, len(ranked)) - 1]


def top_labels_with_ties(values: Mapping[str, float], n: int) -> set[str]:
    """Labels whose strictly positive value is at least the ``n``-th largest value (ties at the
    cut all kept): :func:`top_columns` for one user's shares as a mapping."""
    kth = kth_share(values, n)
    return {lab for lab, v in values.items() if v > 0 and v >= kth}


def candidate_sources(
    *,
    item_cat: FloatArray,
    item_topic: FloatArray,
    published_ms: FloatArray,
    allowed: BoolArray,
    share_cat: FloatArray,
    share_topic: FloatArray,
    ref_ms: FloatArray,
    trending_rows: Sequence[int],
    spec: CandidateSpec,
    kth_cat: FloatArray | None = None,
    kth_topic: FloatArray | None = None,
    slots: tuple[IntArray, IntArray] | None = None,
    coread: FloatArray | None = None,
) -> IntArray:
    """Per user and item, the bit set of the sources that propose the item (0 = not a candidate).

    Args:
        item_cat / item_topic: (n items x C) / (n x T) one-hot matrices of the catalogue
            (:class:`feedpipe.model.item.CandidateMatrix` ``cat`` / ``topic``).
        published_ms: (n,) publication (or catalogue entry) times in ms; NaN: never fresh.
        allowed: (m users x n) items the user may see: candidate brands, not already read.
        share_cat / share_topic: (m x C) / (m x T) the users' normalised affinity shares.
        ref_ms: (m,) each user's reference time in ms (their last event).
        trending_rows: catalogue rows of the trending items (the top ``trending_k`` of each
            brand, already cut).
        spec: windows and sizes.
        kth_cat / kth_topic: (m,) each user's ``top_affinities``-th largest share over *all*
            their labels (:func:`kth_share`), when some of their labels are not columns of
            the catalogue; None: taken from ``share_cat`` / ``share_topic``
            (:func:`top_columns`).
        slots: :attr:`feedpipe.model.item.CandidateMatrix.slots` (the same result,
            O(m n) gathers instead of (m x C) @ (C x n) products); None: the products.
        coread: (m x n) co-read scores (:func:`feedpipe.model.signals.coread_scores`); > 0
            proposes the item (:data:`COREAD`). None: no co-read source.

    Returns:
        (m, n) int64 of :data:`FRESH` | :data:`TRENDING` | :data:`AFFINITY` | :data:`COREAD`
        bits, 0 where the item is not allowed.
    """
    m, n = allowed.shape
    if n == 0:
        return np.zeros((m, n), dtype=np.int64)
    # bits built in one byte per (user, item): a quarter of the memory traffic of int64
    with np.errstate(invalid="ignore"):
        age_h = (ref_ms[:, None] - published_ms[None, :]) / HOUR_MS
        out = ((age_h <= spec.fresh_hours) & ~np.isnan(age_h)).view(np.uint8) * np.uint8(FRESH)
    if len(trending_rows):
        trend = np.zeros(n, dtype=np.uint8)
        trend[np.asarray(trending_rows, dtype=np.int64)] = TRENDING
        out |= trend[None, :]
    top_cat = (
        top_columns(share_cat, spec.top_affinities)
        if kth_cat is None
        else columns_at_least(share_cat, kth_cat)
    )
    top_topic = (
        top_columns(share_topic, spec.top_affinities)
        if kth_topic is None
        else columns_at_least(share_topic, kth_topic)
    )
    if slots is None:
        matches = ((top_cat.astype(np.float64) @ item_cat.T > 0)
                   | (top_topic.astype(np.float64) @ item_topic.T > 0))
    else:  # the same test by gathering each item's few label columns
        matches = label_any(top_cat, slots[0]) | label_any(top_topic, slots[1])
    out |= matches.view(np.uint8) * np.uint8(AFFINITY)
    if coread is not None:
        out |= (coread > 0).view(np.uint8) * np.uint8(COREAD)
    out *= allowed.view(np.uint8)
    return out.astype(np.int64)


def label_sums(shares: FloatArray, slots: IntArray) -> FloatArray:
    """(m, n): per user row of ``shares`` (m x L) and item, the sum of the user's values over
    the item's labels (``slots`` from :func:`feedpipe.model.item.label_slots`):
    ``shares @ onehot.T`` for a 0/1 ``onehot``, in O(m n K) gathers instead of an
    (m x L) @ (L x n) product."""
    m = shares.shape[0]
    ext = np.concatenate([shares, np.zeros((m, 1), dtype=shares.dtype)], axis=1)
    # np.take along the columns: the same gathers as ext[:, idx], ~4x less CPU for a few users
    out = np.take(ext, np.ascontiguousarray(slots[:, 0]), axis=1)
    for k in range(1, slots.shape[1]):
        out += np.take(ext, np.ascontiguousarray(slots[:, k]), axis=1)
    return out


def label_any(flags: BoolArray, slots: IntArray) -> BoolArray:
    """(m, n): per user row of ``flags`` (m x L bool) and item, whether one of the item's
    labels (``slots``, :func:`feedpipe.model.item.label_slots`) is flagged: ``label_sums(flags)
    > 0`` on one byte per value instead of eight."""
    m = flags.shape[0]
    ext = np.concatenate([flags, np.zeros((m, 1), dtype=bool)], axis=1)
    out = np.take(ext, np.ascontiguousarray(slots[:, 0]), axis=1)
    for k in range(1, slots.shape[1]):
        out |= np.take(ext, np.ascontiguousarray(slots[:, k]), axis=1)
    return out


def sources_of(bits: int) -> list[str]:
    """Names of the sources in a bit set of :func:`candidate_sources` (stable order)."""
    return [name for bit, name in SOURCE_NAMES.items() if bits & bit]


def trending_rows(
    index: Mapping[str, int], trending: Mapping[str, Sequence[str]], k: int
) -> list[int]:
    """Catalogue rows of the first ``k`` ids of each brand's trending list (ids not in the
    catalogue, e.g. unpublished since, are skipped)."""
    rows: list[int] = []
    for ids in trending.values():
        for cid in ids[:k]:
            i = index.get(cid)
            if i is not None:
                rows.append(i)
    return rows


def primary_codes(primary: Iterable[str | None]) -> list[int]:
    """Integer codes of primary-category labels for :func:`diversify`: one code per distinct
    label (0, 1, ... in order of first appearance), -1 for None (no category)."""
    codes: dict[str, int] = {}
    return [-1 if p is None else codes.setdefault(p, len(codes)) for p in primary]


def diversify(order: Sequence[int], primary: Sequence[int], k: int, per_category: int) -> list[int]:
    """The first ``k`` items of ``order`` with at most ``per_category`` per primary category.

    Args:
        order: candidate rows, best first.
        primary: primary category code of every catalogue row (-1 = none; never capped).
        k: feed size.
        per_category: cap per category; 0 or less disables the cap.

    Returns:
        Up to ``k`` rows: the capped selection in score order, then (only when it has fewer
        than ``k``) the best capped-out rows appended in score order.
    """
    if per_category <= 0:
        return list(order[:k])
    counts: dict[int, int] = {}
    picked: list[int] = []
    spill: list[int] = []
    for row in order:
        if len(picked) == k:
            break
        c = primary[row]
        if c >= 0 and counts.get(c, 0) >= per_category:
            if len(spill) < k:
                spill.append(row)
            continue
        counts[c] = counts.get(c, 0) + 1
        picked.append(row)
    if len(picked) < k:
        picked.extend(spill[: k - len(picked)])
    return picked

