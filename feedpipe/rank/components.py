"""The two named rankers, ``affinity`` and ``editorial``: their score components and the
weighted score (pure numpy, no I/O).

The click path (through :func:`feedpipe.rank.rankers.rank_users`) and the offline evaluation
(:mod:`ops.evaluate`) use these formulas.

How to use (one user, n candidates; every array argument broadcasts, so (m, n) for m users works
the same way)::

    cfg = registry.current().rankers                # or topology().ranker_config()
    name, ws = cfg.for_brand("mind")                # or feedpipe.rank.experiments.resolve(...)
    cands = Candidates(
        affinity=affinity_scores(s_cat, s_top, matrix.cat, matrix.topic),   # (m, n) in [0, 1]
        age_hours=..., clicks=..., impressions=...,                          # (n,)
        category_weight=category_weights(metas, brand, cfg.editorial),     # (n,)
        bias=..., user_bias=...,
    )
    ranked = score(name, ws, cands, topology().ranking, cfg.editorial)
    ranked.score               # (n,) or (m, n)
    ranked.breakdown(i)        # {"score", "ranker", "weights", "weights_version", components...}

The two rankers (weights from a :class:`feedpipe.topology.WeightSet`, summing to 1):

``affinity`` (docs/ranking.md; item by item in :mod:`feedpipe.rank.reference`)
    ``a * affinity + b * recency + c * engagement``:
    affinity = 1/2 share of the user's normalised category affinity held by the item's
    categories + 1/2 the same for topics (each share capped at 1);
    recency = ``2 ** (-hours_old / ranking.recency_half_life_hours)``, 0 when the age is unknown;
    engagement = ``ctr / (ctr + alpha/beta)``, ``ctr = (clicks + alpha) / (impressions + beta)``
    (Beta prior of ``ranking.engagement_prior_*``).

``editorial`` (docs/ranking.md)
    ``category * w_cat + bias * w_bias + freshness * w_fresh`` (weights of the
    ``rankers.weight_sets`` in topology.yaml, 0.40 / 0.30 / 0.30 in the repository's file):
    category = the item's largest brand-category weight (``rankers.editorial.category_weights``);
    bias = ``1 - |item bias - user bias|``, item bias in [0, 1] from the CMS or the source's
    configuration (``rankers.editorial.source_bias``), 0.5 when unknown; user bias = the
    click-weighted mean bias of what the user read (:func:`user_bias`);
    freshness = ``1 / (1 + k * hours_old)``, k = ``rankers.editorial.freshness_per_hour`` (0.1),
    0 when the age is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.profile import affinity_at
from feedpipe.rank.candidates import kth_share, label_sums
from feedpipe.topology import RANKER_COMPONENTS, EditorialSpec, RankingSpec, WeightSet

Array = npt.NDArray[np.float64]

RANKERS: tuple[str, ...] = tuple(RANKER_COMPONENTS)
"""Names of the rankers a weight set can select: ``affinity``, ``editorial``."""

COMPONENT_NAMES: dict[str, tuple[str, ...]] = {
    "affinity": ("affinity", "recency", "engagement"),
    "editorial": ("category", "bias", "freshness"),
    "learned": RANKER_COMPONENTS["learned"],
}
"""Score components of each ranker, in the order of its weight keys (RANKER_COMPONENTS)."""


@dataclass(frozen=True, slots=True)
class Candidates:
    """Inputs of the rankers for n candidates (arrays of shape (n,), or (m, n) for m users).

    Attributes:
        affinity: user-item affinity in [0, 1] (:func:`affinity_scores`).
        age_hours: hours since the item's publication (or first sighting) at ranking time;
            NaN when unknown; negative ages count as 0.
        clicks: clicks of the item before ranking time (>= 0).
        impressions: impressions of the item before ranking time (>= 0).
        category_weight: editorial category weight in [0, 1] (:func:`category_weights`).
        bias: item bias in [0, 1] (:func:`item_biases`).
        user_bias: the user's bias in [0, 1], a scalar or shape (m, 1) (:func:`user_bias`).
        trend: decayed ``(clicks_1h, shown_1h, clicks_24h, shown_24h)`` per item, shape
            (n, 4) (:func:`feedpipe.model.signals.trend_at`); None = zeros.
        coread: co-read score per item, (n,) or (m, n)
            (:func:`feedpipe.model.signals.coread_scores`); None = zeros.
        similarity: content similarity per item in [0, 1], (n,) or (m, n)
            (:func:`feedpipe.model.text.similarity`); None = zeros.
    """

    affinity: Array
    age_hours: Array
    clicks: Array
    impressions: Array
    category_weight: Array
    bias: Array
    user_bias: Array | float = 0.5
    trend: Array | None = None
    coread: Array | None = None
    similarity: Array | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    """Scores of one ranker over candidates, with the per-item breakdown.

    Attributes:
        ranker: ``affinity`` or ``editorial``.
        weight_set: the weight set's name; ``version`` its version.
        weights: the weights used (the weight set's keys).
        score: weighted sum of the components, shape of the inputs.
        components: component name -> values before weighting, same shape as ``score``.
    """

    ranker: str
    weight_set: str
    version: int
    weights: Mapping[str, float]
    score: Array
    components: Mapping[str, Array]

    def breakdown(self, *index: int, arm: str | None = None) -> dict[str, Any]:
        """The feed-item explanation of one item (``index`` = (i,) or (user row, i)).

        Returns ``{"score", "ranker", "weights" (name@vN), "weights_version", "weight_values",
        "components": {...}, "arm"}``.
        """
        return {
            "score": float(self.score[index]),
            "ranker": self.ranker,
            "weights": f"{self.weight_set}@v{self.version}",
            "weights_version": self.version,
            "weight_values": dict(self.weights),
            "components": {k: float(v[index]) for k, v in self.components.items()},
            "arm": arm,
        }



# -- components ---------------------------------------------------------------------------
def profile_shares(
    profiles: Sequence[Mapping[str, Any]], matrix: CandidateMatrix
) -> tuple[Array, Array]:
    """Normalised category and topic affinities of ``profiles`` in ``matrix``'s columns.

    Uses :func:`feedpipe.model.profile.affinity_at` (the pipeline's profile code). Returns
    ``(s_cat, s_top)`` of shapes (m, n_categories) and (m, n_topics); labels absent from the
    matrix are ignored (they cannot match a candidate).
    """
    s_cat, s_top, _, _ = shares_and_cuts(profiles, matrix, 0)
    return s_cat, s_top


def shares_and_cuts(
    profiles: Sequence[Mapping[str, Any]], matrix: CandidateMatrix, top: int
) -> tuple[Array, Array, Array, Array]:
    """:func:`profile_shares` plus, per profile, the ``top``-th largest category and topic
    share over *all* its labels (:func:`feedpipe.rank.candidates.kth_share`; +inf when
    ``top`` <= 0), the cut of the affinity candidate source.

    Returns ``(s_cat (m, C), s_top (m, T), kth_cat (m,), kth_top (m,))``; one
    :func:`feedpipe.model.profile.affinity_at` per profile.
    """
    m = len(profiles)
    s_cat = np.zeros((m, matrix.cat.shape[1]))
    s_top = np.zeros((m, matrix.topic.shape[1]))
    kth_cat = np.full(m, np.inf)
    kth_top = np.full(m, np.inf)
    for row, profile in enumerate(profiles):
        shares = affinity_at(profile, 0)
        for key, v in shares["category"].items():
            j = matrix.cat_index.get(key)
            if j is not None:
                s_cat[row, j] = v
        for key, v in shares["topic"].items():
            j = matrix.topic_index.get(key)
            if j is not None:
                s_top[row, j] = v
        if top > 0:
            kth_cat[row] = kth_share(shares["category"], top)
            kth_top[row] = kth_share(shares["topic"], top)
    return s_cat, s_top, kth_cat, kth_top


def affinity_scores(s_cat: Array, s_top: Array, item_cat: Array, item_top: Array) -> Array:
    """Affinity in [0, 1]: ``0.5 * min(s_cat @ item_cat.T, 1) + 0.5 * min(s_top @ item_top.T, 1)``.

    Args:
        s_cat, s_top: (m, C) and (m, T) normalised shares (:func:`profile_shares`).
        item_cat, item_top: (n, C) and (n, T) one-hot item labels (``CandidateMatrix.cat``/
            ``.topic``, or rows of them).

    Returns (m, n); equals :func:`feedpipe.rank.reference.item_affinity` item by item.
    """
    cat: Array = np.minimum(s_cat @ item_cat.T, 1.0)
    top: Array = np.minimum(s_top @ item_top.T, 1.0)
    return 0.5 * cat + 0.5 * top


def affinity_from_slots(s_cat: Array, s_top: Array, cat_slots: npt.NDArray[np.int64],
                        top_slots: npt.NDArray[np.int64]) -> Array:
    """:func:`affinity_scores` with the items' labels as
    :func:`feedpipe.model.item.label_slots` (an item has a few of the catalogue's
    hundreds of labels): O(m n) gathers instead of two dense matrix products."""
    cat: Array = np.minimum(label_sums(s_cat, cat_slots), 1.0)
    top: Array = np.minimum(label_sums(s_top, top_slots), 1.0)
    return 0.5 * cat + 0.5 * top


def recency_component(age_hours: Array, half_life_hours: float) -> Array:
    """``2 ** (-max(age, 0) / H)`` in [0, 1], ``age_hours`` and ``H`` = ``half_life_hours`` in
    hours; 0 where the age is NaN (unknown). Shape of ``age_hours``."""
    age = np.asarray(age_hours, dtype=float)
    with np.errstate(invalid="ignore"):
        out = np.exp2(-np.maximum(age, 0.0) / half_life_hours)
    return np.where(np.isnan(age), 0.0, out)


def engagement_component(clicks: Array, impressions: Array, spec: RankingSpec) -> Array:
    """Smoothed CTR mapped to [0, 1): ``ctr / (ctr + alpha/beta)``, shape of the inputs.

    ``ctr = (clicks + alpha) / (impressions + beta)``, alpha = ``engagement_prior_clicks``,
    beta = ``engagement_prior_impressions`` (a Beta prior; see docs/ranking.md).
    """
    a = spec.engagement_prior_clicks
    b = spec.engagement_prior_impressions
    ctr = (np.asarray(clicks, dtype=float) + a) / (np.asarray(impressions, dtype=float) + b)
    mean = a / b if a > 0 else 1.0 / b
    out: Array = ctr / (ctr + mean)
    return out


def freshness_component(age_hours: Array, per_hour: float) -> Array:
    """``1 / (1 + k * max(age, 0))`` in (0, 1], ``k`` = ``per_hour`` (1/h), ``age_hours`` in
    hours; 0 where the age is NaN (unknown). Shape of ``age_hours``."""
    age = np.asarray(age_hours, dtype=float)
    with np.errstate(invalid="ignore"):
        out = 1.0 / (1.0 + per_hour * np.maximum(age, 0.0))
    return np.where(np.isnan(age), 0.0, out)


def bias_match(bias: Array, user_bias: Array | float) -> Array:
    """``1 - |item bias - user bias|`` in [0, 1] (both in [0, 1]); the broadcast shape."""
    out: Array = 1.0 - np.abs(np.asarray(bias, dtype=float) - user_bias)
    return out


def category_weights(metas: Iterable[Meta | None], brand: str, spec: EditorialSpec) -> Array:
    """Editorial category weight per item: the largest weight of its categories in
    ``spec.category_weights[brand]``, ``spec.default_category_weight`` for unlisted ones (and
    for items without categories or metadata). Shape (n,)."""
    table = spec.category_weights.get(brand, {})
    d = spec.default_category_weight
    return np.array(
        [max((table.get(c, d) for c in m.categories), default=d) if m else d for m in metas],
        dtype=float,
    )


def item_biases(
    cms_bias: Iterable[float | None], sources: Iterable[str | None], spec: EditorialSpec
) -> Array:
    """Item bias in [0, 1]: the CMS's value, else the source's configured bias, else
    ``spec.default_bias`` (0.5). Shape (n,).

    Raises:
        ValueError: a CMS bias outside [0, 1] (bad input is refused, not clipped).
    """
    out = []
    for b, src in zip(cms_bias, sources, strict=True):
        if b is not None:
            if not 0.0 <= b <= 1.0:
                raise ValueError(f"item bias must be in [0, 1], got {b}")
            out.append(float(b))
        else:
            out.append(spec.source_bias.get(src or "", spec.default_bias))
    return np.array(out, dtype=float)


def user_bias(biases: Sequence[float], clicks: Sequence[float] | None = None,
              default: float = 0.5) -> float:
    """The click-weighted mean bias of what a user read, in [0, 1]; ``default`` with no reads
    or no clicks.

    Args:
        biases: bias in [0, 1] of each item read.
        clicks: clicks on each item (weights, >= 0); None = one click each.
    """
    if not biases:
        return default
    w = np.ones(len(biases)) if clicks is None else np.asarray(clicks, dtype=float)
    total = float(w.sum())
    return float(np.dot(w, np.asarray(biases, dtype=float)) / total) if total > 0 else default


# -- the weighted score --------------------------------------------------------------------
def components(
    ranker: str, cands: Candidates, ranking: RankingSpec, editorial: EditorialSpec
) -> dict[str, Array]:
    """The score components of ``ranker`` (names: :data:`COMPONENT_NAMES`), before weighting.

    Raises:
        KeyError: unknown ranker name.
    """
    if ranker == "affinity":
        return {
            "affinity": np.asarray(cands.affinity, dtype=float),
            "recency": recency_component(cands.age_hours, ranking.recency_half_life_hours),
            "engagement": engagement_component(cands.clicks, cands.impressions, ranking),
        }
    if ranker == "editorial":
        return {
            "category": np.asarray(cands.category_weight, dtype=float),
            "bias": bias_match(cands.bias, cands.user_bias),
            "freshness": freshness_component(cands.age_hours, editorial.freshness_per_hour),
        }
    if ranker == "learned":
        return learned_features(cands, ranking)
    raise KeyError(f"unknown ranker {ranker!r}; known: {', '.join(RANKERS)}")


def contributions(item: Mapping[str, Any]) -> dict[str, float] | None:
    """Each feature's contribution ``weight * value`` to a stored ``learned`` feed item's score
    (``item["weights"]`` and the feature values, as :func:`feedpipe.rank.rankers.rank_users`
    writes them); None for items of other rankers or missing fields."""
    if item.get("ranker") != "learned":
        return None
    w = item.get("weights")
    if not isinstance(w, Mapping):
        return None
    try:
        return {k: float(w[k]) * float(item[k]) for k in RANKER_COMPONENTS["learned"]}
    except (KeyError, TypeError, ValueError):
        return None


def learned_features(cands: Candidates, ranking: RankingSpec) -> dict[str, Array]:
    """The ``learned`` ranker's features (names: ``RANKER_COMPONENTS["learned"]``).

    ``affinity`` as the affinity ranker; ``recency`` = :func:`recency_component`; ``ctr`` =
    :func:`engagement_component` of all-time counts; ``popularity`` = ``log(1 + clicks)``;
    ``trend_1h``/``trend_24h`` = ``log(1 + decayed clicks)`` over 1 h / 24 h half-lives;
    ``ctr_24h`` = :func:`engagement_component` of the 24 h decayed counts; ``coread`` and
    ``similarity`` as given (0 when absent). Log counts: popularity is heavy-tailed, and the
    log blend with affinity measured best (docs/evaluation.md). Arrays broadcast together.
    """
    clicks = np.asarray(cands.clicks, dtype=float)
    trend = (np.zeros((*clicks.shape[-1:], 4)) if cands.trend is None
             else np.asarray(cands.trend, dtype=float))
    zero = np.zeros(clicks.shape[-1:])
    return {
        "affinity": np.asarray(cands.affinity, dtype=float),
        "recency": recency_component(cands.age_hours, ranking.recency_half_life_hours),
        "ctr": engagement_component(clicks, cands.impressions, ranking),
        "popularity": np.log1p(clicks),
        "trend_1h": np.log1p(trend[..., 0]),
        "trend_24h": np.log1p(trend[..., 2]),
        "ctr_24h": engagement_component(trend[..., 2], trend[..., 3], ranking),
        "coread": zero if cands.coread is None else np.asarray(cands.coread, dtype=float),
        "similarity": zero if cands.similarity is None
        else np.asarray(cands.similarity, dtype=float),
    }


def score(
    name: str,
    weights: WeightSet,
    cands: Candidates,
    ranking: RankingSpec,
    editorial: EditorialSpec,
) -> Ranked:
    """Score ``cands`` with the ranker and weights of weight set ``name``.

    Returns a :class:`Ranked` whose ``score`` is the weighted sum of the components (weight keys
    map to components in order: a/b/c -> affinity/recency/engagement, category/bias/freshness),
    in the broadcast shape of the inputs.

    Raises:
        KeyError: unknown ranker name in ``weights``.
    """
    comps = components(weights.ranker, cands, ranking, editorial)
    keys = RANKER_COMPONENTS[weights.ranker]
    total: Array = np.zeros(np.broadcast(*comps.values()).shape)
    for key, comp in zip(keys, COMPONENT_NAMES[weights.ranker], strict=True):
        total = total + weights.weights[key] * comps[comp]
    full = {k: np.broadcast_to(v, total.shape) for k, v in comps.items()}
    return Ranked(weights.ranker, name, weights.version, dict(weights.weights), total, full)
