"""The feeds' ranking: many users' candidates scored at once (numpy, no I/O).

:func:`rank_users` is what the click path and the read endpoint's celebrity
merge call: per user and brand it serves the weight set of the user's A/B arm or of the brand,
scores that weight set's ranker (formulas in :mod:`feedpipe.rank.components`) over a
(users x items) chunk of the :class:`feedpipe.model.item.CandidateMatrix`, restricts to the
candidates (:mod:`feedpipe.rank.candidates`) and returns explained feed items. The pure-Python
:func:`feedpipe.rank.reference.rank` checks it in the unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
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
    sources_of,
    trending_rows,
)
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
from feedpipe.rank.weights import RankingConfig
from feedpipe.topology import RANKER_COMPONENTS, EditorialSpec, RankingSpec

_LEARNED = RANKER_COMPONENTS["learned"]

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


@cache
def _source_names(bits: int) -> list[str]:
    """:func:`feedpipe.rank.candidates.sources_of`, one shared list per bit set (the compact feed
    store groups items by the identity of their descriptive values)."""
    return sources_of(bits)


@dataclass(frozen=True, slots=True)
class ItemColumns:
    """Per-item columns of one (matrix, stats, ranking spec, default bias) that every
    :func:`rank_users` call on them shares: ``imps``/``clicks`` (n,) float from the stats,
    ``eng`` the engagement component, ``brand_names`` (sorted) with ``brand_code`` (name ->
    code), ``codes`` (n,) each item's brand code and ``col_masks`` one (n,) bool per code,
    ``has_pub`` (n,) bool, ``bias`` (n,) the editorial bias match, ``primary`` (n,) int, ``cids``
    the content ids in row order."""

    key: tuple[Any, ...]
    imps: Array
    clicks: Array
    eng: Array
    brand_names: list[str]
    brand_code: dict[str, int]
    codes: npt.NDArray[np.int64]
    col_masks: list[npt.NDArray[np.bool_]]
    has_pub: npt.NDArray[np.bool_]
    bias: Array
    primary: npt.NDArray[np.int64]
    cids: list[str]


_COLUMNS: list[ItemColumns] = []  # the last one built (its key holds the objects, not ids)


def item_columns(matrix: CandidateMatrix, stats: Mapping[str, tuple[int, int]],
                 ranking: RankingSpec, default_bias: float) -> ItemColumns:
    """The :class:`ItemColumns` of these inputs, built once and reused while the same objects
    come back (the worker replaces its matrix and stats mappings when it reloads them, never
    changes them in place; live-shaped batches rank a few users each, so these O(n) Python
    loops would otherwise be paid per batch)."""
    key = (matrix, stats, ranking, default_bias)
    last = _COLUMNS[0] if _COLUMNS else None  # one read: the refresher ranks in another thread
    if last is not None and all(a is b or a == b for a, b in zip(last.key, key, strict=True)):
        return last
    n = len(matrix)
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
        bias=bias_match(np.full(n, default_bias), 0.5),
        primary=np.asarray(matrix.primary, dtype=np.int64),
        cids=[meta.content_id for meta in matrix.metas],
    )
    _COLUMNS[:] = [cols]
    return cols


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
    """Rank each profile's candidates with the ranker and weights serving it; feed items out.

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
            source's clock) are scored, and each item carries ``sources`` (their names, e.g.
            ``["fresh", "affinity"]``). None: every allowed item is scored, no ``sources``.
        trends: trending-window sums of the matrix rows (epoch -> (n, 4),
            :func:`feedpipe.store.trends.read_trends`), for ``learned`` weight sets; None or
            rows not matching the matrix: those features are 0.
        coreads: per profile, content id -> co-read score
            (:func:`feedpipe.store.coreads.user_coreads`, i.e.
            :func:`feedpipe.model.signals.coread_scores`; ids outside the matrix ignored): the
            ``learned`` ranker's ``coread`` feature and, with ``sources``, the ``coread``
            candidate source. None: 0 and no such source.

    Returns:
        Per profile, the feed items: ``{"content_id", "brand", "rank", "score", <the ranker's
        components>, "weights" (the weight values), "ranker", "weight_set", "weight_version",
        "arm", "experiment"}`` (arm and experiment None outside experiments).

    Raises:
        KeyError: an experiment arm naming an unknown weight set (topology validation
            prevents it).
    """
    n = len(matrix)
    if n == 0:
        return [[] for _ in profiles]
    editorial = config.rankers.editorial
    cols = item_columns(matrix, stats, ranking, editorial.default_bias)
    imps, clicks, eng = cols.imps, cols.clicks, cols.eng
    brand_names, brand_code, codes, col_masks = (
        cols.brand_names, cols.brand_code, cols.codes, cols.col_masks)
    published, has_pub, bias, primary, cids = (
        matrix.published, cols.has_pub, cols.bias, cols.primary, cols.cids)
    slots = matrix.slots
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
        aff = affinity_from_slots(s_cat, s_top, *slots)
        refs = np.array([float(p.get("last_seen") or 0) for p in part])
        age_h = np.maximum(0.0, (refs[:, None] - published[None, :]) / HOUR_MS)
        # Recency with np.power (``2.0 **``, as feedpipe.rank.reference.recency), not
        # components.recency_component: its np.exp2 can round the last bit differently.
        with np.errstate(invalid="ignore"):
            rec = np.where(has_pub[None, :], 2.0 ** (-age_h / ranking.recency_half_life_hours), 0.0)
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
            idx = np.asarray(rows)
            if a.weights.ranker == "affinity":
                s = ws["a"] * aff[idx] + ws["b"] * rec[idx] + ws["c"] * eng
            elif a.weights.ranker == "learned":
                if learned is None:
                    learned = _learned_columns(aff, age_h, has_pub, clicks, imps, ranking,
                                               trends, refs, co, _similarity(part, matrix))
                s = sum(ws[k] * learned[k][idx] for k in _LEARNED)
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
                slots=slots,
                coread=co,
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
            if cap > 0:  # diversity: the allowed items in score order, then the cap
                top = diversified(row_score, n_allowed, primary, ranking.feed_size, cap)
            else:
                top = top_rows(row_score, min(ranking.feed_size, n_allowed)).tolist()
            # per item: values of the selected columns converted in bulk (``tolist``), the
            # assignment's descriptive fields shared per (row, brand)
            sel = np.asarray(top, dtype=np.intp)
            code_l = codes[sel].tolist()
            score_l = row_score[sel].tolist()
            aff_l, rec_l, eng_l = aff[row, sel].tolist(), rec[row, sel].tolist(), eng[sel].tolist()
            bits_l = bits[row, sel].tolist() if bits is not None else None
            tails: dict[int, dict[str, Any]] = {}
            items: list[dict[str, Any]] = []
            a = assigned[(row, code_l[0])]
            if bits_l is not None and a.weights.ranker == "affinity" and code_l.count(
                code_l[0]
            ) == len(code_l):
                # one brand, the affinity ranker: the common case, built in one comprehension
                # (same items, same key order as the loop below)
                wd = weights_dicts.get(a.weight_set)
                if wd is None:
                    wd = weights_dicts[a.weight_set] = dict(a.weights.weights)
                brand = brand_names[code_l[0]]
                ranker, ws_name, ws_version = a.weights.ranker, a.weight_set, a.weights.version
                arm, experiment = a.arm, a.experiment
                results.append([
                    {"content_id": cids[i], "brand": brand, "rank": rank_no, "score": sc,
                     "affinity": af, "recency": rc, "engagement": en,
                     "sources": _source_names(bt), "weights": wd, "ranker": ranker,
                     "weight_set": ws_name, "weight_version": ws_version, "arm": arm,
                     "experiment": experiment}
                    for rank_no, i, sc, af, rc, en, bt in zip(
                        range(1, len(top) + 1), top, score_l, aff_l, rec_l, eng_l, bits_l,
                        strict=True,
                    )
                ])
                continue
            for rank_no, (i, code) in enumerate(zip(top, code_l, strict=True), start=1):
                a = assigned[(row, code)]
                tail = tails.get(code)
                if tail is None:
                    wd = weights_dicts.get(a.weight_set)
                    if wd is None:
                        wd = weights_dicts[a.weight_set] = dict(a.weights.weights)
                    tail = tails[code] = {
                        "weights": wd,
                        "ranker": a.weights.ranker,
                        "weight_set": a.weight_set,
                        "weight_version": a.weights.version,
                        "arm": a.arm,
                        "experiment": a.experiment,
                    }
                j = rank_no - 1
                item: dict[str, Any] = {
                    "content_id": cids[i],
                    "brand": brand_names[code],
                    "rank": rank_no,
                    "score": score_l[j],
                }
                if a.weights.ranker == "affinity":
                    item["affinity"] = aff_l[j]
                    item["recency"] = rec_l[j]
                    item["engagement"] = eng_l[j]
                elif a.weights.ranker == "learned":
                    assert learned is not None
                    for k in _LEARNED:
                        item[k] = float(learned[k][row, i])
                else:
                    assert fresh is not None
                    item["category"] = float(cat_cols[code][i])
                    item["bias"] = float(bias[i])
                    item["freshness"] = float(fresh[row, i])
                if bits_l is not None:
                    item["sources"] = _source_names(bits_l[j])
                item.update(tail)
                items.append(item)
            results.append(items)
    return results


PREFIX_FACTOR = 4
"""Items in score order tried first for a diversified feed: ``PREFIX_FACTOR x feed_size``."""


def diversified(
    row_score: Array, n_allowed: int, primary: Sequence[int] | npt.NDArray[np.int64], k: int,
    cap: int,
) -> list[int]:
    """:func:`feedpipe.rank.candidates.diversify` of the ``n_allowed`` allowed items of
    ``row_score`` in score order, with numpy instead of a Python walk over the order.

    The walk of ``diversify`` picks the j-th item of a category (in score order) exactly when
    j < ``cap`` (or the item has no category, -1), stopping at ``k`` picks; when fewer than
    ``k`` qualify it appends the best capped-out items. So the result is the first ``k``
    qualifying items of the order, then the first capped-out ones: computed here from each
    item's rank within its category (a stable sort of the order by category). The best
    ``PREFIX_FACTOR * k`` items are tried first (O(n) partition, then a short sort); the
    whole order is sorted only when that prefix holds fewer than ``k`` qualifying items.
    Same result as ``diversify`` on the full order (tests/unit/test_candidates.py).
    """
    prim = np.asarray(primary, dtype=np.int64)
    head = min(n_allowed, PREFIX_FACTOR * k)
    if head < n_allowed:
        order = top_rows(row_score, head)
        ok = _within_caps(prim[order], cap)
        if int(ok.sum()) >= k:
            return order[ok][:k].tolist()
        if cap > 0:
            got = _after_prefix(row_score, n_allowed, prim, k, cap, order, ok)
            if got is not None:
                return got
    # the whole order: one stable sort (score descending, ties by index)
    order = np.argsort(-row_score, kind="stable")[:n_allowed]
    ok = _within_caps(prim[order], cap)
    picked = order[ok][:k]
    if len(picked) < k:
        picked = np.concatenate([picked, order[~ok][: k - len(picked)]])
    return picked.tolist()


def _after_prefix(
    row_score: Array, n_allowed: int, prim: npt.NDArray[np.int64], k: int, cap: int,
    order: npt.NDArray[np.intp], ok: npt.NDArray[np.bool_],
) -> list[int] | None:
    """:func:`diversified`'s picks when the best ``len(order)`` items (``order``, their
    within-cap flags ``ok``) settle fewer than ``k``: the items after the prefix of a
    category already holding ``cap`` items can never qualify, so only the other categories'
    remaining items are ranked, again a head at a time (the best ``PREFIX_FACTOR`` x the
    picks still missing, by :func:`top_rows`), each item's rank in its category counting
    the items of it already passed. A user concentrated on a few categories fills them in
    the first prefix; the rest of the catalogue is what is left. None when the qualifying
    items are fewer than ``k`` (the capped-out top-up needs the whole order) or the allowed
    items are not exactly the finite scores."""
    finite = row_score > -np.inf
    if int(np.count_nonzero(finite)) != n_allowed:
        return None
    size = int(prim.max()) + 1 if len(prim) else 0
    held = np.zeros(size + 1, dtype=np.int64)  # items passed per category (last: none)
    slot = np.where(prim >= 0, prim, size)
    remaining = finite
    picked = [order[ok]]
    need = k - int(ok.sum())
    head = order
    while True:
        held += np.bincount(slot[head], minlength=size + 1)
        remaining[head] = False
        full = held >= cap
        full[size] = False  # items without a category are never capped
        remaining &= ~full[slot]
        cand = np.flatnonzero(remaining)
        if len(cand) == 0:
            return None
        head = cand[top_rows(row_score[cand], min(len(cand), PREFIX_FACTOR * need))]
        cats = prim[head]
        before = held[slot[head]]
        qualify = (_rank_in_category(cats) + before < cap) | (cats < 0)
        got = head[qualify]
        picked.append(got)
        need -= len(got)
        if need <= 0:
            return np.concatenate(picked)[:k].tolist()


def _rank_in_category(cats: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per position of an order with categories ``cats``: how many earlier positions have the
    same category."""
    n = len(cats)
    by_cat = np.argsort(cats, kind="stable")  # positions grouped by category, order kept
    grouped = cats[by_cat]
    pos = np.arange(n)
    starts = np.zeros(n, dtype=np.int64)  # each group's first position, carried forward
    if n:
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(grouped[1:], grouped[:-1], out=new[1:])
        starts = np.maximum.accumulate(np.where(new, pos, 0))
    rank_in = np.empty(n, dtype=np.int64)
    rank_in[by_cat] = pos - starts
    return rank_in


def _within_caps(cats: npt.NDArray[np.int64], cap: int) -> npt.NDArray[np.bool_]:
    """Per position of a score order with primary categories ``cats``: True when the item is
    among the first ``cap`` of its category in that order, or has no category (-1); all
    True when ``cap`` <= 0 (no cap)."""
    if cap <= 0:
        return np.ones(len(cats), dtype=bool)
    return (_rank_in_category(cats) < cap) | (cats < 0)


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


def top_rows(row_score: Array, k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` highest scores of a 1-D array (1 <= k <= n), best first; ties
    broken by index, i.e. by content id, since candidate matrices are sorted by content id.
    Uses ``np.partition`` (O(n)) then sorts only the ``k`` selected (plus ties at the cut-off).
    """
    n = len(row_score)
    kth = np.partition(row_score, n - k)[n - k]
    idx = np.flatnonzero(row_score >= kth)  # ascending: a stable sort keeps ties by index
    return idx[np.argsort(-row_score[idx], kind="stable")][:k]
