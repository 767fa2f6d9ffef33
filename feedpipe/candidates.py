"""Candidate generation and diversity for the feed ranking (pure numpy, no I/O).

Candidate generation picks, per user, the items worth scoring from several sources, the way
two-stage recommenders do (Covington, Adams, Sargin: "Deep Neural Networks for YouTube
Recommendations", RecSys 2016: candidate generation, then ranking):

* **fresh**: items of the user's candidate brands published within ``fresh_hours`` of the
  user's reference time (their last event);
* **trending**: the ``trending_k`` items with the highest time-decayed click counts per brand
  (the ``fp:trending:{brand}:{epoch}`` zsets the click path maintains);
* **affinity**: items sharing a category or a topic with the user's ``top_affinities``
  strongest categories/topics.

Items the user already read are excluded from every source. An item can come from several
sources; :func:`sources_of` names them (the feed item's explanation carries them).

Diversity (:func:`diversify`): the top ``k`` of a ranked list with at most ``per_category``
items of any one primary category (the first category of the item), filled greedily in score
order, then, when the caps leave fewer than ``k`` items, topped up with the best capped-out
items so a feed is never shorter than its candidates allow (the "maximal marginal relevance"
idea reduced to a hard cap: Carbonell, Goldstein, SIGIR 1998).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HOUR_MS = 3_600_000
FRESH: int = 1
TRENDING: int = 2
AFFINITY: int = 4
SOURCE_NAMES: dict[int, str] = {FRESH: "fresh", TRENDING: "trending", AFFINITY: "affinity"}

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CandidateSpec:
    """Candidate generation and diversity parameters (``ranking.candidates`` in topology.yaml).

    Attributes:
        fresh_hours: freshness window of the *fresh* source, hours before the user's reference
            time (items without a publication time are never fresh).
        trending_k: items taken from the top of each brand's trending list.
        top_affinities: strongest categories and topics (each) of the user whose items are
            candidates.
        per_category: at most this many items of one primary category in a feed (0 = no cap).
    """

    fresh_hours: float = 48.0
    trending_k: int = 50
    top_affinities: int = 5
    per_category: int = 0


def top_columns(shares: FloatArray, n: int) -> BoolArray:
    """(m, C) bool: for each row of ``shares`` (m users x C categories or topics), the ``n``
    largest strictly positive columns (fewer when a row has fewer positive values)."""
    m, c = shares.shape
    out = np.zeros((m, c), dtype=bool)
    if n <= 0 or c == 0:
        return out
    k = min(n, c)
    idx = np.argpartition(-shares, k - 1, axis=1)[:, :k]
    rows = np.arange(m)[:, None]
    out[rows, idx] = True
    return out & (shares > 0)


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
) -> IntArray:
    """Per user and item, the bit set of the sources that propose the item (0 = not a candidate).

    Args:
        item_cat / item_topic: (n items x C) / (n x T) one-hot matrices of the catalogue
            (:class:`feedpipe.ranking.CandidateMatrix` ``cat`` / ``topic``).
        published_ms: (n,) publication times in ms (NaN when unknown).
        allowed: (m users x n) items the user may see: candidate brands, not already read.
        share_cat / share_topic: (m x C) / (m x T) the users' normalised affinity shares.
        ref_ms: (m,) each user's reference time in ms (their last event).
        trending_rows: catalogue rows of the trending items (the top ``trending_k`` of each
            brand, already cut).
        spec: windows and sizes.

    Returns:
        (m, n) int64 of :data:`FRESH` | :data:`TRENDING` | :data:`AFFINITY` bits, 0 where the
        item is not allowed.
    """
    m, n = allowed.shape
    out = np.zeros((m, n), dtype=np.int64)
    if n == 0:
        return out
    with np.errstate(invalid="ignore"):
        age_h = (ref_ms[:, None] - published_ms[None, :]) / HOUR_MS
        fresh = (age_h <= spec.fresh_hours) & ~np.isnan(age_h)
    out |= np.where(fresh, FRESH, 0)
    if len(trending_rows):
        trend = np.zeros(n, dtype=bool)
        trend[np.asarray(trending_rows, dtype=np.int64)] = True
        out |= np.where(trend[None, :], TRENDING, 0)
    top_cat = top_columns(share_cat, spec.top_affinities).astype(np.float64)
    top_topic = top_columns(share_topic, spec.top_affinities).astype(np.float64)
    matches = (top_cat @ item_cat.T > 0) | (top_topic @ item_topic.T > 0)
    out |= np.where(matches, AFFINITY, 0)
    return np.where(allowed, out, 0)


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
