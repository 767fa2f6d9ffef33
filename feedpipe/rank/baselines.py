"""Baselines of the offline evaluation (:mod:`ops.evaluate`): simple rankers the named rankers
(:mod:`feedpipe.rank.components`) are measured against; never served to readers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feedpipe.rank.components import Array, Candidates

BASELINES: tuple[str, ...] = ("random", "popularity", "recency", "trending")
"""Names of the baselines (see :func:`baseline_scores`)."""


def order(scores: Array, content_ids: Sequence[str]) -> list[int]:
    """Indices of a 1-D ``scores`` (n,) best first; equal scores by content id ascending
    (``content_ids``: n ids)."""
    ids = np.asarray(content_ids, dtype=object)
    return [int(i) for i in np.lexsort((ids, -np.asarray(scores, dtype=float)))]


def baseline_scores(
    name: str, cands: Candidates, rng: np.random.Generator | None = None
) -> Array:
    """Scores of an evaluation baseline (higher = better), same shape as ``cands.clicks``.

    ``random``: uniform [0, 1) from ``rng`` (seed it for reproducible runs);
    ``popularity``: clicks before ranking time; ``recency``: newer first (``-age_hours``,
    unknown age last); ``trending``: trailing-window popularity, the clicks of the last day
    exponentially decayed with a 24 h half-life (``cands.trend[..., 2]``, zeros without it).

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
    if name == "trending":
        if cands.trend is None:
            return np.zeros(clicks.shape)
        out = np.asarray(cands.trend, dtype=float)[..., 2]
        return out
    raise KeyError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")

