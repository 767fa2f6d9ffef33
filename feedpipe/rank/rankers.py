"""The feeds' ranking: many users' candidates scored at once (numpy, no I/O).

:func:`rank_users` is what the click path and the read endpoint's celebrity
merge call: per user and brand it serves the weight set of the user's A/B arm or of the brand,
scores that weight set's ranker (formulas in :mod:`feedpipe.rank.components`) over a
(users x items) chunk of the :class:`feedpipe.model.item.CandidateMatrix`, restricts to the
candidates (:mod:`feedpipe.rank.candidates`), picks the top N (:mod:`feedpipe.rank.selection`)
and returns columnar feeds (:class:`feedpipe.wire.ranked.RankedFeed`; :func:`rank_users`
gives their items as dicts). The pure-Python :func:`feedpipe.rank.reference.rank` checks it in
the unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from feedpipe.model.interest import interest_of, row_entries, similarity_rows
from feedpipe.model.item import CandidateMatrix
from feedpipe.model.signals import TrendSums, trend_values
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.candidates import (
    CandidateInputs,
    candidate_brands,
    candidate_sources,
    trending_rows,
)
from feedpipe.rank.chunk import EDITORIAL, FEATURES, LEARNED, SOURCE_TABLE, ChunkFeatures, Gathered
from feedpipe.rank.components import (
    Array,
    Candidates,
    affinity_from_slots,
    bias_match,
    category_weights,
    engagement_component,
    freshness_component,
    learned_features,
    shares_and_cuts,
)
from feedpipe.rank.experiments import resolve
from feedpipe.rank.selection import select_block
from feedpipe.rank.weights import RankingConfig
from feedpipe.topology import EditorialSpec, RankingSpec
from feedpipe.wire.ranked import RankedFeed, Serving


def _empty() -> RankedFeed:
    """A feed without items (a new object each time: its item list is the caller's)."""
    return RankedFeed(ids=[], rows=np.zeros(0, dtype=np.intp), scores=np.zeros(0), names=(),
                      features=np.zeros((0, 0)), servings=[], serving_of=np.zeros(0, np.int64),
                      bits=None, sources=None, digests=b"")


_EDITORIAL_CACHE: dict[tuple[int, int, str, str], Array] = {}


def _category_column(matrix: CandidateMatrix, brand: str, spec: EditorialSpec) -> Array:
    """:func:`feedpipe.rank.components.category_weights` of every matrix item for ``brand``
    (cached per matrix, at most 17 entries)."""
    key = (id(matrix), len(matrix), brand, spec.model_dump_json())
    got = _EDITORIAL_CACHE.get(key)
    if got is None:
        if len(_EDITORIAL_CACHE) > 16:
            _EDITORIAL_CACHE.clear()
        got = _EDITORIAL_CACHE[key] = category_weights(matrix.metas, brand, spec)
    return got


@dataclass(frozen=True, slots=True)
class ItemColumns:
    """Per-item columns of one (matrix, stats, ranking spec, default bias) that every
    :func:`rank_users` call on them shares: ``imps``/``clicks`` (n,) float from the stats,
    ``eng`` the engagement component, ``brand_names`` (sorted) with ``brand_code`` (name ->
    code), ``codes`` (n,) each item's brand code and ``col_masks`` one (n,) bool per code,
    ``has_pub`` (n,) bool, ``bias`` (n,) the editorial bias match, ``primary`` (n,) int, ``cids``
    the content ids in row order, ``digests`` (n,) their raw 32-byte SHA-256 digests (``V32``)
    when every id is 64 lowercase hex digits (:func:`feedpipe.ids.content_id`), else None."""

    key: tuple[Any, ...]
    imps: Array
    clicks: Array
    eng: Array
    brand_names: list[str]
    brand_code: dict[str, int]
    codes: npt.NDArray[np.int64]
    col_masks: list[npt.NDArray[np.bool_]]
    has_pub: npt.NDArray[np.bool_]
    pub_rows: npt.NDArray[np.intp]
    all_pub: bool
    bias: Array
    primary: npt.NDArray[np.int64]
    cids: list[str]
    digests: npt.NDArray[np.void] | None


_COLUMNS: list[ItemColumns] = []
"""The last :data:`COLUMNS_KEPT` built, newest first (their keys hold the objects, so an
object's identity is not reused while its entry lives)."""
COLUMNS_KEPT = 2
"""Entries of :data:`_COLUMNS`: the worker's batches and its idle refresher (another thread)
can rank on different stats at once without rebuilding each other's columns."""


def item_columns(matrix: CandidateMatrix, stats: Mapping[str, tuple[int, int]],
                 ranking: RankingSpec, default_bias: float) -> ItemColumns:
    """The :class:`ItemColumns` of these inputs, built once and reused while the same objects
    come back (the worker replaces its matrix and stats mappings when it reloads them, never
    changes them in place; live-shaped batches rank a few users each, so these O(n) Python
    loops would otherwise be paid per batch). Equal rankings and biases match by value, the
    matrix and stats by identity."""
    key = (matrix, stats, ranking, default_bias)
    for kept in list(_COLUMNS):  # a copy: the refresher ranks in another thread
        if kept.key[0] is matrix and kept.key[1] is stats and kept.key[2:] == key[2:]:
            return kept
    n = len(matrix)
    cids = [meta.content_id for meta in matrix.metas]
    zero = (0, 0)
    got = [stats.get(m.content_id, zero) for m in matrix.metas]
    imps = np.array([g[0] for g in got], dtype=float)
    clicks = np.array([g[1] for g in got], dtype=float)
    brand_names = sorted(set(matrix.brands.tolist()))
    brand_code = {b: i for i, b in enumerate(brand_names)}
    codes = np.array([brand_code[b] for b in matrix.brands], dtype=np.int64)
    cols = ItemColumns(
        key=key, imps=imps, clicks=clicks, eng=engagement_component(clicks, imps, ranking),
        brand_names=brand_names, brand_code=brand_code, codes=codes,
        col_masks=[codes == i for i in range(len(brand_names))],
        has_pub=~np.isnan(matrix.published),
        pub_rows=np.flatnonzero(~np.isnan(matrix.published)),
        all_pub=not bool(np.isnan(matrix.published).any()),
        bias=bias_match(np.full(n, default_bias), 0.5),
        primary=np.asarray(matrix.primary, dtype=np.int64),
        cids=cids,
        digests=_digests(cids),
    )
    _COLUMNS[:] = [cols, *_COLUMNS][:COLUMNS_KEPT]
    return cols


def _digests(cids: list[str]) -> npt.NDArray[np.void] | None:
    """(n,) ``V32`` raw digests of 64-hex-digit lowercase ids; None when one id is not."""
    joined = "".join(cids)
    if len(joined) != 64 * len(cids) or joined != joined.lower():
        return None
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    if len(raw) != 32 * len(cids) or any(len(c) != 64 for c in cids):
        return None
    return np.frombuffer(raw, dtype="V32")


def rank_feeds(
    profiles: Sequence[Mapping[str, Any]],
    matrix: CandidateMatrix,
    stats: Mapping[str, tuple[int, int]],
    ranking: RankingSpec,
    config: RankingConfig,
    chunk: int = 64,
    sources: CandidateInputs | None = None,
    trends: TrendSums | None = None,
    coreads: Sequence[Mapping[str, float]] | None = None,
) -> list[RankedFeed]:
    """Rank each profile's candidates with the ranker and weights serving it; one columnar
    :class:`feedpipe.wire.ranked.RankedFeed` per profile.

    For each user and each of their candidate brands
    (:func:`feedpipe.rank.candidates.candidate_brands`) the weight set comes from
    :func:`feedpipe.rank.experiments.resolve` (the user's arm when an enabled experiment runs on
    the brand, else ``rankers.brands``); every candidate of that brand is scored by that weight
    set's ranker (:func:`feedpipe.rank.components.score`'s formulas, vectorised over
    (``chunk`` users x n items) at a time; 64 keeps a chunk's (users x items) float arrays
    near the CPU caches for a catalogue of thousands: ~15% less CPU per user than 512 on a
    2,000-item catalogue). Items already read are excluded; order: score
    descending, then content id ascending; top ``ranking.feed_size``. With ``affinity`` weight
    sets equal to ``ranking.weights`` it agrees with the pure-Python reference
    :func:`feedpipe.rank.reference.rank` (same order; scores equal up to float rounding).

    Editorial inputs: ``Meta`` carries no bias or source yet, so every item has
    ``rankers.editorial.default_bias`` and every user the default user bias 0.5.

    Args:
        profiles: m profiles (Redis JSON shape; ``user_id`` is what is hashed to an arm).
        matrix: the candidate matrix; ``stats``: content_id -> (impressions, clicks).
        ranking: topology ``ranking`` (feed size, half-lives, priors).
        config: the weights in force (:meth:`feedpipe.rank.weights.WeightsRegistry.current`).
        sources: candidate generation (:mod:`feedpipe.rank.candidates`): only the items a source
            proposes (fresh, trending, top affinities; ``matrix.fresh_at`` is the fresh
            source's clock) are scored, and each item carries its sources' bits and names.
            None: every allowed item is scored, no sources.
        trends: trending-window sums of the matrix rows (epoch -> (n, 4),
            :func:`feedpipe.store.trends.read_trends`), for ``learned`` weight sets; None or
            rows not matching the matrix: those features are 0.
        coreads: per profile, content id -> co-read score
            (:func:`feedpipe.store.coreads.user_coreads`, i.e.
            :func:`feedpipe.model.signals.coread_scores`; ids outside the matrix ignored): the
            ``learned`` ranker's ``coread`` feature and, with ``sources``, the ``coread``
            candidate source. None: 0 and no such source.

    Returns:
        Per profile, its feed (columns: ids, rows, scores, the servings' features, serving
        table, source bits); its items as dicts are :func:`rank_users`'s.

    Raises:
        KeyError: an experiment arm naming an unknown weight set (topology validation
            prevents it).
    """
    n = len(matrix)
    if n == 0:
        return [_empty() for _ in profiles]
    editorial = config.rankers.editorial
    cols = item_columns(matrix, stats, ranking, editorial.default_bias)
    imps, clicks, eng = cols.imps, cols.clicks, cols.eng
    brand_names, brand_code, codes, col_masks = (
        cols.brand_names, cols.brand_code, cols.codes, cols.col_masks)
    published, has_pub, bias, primary = (matrix.published, cols.has_pub, cols.bias, cols.primary)
    slots = matrix.slots
    servings: dict[tuple[str, str, int, str | None, str | None], Serving] = {}
    trend_rows = (
        trending_rows(matrix.index, sources.trending, sources.spec.trending_k)
        if sources is not None
        else []
    )
    results: list[RankedFeed] = []
    for lo in range(0, len(profiles), chunk):
        part = profiles[lo : lo + chunk]
        m = len(part)
        cut_n = sources.spec.top_affinities if sources is not None else 0
        s_cat, s_top, kth_cat, kth_top = shares_and_cuts(part, matrix, cut_n)
        aff = affinity_from_slots(s_cat, s_top, *slots)
        refs = np.array([float(p.get("last_seen") or 0) for p in part])
        age_h = np.maximum(0.0, (refs[:, None] - published[None, :]) / HOUR_MS)
        # Recency with np.power (``2.0 **``, as feedpipe.rank.reference.recency), not
        # components.recency_component: its np.exp2 can round the last bit differently.
        # Only the published items' columns are raised (the others are 0).
        half_life = ranking.recency_half_life_hours
        if cols.all_pub:
            rec = 2.0 ** (-age_h / half_life)
        else:
            rec = np.zeros((m, n))
            if len(cols.pub_rows):
                rec[:, cols.pub_rows] = 2.0 ** (-age_h[:, cols.pub_rows] / half_life)
        fresh: Array | None = None
        learned: dict[str, Array] | None = None
        co = coread_matrix(coreads[lo : lo + chunk], matrix.index, n) if coreads else None
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
            every = len(rows) == m  # rows are appended in order: then idx is 0..m-1
            idx = np.asarray(rows)
            if a.weights.ranker == "affinity":
                # a * aff + b * rec + c * eng, in place (the same operations in that order)
                s = np.multiply(aff if every else aff[idx], ws["a"])
                s += np.multiply(rec if every else rec[idx], ws["b"])
                s += ws["c"] * eng
            elif a.weights.ranker == "learned":
                if learned is None:
                    learned = _learned_columns(aff, age_h, has_pub, clicks, imps, ranking,
                                               trends, refs, co, _similarity(part, matrix))
                s = sum(ws[k] * learned[k][idx] for k in LEARNED)
            else:
                if fresh is None:
                    fresh = freshness_component(
                        np.where(has_pub[None, :], age_h, np.nan), editorial.freshness_per_hour
                    )
                cat = cat_cols.get(code)
                if cat is None:
                    cat = cat_cols[code] = _category_column(matrix, brand_names[code], editorial)
                s = ws["category"] * cat + ws["bias"] * bias + ws["freshness"] * fresh[idx]
            if every:
                np.copyto(score, s, where=col_masks[code])
            else:
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
                slots=slots,
                coread=co,
            )
            allowed = np.asarray(bits > 0)
        np.copyto(score, -np.inf, where=~allowed)

        feat = ChunkFeatures(aff, rec, eng, learned, fresh, cat_cols, bias)
        # diversity (cap > 0): the allowed items in score order, then the cap
        picks = select_block(score, np.count_nonzero(allowed, axis=1), primary,
                             ranking.feed_size, ranking.max_per_category)
        gathered = Gathered(picks, score, bits, codes, feat)
        for row in range(m):
            sel = picks[row]
            if len(sel) == 0:
                results.append(_empty())
                continue
            top = sel.tolist()
            code_sel = codes[sel]
            first = [int(code_sel[0])]
            if not gathered.one_brand(row, sel):
                uniq, at = np.unique(code_sel, return_index=True)
                first = uniq[np.argsort(at)].tolist()
            served = [_serving(servings, assigned[(row, c)], brand_names[c]) for c in first]
            if len(first) == 1:
                serving_of = np.zeros(len(sel), dtype=np.int64)
                names = served[0].names
                feats = gathered.block(served[0].ranker, row, sel, first[0])
            else:
                lut = np.zeros(len(brand_names), dtype=np.int64)
                lut[first] = np.arange(len(first))
                serving_of = lut[code_sel]
                names = tuple(dict.fromkeys(nm for s in served for nm in s.names))
                feats = np.zeros((len(sel), len(names)))
                for g, (s, c) in enumerate(zip(served, first, strict=True)):
                    mine = serving_of == g
                    feats[np.ix_(mine, [names.index(nm) for nm in s.names])] = feat.block(
                        s.ranker, row, sel[mine], c)
            b_sel = gathered.bits_of(row, sel)
            results.append(RankedFeed(
                ids=list(map(cols.cids.__getitem__, top)), rows=sel,
                scores=gathered.scores_of(row, sel),
                names=names, features=feats, servings=served, serving_of=serving_of,
                bits=b_sel,
                sources=(list(map(SOURCE_TABLE.__getitem__, b_sel.tolist()))
                         if b_sel is not None else None),
                digests=cols.digests[sel].tobytes() if cols.digests is not None else b"",
            ))
    return results


