"""Choosing a feed's rows from scores: the top k, and the diversified top k.

:func:`select_block` is what :func:`feedpipe.rank.rankers.rank_feeds` applies to a chunk of
users' (users x items) scores at once; :func:`top_rows` and :func:`diversified` are the same
choice for one user's row (the per-user fallback, and the reference of
tests/unit/test_selection_block.py). All equal a walk over the full score order (score
descending, ties by matrix row, i.e. by content id) and
:func:`feedpipe.rank.candidates.diversify` (tests/unit/test_candidates.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from feedpipe.rank.components import Array

PREFIX_FACTOR = 4
"""Items in score order tried at a time for a diversified feed: ``PREFIX_FACTOR x`` the picks
still missing."""


def top_rows(row_score: Array, k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` highest scores of a 1-D array (1 <= k <= n), best first; ties
    broken by index, i.e. by content id, since candidate matrices are sorted by content id.
    Uses ``np.partition`` (O(n)) then sorts only the ``k`` selected (plus ties at the cut-off).
    """
    n = len(row_score)
    kth = np.partition(row_score, n - k)[n - k]
    idx = np.flatnonzero(row_score >= kth)  # ascending: a stable sort keeps ties by index
    return idx[np.argsort(-row_score[idx], kind="stable")][:k]


def diversified(
    row_score: Array, n_allowed: int, primary: Sequence[int] | npt.NDArray[np.int64], k: int,
    cap: int,
) -> list[int]:
    """:func:`feedpipe.rank.candidates.diversify` of the ``n_allowed`` allowed items of
    ``row_score`` (the others at -inf) in score order, with numpy instead of a Python walk.

    The walk of ``diversify`` picks the j-th item of a category (in score order) exactly when
    j < ``cap`` (or the item has no category, -1), stopping at ``k`` picks; when fewer than
    ``k`` qualify it appends the best capped-out items. Here the order is taken a head at a
    time (:func:`_capped_heads`); the whole order is sorted only when the qualifying items
    are fewer than ``k`` (the capped-out top-up needs it) or some allowed score is not finite.
    """
    prim = np.asarray(primary, dtype=np.int64)
    if cap <= 0:
        return top_rows(row_score, min(k, n_allowed)).tolist()
    if int(np.count_nonzero(row_score > -np.inf)) == n_allowed:
        got = _capped_heads(row_score, n_allowed, prim, k, cap)
        if got is not None:
            return got
    # the whole order: one stable sort (score descending, ties by index)
    order = np.argsort(-row_score, kind="stable")[:n_allowed]
    ok = _within_caps(prim[order], cap)
    picked = order[ok][:k]
    if len(picked) < k:
        picked = np.concatenate([picked, order[~ok][: k - len(picked)]])
    return picked.tolist()


