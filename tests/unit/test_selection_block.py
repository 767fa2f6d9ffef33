"""The whole-block selection (feedpipe.rank.selection.select_block) picks what the per-user
path (diversified / top_rows) and the walk of feedpipe.rank.candidates.diversify pick: same
items, same order, on random blocks with many ties, not-allowed items, concentrated users,
short feeds and rows with a NaN or infinite allowed score."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from feedpipe.rank.candidates import diversify
from feedpipe.rank.selection import diversified, select_block, top_rows, within_caps


def _per_user(score: npt.NDArray[np.float64], n_allowed: npt.NDArray[np.int64],
              primary: npt.NDArray[np.int64], k: int, cap: int) -> list[list[int]]:
    """The reference: each row through the per-user functions rank_feeds used to call."""
    out: list[list[int]] = []
    for row, allowed in zip(score, n_allowed.tolist(), strict=True):
        if allowed == 0:
            out.append([])
        elif cap > 0:
            out.append(diversified(row, allowed, primary, k, cap))
        else:
            out.append(top_rows(row, min(k, allowed)).tolist())
    return out


def _block(rng: np.random.Generator, m: int, n: int, cats: int, trial: int
           ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    primary = rng.integers(-1, cats, size=n).astype(np.int64)
    score = np.round(rng.random((m, n)), int(rng.integers(1, 4)))  # rounded: many ties
    if trial % 3 == 1:  # users concentrated on a few categories: they fill their caps first
        favourite = rng.integers(0, cats, size=(m, 1))
        score += (primary[None, :] == favourite) * 2.0
    allowed = rng.random((m, n)) < rng.uniform(0.02, 1.0, size=(m, 1))
    score[~allowed] = -np.inf
    n_allowed = allowed.sum(axis=1).astype(np.int64)
    if trial % 5 == 0:  # an allowed item without a finite score: the per-user fallback
        row, col = int(rng.integers(0, m)), int(rng.integers(0, n))
        if allowed[row, col]:
            score[row, col] = np.nan if trial % 2 else -np.inf
    return score, n_allowed, primary


def test_select_block_equals_the_per_user_selection() -> None:
    rng = np.random.default_rng(15)
    for trial in range(400):
        m, n = int(rng.integers(1, 40)), int(rng.integers(1, 700))
        k, cap = int(rng.integers(1, 120)), int(rng.integers(0, 15))
        score, n_allowed, primary = _block(rng, m, n, int(rng.integers(1, 12)), trial)
        got = [r.tolist() for r in select_block(score, n_allowed, primary, k, cap)]
        assert got == _per_user(score, n_allowed, primary, k, cap), trial


def test_select_block_equals_the_walk_over_the_full_order() -> None:
    rng = np.random.default_rng(5)
    for trial in range(200):
        m, n = int(rng.integers(1, 20)), int(rng.integers(1, 400))
        k, cap = int(rng.integers(1, 80)), int(rng.integers(1, 10))
        score, _, primary = _block(rng, m, n, int(rng.integers(1, 6)), trial * 3 + 1)
        score[~np.isfinite(score)] = -np.inf
        n_allowed = np.isfinite(score).sum(axis=1).astype(np.int64)
        got = select_block(score, n_allowed, primary, k, cap)
        for row in range(m):
            order = np.argsort(-score[row], kind="stable")[: int(n_allowed[row])].tolist()
            assert got[row].tolist() == diversify(order, primary.tolist(), k, cap), trial


def test_a_short_feed_is_topped_up_with_capped_out_items_in_score_order() -> None:
    primary = np.array([0, 0, 0, 1, 0], dtype=np.int64)
    score = np.array([[0.9, 0.8, 0.7, 0.1, 0.8]])
    got = select_block(score, np.array([5]), primary, 4, 2)
    # caps keep 0, 1 (category 0) and 3; the best capped-out items follow: 4 (0.8, ties by
    # index after 1), then 2
    assert got[0].tolist() == [0, 1, 3, 4]


def test_within_caps_breaks_ties_at_the_cap_by_index() -> None:
    primary = np.array([0, 0, 0, 0, -1], dtype=np.int64)
    score = np.array([[0.5, 0.5, 0.9, 0.5, 0.1], [0.5, -np.inf, 0.5, 0.5, -np.inf]])
    assert within_caps(score, primary, 2).tolist() == [
        [True, False, True, False, True], [True, False, True, False, False]]


def test_nothing_allowed_gives_an_empty_feed() -> None:
    score = np.full((2, 3), -np.inf)
    got = select_block(score, np.zeros(2, dtype=np.int64), np.zeros(3, dtype=np.int64), 5, 2)
    assert [g.tolist() for g in got] == [[], []]