def rank_users(
    profiles: Sequence[Mapping[str, Any]],
    matrix: CandidateMatrix,
    stats: Mapping[str, tuple[int, int]],
    ranking: RankingSpec,
    config: RankingConfig,
    chunk: int = 64,
    sources: CandidateInputs | None = None,
    trends: TrendSums | None = None,
    coreads: Sequence[Mapping[str, float]] | None = None,
) -> list[list[dict[str, Any]]]:
    """:func:`rank_feeds`' feeds as item dicts (the read endpoint's celebrity merge, the
    reference comparison): per profile ``{"content_id", "brand", "rank", "score", <the
    ranker's components>, "sources" (with ``sources``: their names, e.g. ``["fresh",
    "affinity"]``), "weights" (the weight values), "ranker", "weight_set", "weight_version",
    "arm", "experiment"}`` (arm and experiment None outside experiments). Arguments and
    errors: :func:`rank_feeds`."""
    return [f.dicts() for f in rank_feeds(profiles, matrix, stats, ranking, config, chunk,
                                          sources, trends, coreads)]


def _serving(cache: dict[tuple[str, str, int, str | None, str | None], Serving], a: Any,
             brand: str) -> Serving:
    """The :class:`feedpipe.wire.ranked.Serving` of assignment ``a``
    (:func:`feedpipe.rank.experiments.resolve`) on ``brand``, one per call of
    :func:`rank_feeds` (feeds share its weights mapping)."""
    key = (brand, a.weight_set, a.weights.version, a.arm, a.experiment)
    got = cache.get(key)
    if got is None:
        ranker = a.weights.ranker
        got = cache[key] = Serving(
            brand=brand, ranker=ranker, weight_set=a.weight_set,
            weight_version=a.weights.version, arm=a.arm, experiment=a.experiment,
            weights=dict(a.weights.weights), names=FEATURES.get(ranker, EDITORIAL))
    return got


