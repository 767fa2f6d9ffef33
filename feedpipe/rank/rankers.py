"""Named rankers (``affinity``, ``editorial``), evaluation baselines and hot-reloaded weights.

Pure and numpy-vectorised; no I/O except :class:`WeightsRegistry`, which re-reads topology.yaml.
The feeds stage and the offline evaluation (:mod:`ops.evaluate`) call the same functions.

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

``affinity`` (the seed formula of feedpipe/model/profile.py, docs/ranking.md)
    ``a * affinity + b * recency + c * engagement``:
    affinity = 1/2 share of the user's normalised category affinity held by the item's
    categories + 1/2 the same for topics (each share capped at 1), as ``ranking.item_affinity``;
    recency = ``2 ** (-hours_old / ranking.recency_half_life_hours)``, 0 when the age is unknown;
    engagement = ``ctr / (ctr + alpha/beta)``, ``ctr = (clicks + alpha) / (impressions + beta)``
    (Beta prior of ``ranking.engagement_prior_*``), as ``ranking.engagement``.

``editorial`` (issue 4)
    ``category * w_cat + bias * w_bias + freshness * w_fresh`` (seed weights 0.40 / 0.30 / 0.30):
    category = the item's largest brand-category weight (``rankers.editorial.category_weights``);
    bias = ``1 - |item bias - user bias|``, item bias in [0, 1] from the CMS or the source's
    configuration (``rankers.editorial.source_bias``), 0.5 when unknown; user bias = the
    click-weighted mean bias of what the user read (:func:`user_bias`);
    freshness = ``1 / (1 + k * hours_old)``, k = ``rankers.editorial.freshness_per_hour`` (0.1),
    0 when the age is unknown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from feedpipe.errors import ConfigError
from feedpipe.model.profile import HOUR_MS, CandidateMatrix, Meta, affinity_at, top_rows
from feedpipe.rank.candidates import (
    CandidateInputs,
    candidate_sources,
    diversify,
    kth_share,
    sources_of,
    trending_rows,
)
from feedpipe.topology import (
    RANKER_COMPONENTS,
    TOPOLOGY_PATH,
    EditorialSpec,
    ExperimentSpec,
    RankersSpec,
    RankingSpec,
    WeightSet,
    load_topology,
)

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]

RANKERS: tuple[str, ...] = tuple(RANKER_COMPONENTS)
"""Names of the rankers a weight set can select: ``affinity``, ``editorial``."""

COMPONENT_NAMES: dict[str, tuple[str, ...]] = {
    "affinity": ("affinity", "recency", "engagement"),
    "editorial": ("category", "bias", "freshness"),
}
"""Score components of each ranker, in the order of its weight keys (RANKER_COMPONENTS)."""

BASELINES: tuple[str, ...] = ("random", "popularity", "recency")
"""Reference rankers for the offline evaluation only (see :func:`baseline_scores`)."""


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
    """

    affinity: Array
    age_hours: Array
    clicks: Array
    impressions: Array
    category_weight: Array
    bias: Array
    user_bias: Array | float = 0.5


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
    share over *all* its labels (:func:`feedpipe.rank.candidates.kth_share`; +inf when ``top`` <=
    0),
    the cut of the affinity candidate source: ``(s_cat, s_top, kth_cat (m,), kth_top (m,))``.
    One :func:`affinity_at` per profile."""
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

    Returns (m, n); equals ``feedpipe.model.profile.item_affinity`` item by item.
    """
    cat: Array = np.minimum(s_cat @ item_cat.T, 1.0)
    top: Array = np.minimum(s_top @ item_top.T, 1.0)
    return 0.5 * cat + 0.5 * top


def recency_component(age_hours: Array, half_life_hours: float) -> Array:
    """``2 ** (-max(age, 0) / H)`` in [0, 1]; 0 where the age is NaN (unknown)."""
    age = np.asarray(age_hours, dtype=float)
    with np.errstate(invalid="ignore"):
        out = np.exp2(-np.maximum(age, 0.0) / half_life_hours)
    return np.where(np.isnan(age), 0.0, out)


