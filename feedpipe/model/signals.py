"""Online item signals of the ``learned`` ranker: trending windows and co-reads (pure, no I/O).

Both the offline evaluation (:mod:`ops.evaluate`, replaying a log strictly before each
impression) and a live consumer update the same state with the same functions.

* **Trending windows** (:func:`trend_add`, :func:`trend_at`): per item, clicks and impressions
  exponentially decayed with half-lives of 1 h and 24 h (:data:`TREND_HALF_LIVES_MS`). Forward
  decay (Cormode, Shkapenyuk, Srivastava, Xu, "Forward Decay: A Practical Time Decay Model for
  Streaming Systems", ICDE 2009): an event at ``t`` adds ``2 ** ((t - L) / H)`` to a sum with
  landmark ``L``; the decayed count at ``T`` is ``sum * 2 ** (-(T - L) / H)``, so the result
  does not depend on the order events arrive in. In-view counts and recent popularity were the
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

COREAD_WINDOW = 5
"""Reads before a click that count as its predecessors ("read X, then Y")."""

COREAD_NEIGHBOURS = 50
"""Co-read neighbours kept per item (bounded memory)."""

_MAX_EXPONENT = 400.0
"""Rebase the landmark before ``2 ** ((t - L) / H)`` nears float64's range (2 ** 1023)."""

Trend = list[float]
"""Trending state of one item: ``[landmark_ms, clicks_1h, shown_1h, clicks_24h, shown_24h]``
(forward-decayed sums, see the module docstring)."""

CoReads = dict[str, dict[str, float]]
"""Co-read table: item X -> {item Y read after X: count}, at most COREAD_NEIGHBOURS per X."""


def trend_add(state: Trend | None, clicked: bool, at_ms: int) -> Trend:
    """Add one impression (and a click when ``clicked``) of an item at ``at_ms`` (epoch ms).

    ``state`` None starts a new state with landmark ``at_ms``; otherwise it is updated in place
    and returned. A click counts as shown too (an item is clicked in view).
    """
    if state is None:
        state = [float(at_ms), 0.0, 0.0, 0.0, 0.0]
    exp_max = (at_ms - state[0]) / TREND_HALF_LIVES_MS[0]
    if exp_max > _MAX_EXPONENT:
        for k, h in enumerate(TREND_HALF_LIVES_MS):
            f = 2.0 ** (-(at_ms - state[0]) / h)
            state[1 + 2 * k] *= f
            state[2 + 2 * k] *= f
        state[0] = float(at_ms)
    for k, h in enumerate(TREND_HALF_LIVES_MS):
        w = 2.0 ** ((at_ms - state[0]) / h)
        state[1 + 2 * k] += w if clicked else 0.0
        state[2 + 2 * k] += w
    return state


def trend_at(state: Trend | None, now_ms: float) -> tuple[float, float, float, float]:
    """Decayed ``(clicks_1h, shown_1h, clicks_24h, shown_24h)`` of an item at ``now_ms``.

    Zeros for ``state`` None (never shown). Events after ``now_ms`` are not excluded here: the
    caller feeds only earlier events (the evaluation) or reads at the newest event time (live).
    """
    if state is None:
        return (0.0, 0.0, 0.0, 0.0)
    out: list[float] = []
    for k, h in enumerate(TREND_HALF_LIVES_MS):
        f = 2.0 ** (-(now_ms - state[0]) / h)
        out += [state[1 + 2 * k] * f, state[2 + 2 * k] * f]
    return (out[0], out[1], out[2], out[3])


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
            drop = min(row.items(), key=lambda kv: (kv[1], _neg(kv[0])))[0]
            del row[drop]


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