def _learned_columns(aff: Array, age_h: Array, has_pub: npt.NDArray[np.bool_], clicks: Array,
                     imps: Array, ranking: RankingSpec, trends: TrendSums | None,
                     refs: Array, coread: Array | None = None,
                     similarity: Array | None = None) -> dict[str, Array]:
    """The learned ranker's features (:func:`feedpipe.rank.components.learned_features`, the
    evaluation's code) of a (users x items) chunk, each broadcast to (m, n). Trending windows
    (:func:`feedpipe.model.signals.trend_values`) are read at each user's last event time
    (``refs``, ms); without ``trends`` they are 0. ``coread``: (m, n) co-read scores
    (:func:`coread_matrix`; None: 0). ``similarity``: (m, n) content similarity
    (:func:`_similarity`; None: 0)."""
    n = aff.shape[1]
    zeros = np.zeros(n)
    usable = bool(trends) and all(a.shape == (n, 4) for a in (trends or {}).values())
    trend = trend_values(trends, refs) if trends and usable else None
    cands = Candidates(affinity=aff, age_hours=np.where(has_pub[None, :], age_h, np.nan),
                       clicks=clicks, impressions=imps, category_weight=zeros, bias=zeros,
                       trend=trend, coread=coread, similarity=similarity)
    return {k: np.broadcast_to(v, aff.shape) for k, v in learned_features(cands, ranking).items()}


def _similarity(part: Sequence[Mapping[str, Any]], matrix: CandidateMatrix) -> Array:
    """(m, n) cosine of each profile's text interest vector with each item's text vector
    (:func:`feedpipe.model.interest.similarity_rows`; 0 without either)."""
    return similarity_rows([interest_of(p) for p in part], matrix.text)


def coread_matrix(maps: Sequence[Mapping[str, float]], index: Mapping[str, int], n: int
                  ) -> Array | None:
    """(m, n) co-read scores of m users' maps (content id -> score) over the matrix rows
    ``index``; None when no user has a co-read inside the matrix."""
    rows, cols, vals = row_entries(maps, index)
    if not rows:
        return None
    out = np.zeros((len(maps), n))
    out[rows, cols] = vals
    return out
