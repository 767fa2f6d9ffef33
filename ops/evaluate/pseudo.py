"""Pseudo-impressions from the fitting log's reading histories (``feedpipe evaluate --fit
--pseudo``): the pairs of two items with metadata that the fitting log's real impressions lack,
so that the content weights (``affinity``, ``similarity``) of the ``learned`` ranker are
identified by the fit (docs/evaluation.md, "Pseudo-impressions").

A MIND history is the reader's clicks before the impression, oldest first. For every history
click *i* on an item with metadata whose earlier history (clicks 0..i-1) holds at least one item
with metadata, one pseudo-impression is built:

* positive: history item *i*; profile and interest vector: history items 0..i-1, through
  :class:`ops.evaluate.data.ContentScorer` (the click path's profile and interest code);
* time: MIND histories carry no click times; click *i* of *h* is placed at ``row time -
  (h - i) * profiles.history_click_spacing_s``, as ``connectors/replay.py`` places them;
* negatives: :data:`NEGATIVES` items drawn uniformly (seeded) from a pool of items with
  metadata of the fitting-log rows within :data:`POOL_WINDOW_H` hours of the row's time, none
  of them in the reader's history. Pool ``shown``: the rows' candidates (items the reader could
  have been shown then); pool ``read``: the rows' *histories* (items other readers had read),
  the same kind of item as the positive: in MIND's sample the history items with metadata and
  the candidates with metadata are nearly disjoint sets (583 and 277 items, 34 in both, on the
  fitting split), so against shown negatives the content features can learn "an older,
  already-read kind of item" instead of this reader's interest; pool ``own``: the candidates
  with metadata of the reader's own fitting rows (any time): items the reader's feed
  actually showed them, chosen for them, so the content contrast is the one a ranker faces;
* each reader counts once (the first fitting row of the user; later rows repeat the history).

Only the content features vary within a pseudo-impression: counts, trending windows, co-reads
and age are unknown at an unknown click time, so they are held constant (zero) and, centred per
impression by :func:`ops.evaluate.fit.centre`, contribute nothing: pseudo-impressions inform the
content weights only, the real impressions all the others.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from feedpipe.model.item import Meta
from feedpipe.model.text import SparseVec
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.components import Candidates, category_weights
from feedpipe.topology import Topology
from ops.evaluate.data import ContentScorer, Impression, Prepared

NEGATIVES = 4
"""Negatives per pseudo-impression: the negative-sampling ratio K = 4 of the MIND baselines'
training (Wu et al., "Neural News Recommendation with Multi-Head Self-Attention", EMNLP 2019;
Wu et al., "MIND: A Large-scale Dataset for News Recommendation", ACL 2020)."""

POOLS: tuple[str, ...] = ("shown", "read", "own")
"""Where the negatives come from (module docstring): the nearby rows' candidates or their
histories, or the reader's own rows' candidates."""

POOL_WINDOW_H = 24
"""Half-width in hours of the window of fitting-log rows whose candidates with metadata are
the negatives' pool (a day: MIND's impressions of one day show one day's news)."""


