"""The pure-Python reference ranker (no numpy, no I/O).

:func:`rank` scores one user's candidates item by item with the ``affinity`` ranker's formula.
The pipeline ranks with :func:`feedpipe.rank.rankers.rank_users` (numpy, many users at once,
both named rankers); the unit tests check that the two agree, so this module is written for
clarity, not speed, and shares no scoring code with the vectorised one.

Formula (the ``affinity`` ranker, docs/ranking.md)
    ``score = a * affinity + b * recency + c * engagement``, weights per brand
    (``ranking.weights`` of topology.yaml, :meth:`feedpipe.topology.RankingSpec.weights_for`):

    * affinity in [0, 1] (:func:`item_affinity`): half the share of the user's decayed category
      affinity held by the item's categories, plus half the share of the topic affinity held by
      the item's topics (shares of normalised maps, :func:`feedpipe.model.profile.affinity_at`,
      so the decay factor cancels and "now" does not matter);
    * recency in [0, 1] (:func:`recency`): ``2 ** (-(T - published_at) / H_r)``, T = the
      profile's last_seen, H_r = ``ranking.recency_half_life_hours``; 0 when the item has no
      publication time;
    * engagement in [0, 1) (:func:`engagement`): smoothed click-through rate
      ``ctr = (clicks + alpha) / (impressions + beta)`` (a Beta(alpha, beta - alpha) prior,
      alpha = ``engagement_prior_clicks``, beta = ``engagement_prior_impressions``), mapped
      through ``ctr / (ctr + alpha/beta)`` so an item at the prior mean scores 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from feedpipe.model.item import Meta
from feedpipe.model.profile import affinity_at
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.candidates import (
    CandidateInputs,
    diversify,
    primary_codes,
    top_labels_with_ties,
)
from feedpipe.topology import RankingSpec, Weights


def engagement(clicks: float, impressions: float, spec: RankingSpec) -> float:
    """Engagement component in [0, 1): the smoothed CTR of the module docstring.

    Args:
        clicks, impressions: the item's live counts (>= 0).
        spec: topology ``ranking`` (the prior ``engagement_prior_clicks`` alpha and
            ``engagement_prior_impressions`` beta > 0).
    """
    a = spec.engagement_prior_clicks
    b = spec.engagement_prior_impressions
    ctr = (clicks + a) / (impressions + b)
    mean = a / b if a > 0 else 1.0 / b
    return ctr / (ctr + mean)


def recency(published_at: int | None, ref_ms: int, spec: RankingSpec) -> float:
    """Recency component in [0, 1]: ``2 ** (-age_h / ranking.recency_half_life_hours)``.

    ``age_h`` is the item's age in hours at ``ref_ms`` (epoch ms), negative ages counting as 0;
    0.0 when ``published_at`` (epoch ms) is None.
    """
    if published_at is None:
        return 0.0
    age_h = max(0.0, (ref_ms - published_at) / HOUR_MS)
    return 2.0 ** (-age_h / spec.recency_half_life_hours)


def item_affinity(
    cat_share: Mapping[str, float], topic_share: Mapping[str, float], meta: Meta
) -> float:
    """Affinity component in [0, 1]: ``0.5 * min(c, 1) + 0.5 * min(t, 1)``.

    ``c`` / ``t``: the sum of the user's normalised category / topic shares
    (:func:`feedpipe.model.profile.affinity_at`) over the item's categories / topics.
    """
    c = math.fsum(cat_share.get(x, 0.0) for x in meta.categories)
    t = math.fsum(topic_share.get(x, 0.0) for x in meta.topics)
    return 0.5 * min(c, 1.0) + 0.5 * min(t, 1.0)


@dataclass(frozen=True, slots=True)
class Scored:
    """One ranked item with its score breakdown.

    Attributes:
        content_id, brand: the item.
        score: ``a * affinity + b * recency + c * engagement``.
        affinity, recency, engagement: the components before weighting (module docstring).
        weights: the brand's weights ``a``, ``b``, ``c``.
    """

    content_id: str
    brand: str
    score: float
    affinity: float
    recency: float
    engagement: float
    weights: Weights


def rank(
    profile: Mapping[str, Any],
    candidates: Sequence[Meta],
    stats: Mapping[str, tuple[int, int]],
    spec: RankingSpec,
    sources: CandidateInputs | None = None,
    added_ms: Mapping[str, float] | None = None,
) -> list[Scored]:
    """Rank ``candidates`` for ``profile``; return the top ``spec.feed_size``.

    Args:
        profile: the user's profile (Redis JSON shape).
        candidates: items of the brands the user reads (already filtered for status).
        stats: content_id -> (impressions, clicks) of live events; missing means (0, 0).
        spec: topology ``ranking`` section.
        sources: candidate generation (:mod:`feedpipe.rank.candidates`); None scores every
            candidate.
        added_ms: content_id -> catalogue entry time (ms), the fresh source's clock for items
            without a publication time.

    With ``sources``, only items proposed by a source are scored: fresh (published, else
    added, at most ``fresh_hours`` before the user's last event), in the first ``trending_k``
    ids of their brand's trending list, or sharing a category / topic with the user's top
    ``top_affinities`` shares (ties at the cut kept).

    Items already read (in ``recent_reads``) are excluded. Order: score descending, then
    content_id ascending, so equal scores rank deterministically; with
    ``ranking.max_per_category`` > 0, at most that many items per primary category (the
    item's first category) are kept, then capped-out items fill the feed if it is short
    (:func:`feedpipe.rank.candidates.diversify`).
    """
    shares = affinity_at(profile, profile.get("last_seen") or 0)
    ref = profile.get("last_seen") or 0
    read = {r["content_id"] for r in profile.get("recent_reads", [])}
    proposed = (
        None if sources is None else _proposed(shares, ref, candidates, sources, added_ms or {})
    )
    out: list[Scored] = []
    for m in candidates:
        if m.content_id in read or (proposed is not None and m.content_id not in proposed):
            continue
        w = spec.weights_for(m.brand)
        imps, clicks = stats.get(m.content_id, (0, 0))
        aff = item_affinity(shares["category"], shares["topic"], m)
        rec = recency(m.published_at, ref, spec)
        eng = engagement(clicks, imps, spec)
        out.append(
            Scored(m.content_id, m.brand, w.a * aff + w.b * rec + w.c * eng, aff, rec, eng, w)
        )
    out.sort(key=lambda s: (-s.score, s.content_id))
    if spec.max_per_category <= 0:
        return out[: spec.feed_size]
    by_id = {m.content_id: m for m in candidates}
    primary = primary_codes(
        cs[0] if (cs := by_id[s.content_id].categories) else None for s in out
    )
    keep = diversify(range(len(out)), primary, spec.feed_size, spec.max_per_category)
    return [out[i] for i in keep]


def _proposed(
    shares: Mapping[str, Mapping[str, float]],
    ref: float,
    candidates: Sequence[Meta],
    sources: CandidateInputs,
    added_ms: Mapping[str, float],
) -> set[str]:
    """Ids of ``candidates`` some candidate source proposes: item by item, the rule
    :func:`feedpipe.rank.candidates.candidate_sources` applies to arrays."""
    spec = sources.spec
    trending = {cid for ids in sources.trending.values() for cid in ids[: spec.trending_k]}
    top_c = top_labels_with_ties(shares["category"], spec.top_affinities)
    top_t = top_labels_with_ties(shares["topic"], spec.top_affinities)
    out: set[str] = set()
    for m in candidates:
        at = m.published_at if m.published_at is not None else added_ms.get(m.content_id)
        fresh = at is not None and (ref - at) / HOUR_MS <= spec.fresh_hours
        if fresh or m.content_id in trending or top_c & set(m.categories) or top_t & set(
            m.topics
        ):
            out.add(m.content_id)
    return out
