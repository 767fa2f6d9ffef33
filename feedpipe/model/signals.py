"""Online item signals of the ``learned`` ranker: trending windows and co-reads (pure, no I/O).

Both the offline evaluation (:mod:`ops.evaluate`, replaying a log strictly before each
impression) and a live consumer update the same state with the same functions.

* **Trending windows** (:func:`trend_add`, :func:`trend_values`): per item, clicks and
  impressions exponentially decayed with half-lives of 1 h and 24 h (:data:`TREND_HALF_LIVES_MS`).
  Forward decay (Cormode, Shkapenyuk, Srivastava, Xu, "Forward Decay: A Practical Time Decay
  Model for Streaming Systems", ICDE 2009): an event at ``t`` adds ``2 ** ((t - L) / H)`` to a
  sum with landmark ``L`` (the start of the event's weekly epoch, :data:`TREND_EPOCH_MS`); the
  decayed count at ``T`` is ``sum * 2 ** (-(T - L) / H)``, so the result does not depend on the
  order events arrive in. In-view counts and recent popularity were the
  strongest features of the RecSys Challenge 2024 on EB-NeRD (Kruse et al., "EB-NeRD: A
  Large-Scale Dataset for News Recommendation", RecSys Challenge 2024).
* **Co-reads** (:func:`coread_add`, :func:`coread_scores`): item-to-item counts of "read X,
  then Y" over the reader's last :data:`COREAD_WINDOW` reads, at most
  :data:`COREAD_NEIGHBOURS` neighbours kept per item (the smallest count is evicted, ties by
  id), so memory is bounded by ``items * COREAD_NEIGHBOURS`` entries. Item-based collaborative
  filtering (Sarwar, Karypis, Konstan, Riedl, "Item-Based Collaborative Filtering
  Recommendation Algorithms", WWW 2001; Linden, Smith, York, "Amazon.com Recommendations:
  Item-to-Item Collaborative Filtering", IEEE Internet Computing 2003).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from feedpipe.model.units import HOUR_MS

TREND_HALF_LIVES_MS: tuple[float, float] = (1.0 * HOUR_MS, 24.0 * HOUR_MS)
"""Half-lives (ms) of the two trending windows: 1 h and 24 h."""

_H1, _H24 = TREND_HALF_LIVES_MS

COREAD_WINDOW = 5
"""Reads before a click that count as its predecessors ("read X, then Y")."""

COREAD_NEIGHBOURS = 50
"""Co-read neighbours kept per item (bounded memory)."""

TREND_EPOCH_MS = 7 * 24 * HOUR_MS
"""Length (ms) of a trending-window epoch; epoch ``e`` has the forward-decay landmark
``e * TREND_EPOCH_MS``, so within an epoch the largest weight is ``2 ** 168`` (1 h half-life),
far inside float64's range, and sums of one epoch are plain additions (HINCRBYFLOAT live)."""

Trend = dict[int, list[float]]
"""Trending state of one item: epoch -> ``[clicks_1h, shown_1h, clicks_24h, shown_24h]``,
forward-decayed sums with the epoch's landmark (see the module docstring)."""

TrendSums = dict[int, npt.NDArray[np.float64]]
"""Trending state of n items: epoch -> (n, 4) sums (rows: items; columns as :data:`Trend`)."""

CoReads = dict[str, dict[str, float]]
"""Co-read table: item X -> {item Y read after X: count}, at most COREAD_NEIGHBOURS per X."""


