"""Synthetic impressions for the tests of the learned ranker's fit (ops/evaluate/fit.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from feedpipe.rank.components import Candidates
from ops.evaluate.data import Impression, Prepared


def popularity_impressions(rng: np.random.Generator, n_imp: int,
                           affinity: Callable[[np.ndarray], float],
                           second_click_odd: bool = False) -> list[Prepared]:
    """Impressions of 6 candidates where clicks (popularity) predict the click
    (``P ~ exp(0.4 * clicks)``); ``affinity(labels)`` is the affinity of every candidate of the
    impression (constant within it); odd impressions get a second click when
    ``second_click_odd``."""
    out = []
    for i in range(n_imp):
        pop = rng.poisson(5.0, 6).astype(float)
        p = np.exp(0.4 * pop)
        labels = np.zeros(6)
        labels[rng.choice(6, p=p / p.sum())] = 1.0
        if second_click_odd and i % 2:
            labels[rng.choice(np.flatnonzero(labels == 0))] = 1.0
        z = np.zeros(6)
        cands = Candidates(affinity=np.full(6, affinity(labels)),
                           age_hours=np.full(6, np.nan), clicks=pop,
                           impressions=pop * 10 + 50, category_weight=z, bias=z + 0.5)
        imp = Impression(str(i), f"U{i}", i, (), tuple(f"N{j}" for j in range(6)),
                         tuple(int(v) for v in labels))
        out.append(Prepared(imp, labels, cands, np.ones(6)))
    return out