def engagement_component(clicks: Array, impressions: Array, spec: RankingSpec) -> Array:
    """Smoothed CTR mapped to [0, 1): ``ctr / (ctr + alpha/beta)`` as ``ranking.engagement``.

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
    """``1 / (1 + k * max(age, 0))`` in (0, 1]; 0 where the age is NaN (unknown). Issue 4."""
    age = np.asarray(age_hours, dtype=float)
    with np.errstate(invalid="ignore"):
        out = 1.0 / (1.0 + per_hour * np.maximum(age, 0.0))
    return np.where(np.isnan(age), 0.0, out)


def bias_match(bias: Array, user_bias: Array | float) -> Array:
    """``1 - |item bias - user bias|`` in [0, 1] (both in [0, 1])."""
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
    """The click-weighted mean bias of what a user read (issue 4); ``default`` with no reads.

    Args:
        biases: bias in [0, 1] of each item read.
        clicks: clicks on each item (weights, >= 0); None = one click each.
    """
    if not biases:
        return default
    w = np.ones(len(biases)) if clicks is None else np.asarray(clicks, dtype=float)
    total = float(w.sum())
    return float(np.dot(w, np.asarray(biases, dtype=float)) / total) if total > 0 else default


# -- rankers ------------------------------------------------------------------------------
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
    raise KeyError(f"unknown ranker {ranker!r}; known: {', '.join(RANKERS)}")


def score(
    name: str,
    weights: WeightSet,
    cands: Candidates,
    ranking: RankingSpec,
    editorial: EditorialSpec,
) -> Ranked:
    """Score ``cands`` with the ranker and weights of weight set ``name``.

    Returns a :class:`Ranked` whose ``score`` is the weighted sum of the components (weight keys
    map to components in order: a/b/c -> affinity/recency/engagement, category/bias/freshness).
    """
    comps = components(weights.ranker, cands, ranking, editorial)
    keys = RANKER_COMPONENTS[weights.ranker]
    total: Array = np.zeros(np.broadcast(*comps.values()).shape)
    for key, comp in zip(keys, COMPONENT_NAMES[weights.ranker], strict=True):
        total = total + weights.weights[key] * comps[comp]
    full = {k: np.broadcast_to(v, total.shape) for k, v in comps.items()}
    return Ranked(weights.ranker, name, weights.version, dict(weights.weights), total, full)


def order(scores: Array, content_ids: Sequence[str]) -> list[int]:
    """Indices of a 1-D ``scores`` best first; equal scores by content id ascending."""
    ids = np.asarray(content_ids, dtype=object)
    return [int(i) for i in np.lexsort((ids, -np.asarray(scores, dtype=float)))]


def baseline_scores(
    name: str, cands: Candidates, rng: np.random.Generator | None = None
) -> Array:
    """Scores of an evaluation baseline (higher = better), same shape as ``cands.clicks``.

    ``random``: uniform [0, 1) from ``rng`` (seed it for reproducible runs);
    ``popularity``: clicks before ranking time; ``recency``: newer first (``-age_hours``,
    unknown age last).

    Raises:
        KeyError: unknown baseline; ValueError: ``random`` without ``rng``.
    """
    clicks = np.asarray(cands.clicks, dtype=float)
    if name == "random":
        if rng is None:
            raise ValueError("the random baseline needs a seeded numpy Generator")
        out: Array = rng.random(clicks.shape)
        return out
    if name == "popularity":
        return clicks
    if name == "recency":
        age = np.asarray(cands.age_hours, dtype=float)
        return np.where(np.isnan(age), -np.inf, -age)
    raise KeyError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def hours_between(later_ms: Array | float, earlier_ms: Array) -> Array:
    """``(later - earlier) / 1 h`` for epoch-ms values (NaN stays NaN)."""
    out: Array = (np.asarray(later_ms, dtype=float) - np.asarray(earlier_ms, dtype=float)) / HOUR_MS
    return out


# -- hot-reloaded weights -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RankingConfig:
    """A loaded ``rankers`` + ``experiments`` configuration.

    Attributes:
        rankers: weight sets, brand -> weight set, editorial inputs.
        experiments: experiment name -> spec.
        mtime_ns: modification time (ns) of the file it was read from.
        generation: 1 for the first load, +1 per successful reload.
    """

    rankers: RankersSpec
    experiments: Mapping[str, ExperimentSpec]
    mtime_ns: int
    generation: int


@dataclass
class WeightsRegistry:
    """Weights and experiments from topology.yaml, re-read when the file changes.

    :meth:`current` stats the file at most once every ``check_every_s`` seconds (monotonic
    clock ``clock``) and reloads it when its mtime or size changed, so an operator edits
    topology.yaml and running stages pick up new weights without a restart. A reload that fails
    validation keeps the previous configuration and sets ``last_error`` (logged), so a typo
    never takes the feeds down.

    Args:
        path: the topology file.
        check_every_s: minimum seconds between two stats of the file.
        clock: monotonic seconds (injectable for tests).

    Raises:
        ConfigError: from the first :meth:`current` when the file cannot be loaded at all.
    """

    path: Path = TOPOLOGY_PATH
    check_every_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    last_error: str | None = None
    _config: RankingConfig | None = field(default=None, repr=False)
    _stamp: tuple[int, int] | None = field(default=None, repr=False)
    _checked_at: float = field(default=float("-inf"), repr=False)

    def current(self) -> RankingConfig:
        """The configuration in force (reloaded first if the file changed and it is time)."""
        now = self.clock()
        if self._config is not None and now - self._checked_at < self.check_every_s:
            return self._config
        self._checked_at = now
        try:
            st = self.path.stat()
        except OSError as exc:
            return self._keep(ConfigError(f"{self.path}: {exc}"))
        stamp = (st.st_mtime_ns, st.st_size)
        if self._config is not None and stamp == self._stamp:
            return self._config
        try:
            topo = load_topology(self.path)
            rankers = topo.ranker_config()
        except ConfigError as exc:
            self._stamp = stamp  # do not re-parse the same broken file every check
            return self._keep(exc)
        except ValidationError as exc:  # compat path: ranking.weights not summing to 1
            self._stamp = stamp
            return self._keep(ConfigError(f"{self.path}: {exc}"))
        gen = 1 if self._config is None else self._config.generation + 1
        self._config = RankingConfig(rankers, dict(topo.experiments), st.st_mtime_ns, gen)
        self._stamp = stamp
        self.last_error = None
        if gen > 1:
            log.info("ranking weights reloaded from %s (generation %d)", self.path, gen)
        return self._config

    def _keep(self, exc: ConfigError) -> RankingConfig:
        if self._config is None:
            raise exc
        self.last_error = str(exc)
        log.error("ranking weights not reloaded, keeping generation %d: %s",
                  self._config.generation, exc)
        return self._config


# -- the feeds stage's ranking ------------------------------------------------------------
_EDITORIAL_CACHE: dict[tuple[int, int, str, str], Array] = {}


def _category_column(matrix: CandidateMatrix, brand: str, spec: EditorialSpec) -> Array:
    """:func:`category_weights` of every matrix item for ``brand`` (cached per matrix)."""
    key = (id(matrix), len(matrix), brand, spec.model_dump_json())
    got = _EDITORIAL_CACHE.get(key)
    if got is None:
        if len(_EDITORIAL_CACHE) > 16:
            _EDITORIAL_CACHE.clear()
        got = _EDITORIAL_CACHE[key] = category_weights(matrix.metas, brand, spec)
    return got


@cache
def _source_names(bits: int) -> list[str]:
    """:func:`feedpipe.rank.candidates.sources_of`, one shared list per bit set (the compact feed
    store groups items by the identity of their descriptive values)."""
    return sources_of(bits)


def rank_users(
    profiles: Sequence[Mapping[str, Any]],
    matrix: CandidateMatrix,
    stats: Mapping[str, tuple[int, int]],
    ranking: RankingSpec,
    config: RankingConfig,
    chunk: int = 512,
    sources: CandidateInputs | None = None,
) -> list[list[dict[str, Any]]]:
    """Rank each profile's candidates with the ranker and weights serving it; feed items out.

    For each user and each brand of ``ranking.candidate_brands`` the weight set comes from
    :func:`feedpipe.rank.experiments.resolve` (the user's arm when an enabled experiment runs on
    the brand, else ``rankers.brands``); every candidate of that brand is scored by that weight
    set's ranker (:func:`score`'s formulas, vectorised over a (users x items) chunk). Items
    already read are excluded; order: score descending, then content id ascending; top
    ``ranking.feed_size``. With the seed weight sets it agrees with the pure-Python reference
    :func:`feedpipe.model.profile.rank` (same order; scores equal up to float rounding).

    Editorial inputs: ``Meta`` carries no bias or source yet, so every item has
    ``rankers.editorial.default_bias`` and every user the default user bias 0.5.

    Args:
        profiles: m profiles (Redis JSON shape; ``user_id`` is what is hashed to an arm).
        matrix: the candidate matrix; ``stats``: content_id -> (impressions, clicks).
        ranking: topology ``ranking`` (feed size, half-lives, priors).
        config: the weights in force (:meth:`WeightsRegistry.current`).
        sources: candidate generation (feedpipe/rank/candidates.py): only the items a source
            proposes (fresh, trending, top affinities; ``matrix.fresh_at`` is the fresh
            source's clock) are scored, and each item carries ``sources`` (their names, e.g.
            ``["fresh", "affinity"]``). None: every allowed item is scored, no ``sources``.

    Returns:
        Per profile, the feed items: ``{"content_id", "brand", "rank", "score", <the ranker's
        components>, "weights" (the weight values), "ranker", "weight_set", "weight_version",
        "arm", "experiment"}`` (arm and experiment None outside experiments).
    """
    from feedpipe.model.profile import candidate_brands
    from feedpipe.rank.experiments import resolve

    n = len(matrix)
    if n == 0:
        return [[] for _ in profiles]
    imps = np.array([stats.get(m.content_id, (0, 0))[0] for m in matrix.metas], dtype=float)
    clicks = np.array([stats.get(m.content_id, (0, 0))[1] for m in matrix.metas], dtype=float)
    eng = engagement_component(clicks, imps, ranking)
    brand_names = sorted(set(matrix.brands.tolist()))
    brand_code = {b: i for i, b in enumerate(brand_names)}
    codes = np.array([brand_code[b] for b in matrix.brands], dtype=np.int64)
    col_masks = [codes == i for i in range(len(brand_names))]
    published = matrix.published
    has_pub = ~np.isnan(published)
    editorial = config.rankers.editorial
    bias = bias_match(np.full(n, editorial.default_bias), 0.5)
    weights_dicts: dict[str, dict[str, float]] = {}  # one shared mapping per weight set
    trend_rows = (
        trending_rows(matrix.index, sources.trending, sources.spec.trending_k)
        if sources is not None
        else []
    )
    results: list[list[dict[str, Any]]] = []
    for lo in range(0, len(profiles), chunk):
        part = profiles[lo : lo + chunk]
        m = len(part)
        cut_n = sources.spec.top_affinities if sources is not None else 0
        s_cat, s_top, kth_cat, kth_top = shares_and_cuts(part, matrix, cut_n)
        aff = affinity_scores(s_cat, s_top, matrix.cat, matrix.topic)
        refs = np.array([float(p.get("last_seen") or 0) for p in part])
        age_h = np.maximum(0.0, (refs[:, None] - published[None, :]) / HOUR_MS)
        with np.errstate(invalid="ignore"):
            rec = np.where(has_pub[None, :], 2.0 ** (-age_h / ranking.recency_half_life_hours), 0.0)
        fresh: Array | None = None
        allowed = np.zeros((m, n), dtype=bool)
        score = np.full((m, n), -np.inf)
        # (row, brand code) -> assignment; rows grouped per (brand code, weight set)
        assigned: dict[tuple[int, int], Any] = {}
        groups: dict[tuple[int, str], list[int]] = {}
        for row, profile in enumerate(part):
            uid = str(profile.get("user_id", ""))
            for b in candidate_brands(profile, ranking):
                code = brand_code.get(b)
                if code is None:
                    continue
                allowed[row] |= col_masks[code]
                a = resolve(config.rankers, config.experiments, uid, b)
                assigned[(row, code)] = a
                groups.setdefault((code, a.weight_set), []).append(row)
            for r in profile.get("recent_reads", []):
                i = matrix.index.get(r["content_id"])
                if i is not None:
                    allowed[row, i] = False
        cat_cols: dict[int, Array] = {}
        for (code, _), rows in groups.items():
            a = assigned[(rows[0], code)]
            ws = a.weights.weights
            idx = np.asarray(rows)
            if a.weights.ranker == "affinity":
                s = ws["a"] * aff[idx] + ws["b"] * rec[idx] + ws["c"] * eng
            else:
                if fresh is None:
                    fresh = freshness_component(
                        np.where(has_pub[None, :], age_h, np.nan), editorial.freshness_per_hour
                    )
                cat = cat_cols.get(code)
                if cat is None:
                    cat = cat_cols[code] = _category_column(matrix, brand_names[code], editorial)
                s = ws["category"] * cat + ws["bias"] * bias + ws["freshness"] * fresh[idx]
            score[idx] = np.where(col_masks[code], s, score[idx])
        bits: npt.NDArray[np.int64] | None = None
        if sources is not None:
            bits = candidate_sources(
                item_cat=matrix.cat,
                item_topic=matrix.topic,
                published_ms=matrix.fresh_at,
                allowed=allowed,
                share_cat=s_cat,
                share_topic=s_top,
                ref_ms=refs,
                trending_rows=trend_rows,
                spec=sources.spec,
                kth_cat=kth_cat,
                kth_topic=kth_top,
            )
            allowed = np.asarray(bits > 0)
        score = np.where(allowed, score, -np.inf)
        cap = ranking.max_per_category
        for row in range(m):
            row_score = score[row]
            n_allowed = int(allowed[row].sum())
            if n_allowed == 0:
                results.append([])
                continue
            if cap > 0:  # diversity: every allowed item in score order, then the cap
                top = diversify(
                    top_rows(row_score, n_allowed).tolist(),
                    matrix.primary,
                    ranking.feed_size,
                    cap,
                )
            else:
                top = top_rows(row_score, min(ranking.feed_size, n_allowed)).tolist()
            items: list[dict[str, Any]] = []
            for rank_no, i in enumerate(top, start=1):
                code = int(codes[i])
                a = assigned[(row, code)]
                wd = weights_dicts.get(a.weight_set)
                if wd is None:
                    wd = weights_dicts[a.weight_set] = dict(a.weights.weights)
                item: dict[str, Any] = {
                    "content_id": matrix.metas[i].content_id,
                    "brand": brand_names[code],
                    "rank": rank_no,
                    "score": float(row_score[i]),
                }
                if a.weights.ranker == "affinity":
                    item["affinity"] = float(aff[row, i])
                    item["recency"] = float(rec[row, i])
                    item["engagement"] = float(eng[i])
                else:
                    assert fresh is not None
                    item["category"] = float(cat_cols[code][i])
                    item["bias"] = float(bias[i])
                    item["freshness"] = float(fresh[row, i])
                if bits is not None:
                    item["sources"] = _source_names(int(bits[row, i]))
                item.update(
                    weights=wd,
                    ranker=a.weights.ranker,
                    weight_set=a.weight_set,
                    weight_version=a.weights.version,
                    arm=a.arm,
                    experiment=a.experiment,
                )
                items.append(item)
            results.append(items)
    return results