def trend_epoch(at_ms: float) -> int:
    """The trending-window epoch of an event time (epoch ms)."""
    return int(at_ms // TREND_EPOCH_MS)


def trend_add(state: Trend | None, clicked: bool, at_ms: int, shown: bool = True) -> Trend:
    """Add one impression (and a click when ``clicked``) of an item at ``at_ms`` (epoch ms).

    ``state`` None starts a new state; otherwise it is updated in place and returned. An item
    is clicked in view: a log row's clicked candidate is one impression and one click; a
    stream that sends the impression and the click as two events adds the click with
    ``shown=False``. Adding two states' sums epoch by epoch gives the state of both event sets
    (what the click path's HINCRBYFLOAT does).
    """
    if state is None:
        state = {}
    e = int(at_ms // TREND_EPOCH_MS)
    sums = state.get(e)
    if sums is None:
        sums = state[e] = [0.0, 0.0, 0.0, 0.0]
    x = at_ms - e * TREND_EPOCH_MS
    w1 = 2.0 ** (x / _H1)  # per event on the click path: no loop, no helper calls
    w24 = 2.0 ** (x / _H24)
    if clicked:
        sums[0] += w1
        sums[2] += w24
    if shown:
        sums[1] += w1
        sums[3] += w24
    return state


def trend_values(sums: TrendSums, now_ms: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Decayed ``(clicks_1h, shown_1h, clicks_24h, shown_24h)`` of n items for m readers.

    Args:
        sums: epoch -> (n, 4) forward-decay sums.
        now_ms: (m,) reading times (epoch ms), one per reader.

    Returns (m, n, 4). Only the epoch of ``now`` and the one before count (an older event
    weighs less than ``2 ** -7`` on the 24 h window); events after ``now`` are not excluded
    here: the caller feeds only earlier events (the evaluation) or reads at the reader's newest
    event (live).
    """
    now = np.asarray(now_ms, dtype=float)
    n = next(iter(sums.values())).shape[0] if sums else 0
    out = np.zeros((len(now), n, 4))
    cur = np.floor(now / TREND_EPOCH_MS)
    halves = np.array([TREND_HALF_LIVES_MS[0]] * 2 + [TREND_HALF_LIVES_MS[1]] * 2)
    for e, s in sums.items():
        used = (e >= cur - 1)[:, None]
        with np.errstate(under="ignore"):
            f = np.exp2(-(now[:, None] - e * TREND_EPOCH_MS) / halves[None, :])  # (m, 4)
        out += np.where(used, f, 0.0)[:, None, :] * s[None, :, :]
    return out


def trend_at(state: Trend | None, now_ms: float) -> tuple[float, float, float, float]:
    """:func:`trend_values` of one item and one reading time; zeros for ``state`` None."""
    if not state:
        return (0.0, 0.0, 0.0, 0.0)
    sums = {e: np.array([v]) for e, v in state.items()}
    v = trend_values(sums, np.array([now_ms]))[0, 0]
    return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))


def coread_add(table: CoReads, prior_reads: Sequence[str], item: str,
               window: int = COREAD_WINDOW, neighbours: int = COREAD_NEIGHBOURS) -> None:
    """Count "read X, then ``item``" for the last ``window`` of ``prior_reads`` (oldest first).

    Updates ``table`` in place; an X with more than ``neighbours`` entries loses its smallest
    (ties: the largest id), so each X keeps at most ``neighbours`` entries.
    """
    for x in dict.fromkeys(prior_reads[-window:] if window > 0 else ()):
        if x == item:
            continue
        row = table.setdefault(x, {})
        row[item] = row.get(item, 0.0) + 1.0
        if len(row) > neighbours:
            del row[_evicted(row)]


def _evicted(row: Mapping[str, float]) -> str:
    """The entry :func:`coread_add` evicts: the smallest count, among equal counts the first by
    :func:`_neg` (the largest id; a proper prefix of it before it), without building a key per
    entry (a full row is 50 ids of 64 characters, evicted at every new neighbour)."""
    lo = min(row.values())
    tied = [k for k, v in row.items() if v == lo]
    top = max(tied)
    return min((k for k in tied if top.startswith(k)), key=len)


def coread_replay(table: CoReads, reads: Sequence[str], done: int = 0,
                  window: int = COREAD_WINDOW, neighbours: int = COREAD_NEIGHBOURS) -> int:
    """Count the co-reads of a reader's reads ``reads`` (oldest first) from position ``done`` on,
    as if each were clicked in order: :func:`coread_add` of ``reads[i]`` after the ``window``
    reads before it, for ``i >= done``. Returns ``max(done, len(reads))``, the ``done`` of the
    next call with a longer read list of the same reader (a history replayed twice counts once).
    """
    for i in range(done, len(reads)):
        coread_add(table, reads[max(0, i - window):i], reads[i], window, neighbours)
    return max(done, len(reads))


def _neg(s: str) -> tuple[int, ...]:
    """Sort key reversing string order (evict the largest id first among equal counts)."""
    return tuple(-ord(c) for c in s)


def coread_scores(table: Mapping[str, Mapping[str, float]], reads: Sequence[str],
                  candidates: Sequence[str], window: int = COREAD_WINDOW
                  ) -> npt.NDArray[np.float64]:
    """Co-read score of each candidate for a reader whose reads are ``reads`` (oldest first).

    ``sum over X in the last window reads of count(X -> c) / (1 + total count of X)``: the
    estimated chance that a reader of X reads c next, summed over the reader's recent reads.
    Shape (len(candidates),), >= 0.
    """
    out = np.zeros(len(candidates))
    if not candidates:
        return out
    pos = {c: i for i, c in enumerate(candidates)}
    for x in dict.fromkeys(reads[-window:] if window > 0 else ()):
        row = table.get(x)
        if not row:
            continue
        total = 1.0 + sum(row.values())
        for y, n in row.items():
            i = pos.get(y)
            if i is not None:
                out[i] += n / total
    return out