def pseudo_impressions(
    rows: Sequence[Impression],
    metas: Mapping[str, Meta],
    texts: Mapping[str, SparseVec],
    topo: Topology,
    brand: str = "mind",
    negatives: int = NEGATIVES,
    window_h: float = POOL_WINDOW_H,
    seed: int = 0,
    pool_from: str = "shown",
) -> list[Prepared]:
    """Pseudo-impressions (module docstring) of the fitting rows ``rows``.

    Returns one :class:`Prepared` per history click that qualifies and has at least one
    negative; labels ``[1, 0, ...]``, ``has_meta`` all 1, ``impression.impression_id``
    ``"pseudo:<row id>:<i>"``. Deterministic for a given ``seed``.

    Raises:
        ValueError: ``negatives`` < 1, ``window_h`` < 0 or ``pool_from`` not in :data:`POOLS`.
    """
    if negatives < 1 or window_h < 0:
        raise ValueError("negatives must be >= 1 and window_h >= 0")
    if pool_from not in POOLS:
        raise ValueError(f"unknown negatives pool {pool_from!r}; known: {', '.join(POOLS)}")
    editorial = topo.ranker_config().editorial
    content = ContentScorer(metas, texts, topo)
    spacing_ms = topo.profiles.history_click_spacing_s * 1000
    ordered = sorted(rows, key=lambda r: (r.at_ms, r.impression_id))
    times = [r.at_ms for r in ordered]
    pooled = [[c for c in (r.candidates if pool_from == "shown" else r.history) if c in metas]
             for r in ordered]
    window_ms = int(window_h * HOUR_MS)
    rng = np.random.default_rng([seed, 2])
    own: dict[str, set[str]] = {}
    for r in ordered:
        own.setdefault(r.user_id, set()).update(c for c in r.candidates if c in metas)
    seen_users: set[str] = set()
    out: list[Prepared] = []
    for row in ordered:
        if row.user_id in seen_users:
            continue
        seen_users.add(row.user_id)
        read = set(row.history)
        lo = bisect.bisect_left(times, row.at_ms - window_ms)
        hi = bisect.bisect_right(times, row.at_ms + window_ms)
        near = own[row.user_id] if pool_from == "own" else {
            c for j in range(lo, hi) for c in pooled[j]}
        pool = sorted(near - read)
        if not pool:
            continue
        h = len(row.history)
        profile_has_meta = False
        for i, nid in enumerate(row.history):
            if nid not in metas:
                continue
            if not profile_has_meta:  # the first item with metadata only starts the profile
                profile_has_meta = True
                continue
            k = min(negatives, len(pool))
            negs = [pool[j] for j in rng.choice(len(pool), size=k, replace=False)]
            cands = (nid, *negs)
            at_ms = row.at_ms - (h - i) * spacing_ms
            key = f"pseudo:{row.impression_id}:{i}"
            aff, sim, has_meta, _ = content.features(key, row.user_id, at_ms,
                                                     row.history[:i], cands)
            zero = np.zeros(len(cands))
            labels = (1, *([0] * k))
            out.append(Prepared(
                Impression(key, row.user_id, at_ms, row.history[:i], cands, labels),
                np.array(labels, dtype=float),
                Candidates(affinity=aff, age_hours=zero, clicks=zero, impressions=zero,
                           category_weight=category_weights([metas.get(c) for c in cands],
                                                            brand, editorial),
                           bias=zero + editorial.default_bias,
                           user_bias=editorial.default_bias, similarity=sim),
                has_meta,
            ))
    return out


def load_pseudo(path: Path, news: Path, topo: Topology, exclude: Path | None = None,
                brand: str = "mind", pool_from: str = "shown") -> list[Prepared]:
    """:func:`pseudo_impressions` of the rows of ``path`` (MIND behaviors-format file or
    EB-NeRD split folder) minus the impression ids of ``exclude``, negatives from
    ``pool_from``.

    Raises:
        ConfigError: an unreadable input file.
    """
    from ops.evaluate.data import read_news
    from ops.evaluate.ebnerd import is_ebnerd, read_ebnerd
    from ops.evaluate.report import read_rows

    texts: dict[str, SparseVec] = {}
    if is_ebnerd(path):
        brand = "ebnerd" if brand == "mind" else brand
        rows, _, metas, texts, _ = read_ebnerd(path, topo, brand)
    else:
        rows = read_rows(path, topo, brand)
        metas, _ = read_news(news, topo, brand, texts)
    if exclude is not None:
        drop = {r.impression_id for r in read_rows(exclude, topo, brand)}
        rows = [r for r in rows if r.impression_id not in drop]
    return pseudo_impressions(rows, metas, texts, topo, brand, pool_from=pool_from)