def _capped_heads(row_score: Array, n_allowed: int, prim: npt.NDArray[np.int64], k: int,
                  cap: int) -> list[int] | None:
    """:func:`diversified`'s picks, ranking a head of the remaining order at a time (the best
    ``PREFIX_FACTOR`` x the picks still missing, by :func:`top_rows`): each head item's rank
    in its category counts the items of it in earlier heads, and after each head the
    remaining items of a category already holding ``cap`` items are dropped (they can never
    qualify). A user concentrated on a few categories fills them in the first head; the rest
    of the catalogue is what is left. None when the qualifying items run out before ``k``.
    ``row_score``'s finite entries are exactly its ``n_allowed`` allowed items."""
    size = int(prim.max()) + 1 if len(prim) else 0
    held = np.zeros(size + 1, dtype=np.int64)  # items passed per category (last: none)
    slot = np.where(prim >= 0, prim, size)
    remaining: npt.NDArray[np.bool_] | None = None  # None: every allowed item
    picked: list[npt.NDArray[np.intp]] = []
    need = k
    while True:
        if remaining is None:  # the first head: straight from the row (-inf items last)
            head = top_rows(row_score, min(n_allowed, PREFIX_FACTOR * need))
            remaining = row_score > -np.inf
        else:
            cand = np.flatnonzero(remaining)
            if len(cand) == 0:
                return None
            head = cand[top_rows(row_score[cand], min(len(cand), PREFIX_FACTOR * need))]
        cats = prim[head]
        qualify = (_rank_in_category(cats) + held[slot[head]] < cap) | (cats < 0)
        got = head[qualify]
        picked.append(got)
        need -= len(got)
        if need <= 0:
            return np.concatenate(picked)[:k].tolist()
        held += np.bincount(slot[head], minlength=size + 1)
        remaining[head] = False
        full = held >= cap
        full[size] = False  # items without a category are never capped
        remaining &= ~full[slot]


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
    among the first ``cap`` of its category in that order, or has no category (-1)."""
    return (_rank_in_category(cats) < cap) | (cats < 0)


def select_block(score: Array, n_allowed: npt.NDArray[np.int64],
                 primary: npt.NDArray[np.int64], k: int, cap: int) -> list[npt.NDArray[np.intp]]:
    """Per row of an (m users x n items) ``score`` block (not-allowed items at -inf), the rows
    :func:`diversified` (``cap`` > 0) or :func:`top_rows` (``cap`` <= 0) picks: the same
    items in the same order, with a few numpy calls for the whole block instead of many per
    user.

    ``n_allowed`` (m,) counts each row's allowed items; ``primary`` (n,) each item's primary
    category (-1: none); ``k`` the feed size. A row's result is an (<= k,) intp array, empty
    when nothing is allowed. The items within the cap are found item by item
    (:func:`within_caps`: no sort of the whole row), then only they are sorted (score
    descending, ties by index, :func:`_sorted_heads`). Rows needing capped-out items to top
    up a short feed, and rows whose finite scores are not exactly their allowed items (a NaN
    or infinite score), take :func:`diversified` / :func:`top_rows` one at a time.
    """
    m = score.shape[0]
    out: list[npt.NDArray[np.intp]] = [np.zeros(0, dtype=np.intp)] * m
    finite = np.count_nonzero(score > -np.inf, axis=1)
    todo = np.flatnonzero((finite == n_allowed) & (n_allowed > 0))
    block = score[todo] if len(todo) < m else score
    ok = within_caps(block, primary, cap) if cap > 0 else block > -np.inf
    counts = np.count_nonzero(ok, axis=1)
    # short of k with capped-out items left: the top-up needs the whole order
    spill = (counts < k) & (counts < finite[todo])
    if spill.any():
        ok = ok[~spill]
        block = block[~spill]
        counts = counts[~spill]
        todo = todo[~spill]
    if len(todo):
        heads = _sorted_heads(block, ok, counts, k)
        for i, row in enumerate(todo.tolist()):
            out[row] = heads[i, : min(k, int(counts[i]))]
    done = np.zeros(m, dtype=bool)
    done[todo] = True  # the others, one at a time
    for row in np.flatnonzero(~done & (n_allowed > 0)).tolist():
        got = (diversified(score[row], int(n_allowed[row]), primary, k, cap) if cap > 0
               else top_rows(score[row], min(k, int(n_allowed[row]))).tolist())
        out[row] = np.asarray(got, dtype=np.intp)
    return out


def within_caps(score: Array, primary: npt.NDArray[np.int64], cap: int
                ) -> npt.NDArray[np.bool_]:
    """(m, n) bool: the finite items of each row of ``score`` that are among the first
    ``cap`` of their primary category in the row's score order (score descending, ties by
    index), and the finite items without a category (-1). Per category holding more than
    ``cap`` items (:func:`_large_categories`): its ``cap``-th best score ``v`` per row (one
    sort of the category's columns), the items above ``v``, and of the items tied at ``v``
    the lowest indices filling the cap."""
    keep = score > -np.inf
    for items in _large_categories(primary, cap):
        sc = score[:, items]
        v = np.sort(sc, axis=1)[:, len(items) - cap]
        above = sc > v[:, None]
        tie = sc == v[:, None]
        room = cap - np.count_nonzero(above, axis=1)
        over = np.flatnonzero(np.count_nonzero(tie, axis=1) > room)  # rows cutting a tie
        if len(over):
            tie[over] &= np.cumsum(tie[over], axis=1, dtype=np.intp) <= room[over, None]
        above |= tie
        keep[:, items] &= above
    return keep


def _large_categories(primary: npt.NDArray[np.int64], cap: int) -> list[npt.NDArray[np.intp]]:
    """The items (indices, ascending) of each category (``primary`` >= 0) with more than
    ``cap`` items: only these can hold a capped-out item. ~90 us for 2,000 items, once per
    chunk of users (~1.4 us per user of a 64-user chunk)."""
    cats, counts = np.unique(primary[primary >= 0], return_counts=True)
    return [np.flatnonzero(primary == c) for c in cats[counts > cap].tolist()]


def _sorted_heads(block: Array, ok: npt.NDArray[np.bool_], counts: npt.NDArray[np.int64],
                  k: int) -> npt.NDArray[np.intp]:
    """(r, min(k, max count)): per row of ``block``, the columns where ``ok`` (``counts`` of
    them) in score order (descending, ties by index), the first ``min(k, counts[i])`` of
    row i meaningful. One stable sort of the ``ok`` scores packed to the left of an
    (r, max count) array."""
    r = block.shape[0]
    rows, cols = np.nonzero(ok)  # row by row, columns ascending
    w = int(counts.max())
    starts = np.zeros(r, dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    pos = np.arange(len(rows)) - starts[rows]
    neg = np.full((r, w), np.inf)
    neg[rows, pos] = -block[rows, cols]
    packed = np.zeros((r, w), dtype=np.intp)
    packed[rows, pos] = cols
    by_score = np.argsort(neg, axis=1, kind="stable")[:, :k]  # ties keep ascending columns
    return np.take_along_axis(packed, by_score, axis=1)
