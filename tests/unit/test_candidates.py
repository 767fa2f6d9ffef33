"""Candidate generation sources and the per-category diversity cap (pure numpy)."""

from __future__ import annotations

import numpy as np

from feedpipe.rank.candidates import (
    AFFINITY,
    FRESH,
    TRENDING,
    CandidateSpec,
    candidate_sources,
    diversify,
    sources_of,
    top_columns,
    trending_rows,
)

H = 3_600_000


def _sources(allowed: np.ndarray, share_cat: list[list[float]], spec: CandidateSpec) -> np.ndarray:
    # 4 items: categories (sports, news) one-hot; no topics; published 1 h, 10 h, 100 h ago, never
    item_cat = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    item_topic = np.zeros((4, 1))
    now = 1_000 * H
    published = np.array([now - 1 * H, now - 10 * H, now - 100 * H, np.nan])
    return candidate_sources(
        item_cat=item_cat,
        item_topic=item_topic,
        published_ms=published,
        allowed=allowed,
        share_cat=np.array(share_cat),
        share_topic=np.zeros((len(share_cat), 1)),
        ref_ms=np.full(len(share_cat), float(now)),
        trending_rows=[3],
        spec=spec,
    )


def test_each_source_proposes_its_items() -> None:
    spec = CandidateSpec(fresh_hours=5, top_affinities=1)
    allowed = np.ones((2, 4), dtype=bool)
    bits = _sources(allowed, [[0.9, 0.1], [0.0, 0.0]], spec)
    # user 0 likes sports (col 0): items 0 and 2 by affinity; item 0 fresh; item 3 trending
    assert bits[0].tolist() == [FRESH | AFFINITY, 0, AFFINITY, TRENDING]
    # user 1 has no affinity: only fresh and trending
    assert bits[1].tolist() == [FRESH, 0, 0, TRENDING]
    assert sources_of(int(bits[0, 0])) == ["fresh", "affinity"]


def test_read_or_other_brand_items_are_never_candidates() -> None:
    allowed = np.array([[False, True, True, False]])
    bits = _sources(allowed, [[0.5, 0.5]], CandidateSpec(fresh_hours=1000, top_affinities=2))
    assert bits[0, 0] == 0 and bits[0, 3] == 0
    assert bits[0, 1] & AFFINITY and bits[0, 1] & FRESH


def test_top_columns_keeps_only_positive_shares() -> None:
    shares = np.array([[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert top_columns(shares, 2).tolist() == [[True, True, False, False], [False] * 4]
    assert top_columns(shares, 10)[0].tolist() == [True, True, True, False]


def test_trending_rows_skip_ids_outside_the_catalogue() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    assert trending_rows(index, {"x": ["gone", "b", "a", "c"], "y": ["c"]}, 3) == [1, 0, 2]


def test_diversify_caps_each_primary_category_then_tops_up() -> None:
    primary = [0, 0, 0, 1, -1, 0]
    order = [0, 1, 2, 3, 4, 5]
    assert diversify(order, primary, 4, per_category=2) == [0, 1, 3, 4]
    # k=6: the caps leave 4, so the capped-out rows are appended in score order
    assert diversify(order, primary, 6, per_category=2) == [0, 1, 3, 4, 2, 5]
    assert diversify(order, primary, 3, per_category=0) == [0, 1, 2]


def test_diversified_prefix_agrees_with_the_full_order() -> None:
    import numpy as np

    from feedpipe.rank.selection import diversified, top_rows

    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(1, 900))
        k = int(rng.integers(1, 60))
        cap = int(rng.integers(0, 12))
        cats = int(rng.integers(1, 8))
        primary = [int(c) for c in rng.integers(-1, cats, size=n)]
        if trial % 2:  # a user concentrated on a category: it ranks first and fills its cap
            score = np.round(rng.random(n), 2) + np.array([p == 0 for p in primary])
        else:
            score = np.round(rng.random(n), 2)  # rounded: many ties
        score[rng.random(n) < 0.3] = -np.inf  # not allowed
        n_allowed = int(np.isfinite(score).sum())
        if n_allowed == 0:
            continue
        full = diversify(top_rows(score, n_allowed).tolist(), primary, k, cap)
        assert diversified(score, n_allowed, primary, k, cap) == full, trial


def test_label_sums_equal_the_one_hot_products() -> None:
    """Gathering each item's label columns gives the dense products of the one-hot matrices
    (affinity scores and the affinity source), including items without a label."""
    import numpy as np

    from feedpipe.model.item import label_slots
    from feedpipe.rank.candidates import label_sums
    from feedpipe.rank.components import affinity_from_slots, affinity_scores

    rng = np.random.default_rng(3)
    for trial in range(50):
        n, cats, topics, m = (int(rng.integers(1, 60)), int(rng.integers(1, 9)),
                              int(rng.integers(1, 30)), int(rng.integers(1, 6)))
        item_cat = (rng.random((n, cats)) < 0.2).astype(float)
        item_top = (rng.random((n, topics)) < 0.1).astype(float)
        s_cat, s_top = rng.random((m, cats)), rng.random((m, topics))
        slots = label_slots(item_cat), label_slots(item_top)
        assert np.allclose(label_sums(s_cat, slots[0]), s_cat @ item_cat.T, rtol=0, atol=1e-12)
        got = affinity_from_slots(s_cat, s_top, *slots)
        want = affinity_scores(s_cat, s_top, item_cat, item_top)
        assert np.allclose(got, want, rtol=0, atol=1e-12), trial
