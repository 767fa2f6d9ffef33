"""What the reported set can show at all (``feedpipe evaluate --oracle``): the minimum
detectable effect of its paired bootstrap, and leaky oracle popularity rows, an upper bound of
what popularity-type signals can reach on it (docs/evaluation.md, "What this set can show").

The oracle rows read the *whole* counting log, later rows included, so they see the future:
they are labelled ``oracle:``, are never a ranker (never "best") and must never be fit on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from feedpipe.rank.components import Array, engagement_component
from feedpipe.topology import Topology
from ops.evaluate.data import Impression, Prepared

Z_975 = 1.959963984540054
"""Standard normal 97.5th percentile (two-sided 95% interval)."""

Z_80 = 0.8416212335729143
"""Standard normal 80th percentile (80% power of a one-sided test at the CI's lower bound)."""


def oracle_scorers(log: Sequence[Impression], topo: Topology
                   ) -> dict[str, Callable[[Prepared], Array]]:
    """Leaky oracle scorers (row name -> scorer) over the whole of ``log``, later rows
    included, the scored impression's own row excluded (its labels would be the answer):

    * ``oracle:popularity-whole-log``: the candidate's clicks in every other row;
    * ``oracle:ctr-whole-log``: its smoothed CTR there (:func:`engagement_component`, the
      ranking's Beta prior), every other row's clicks over its impressions.

    Upper bounds of the popularity-type signals, not rankers: no live system knows later clicks.
    """
    clicks: dict[str, int] = {}
    shown: dict[str, int] = {}
    own: dict[str, dict[str, int]] = {}
    for row in log:
        mine = own.setdefault(row.impression_id, {})
        for nid, lab in zip(row.candidates, row.labels, strict=True):
            clicks[nid] = clicks.get(nid, 0) + lab
            shown[nid] = shown.get(nid, 0) + 1
            mine[nid] = mine.get(nid, 0) + lab

    def counts(p: Prepared) -> tuple[Array, Array]:
        mine = own.get(p.impression.impression_id, {})
        in_row: dict[str, int] = {}
        if p.impression.impression_id in own:
            for nid in p.impression.candidates:
                in_row[nid] = in_row.get(nid, 0) + 1
        c = np.array([clicks.get(n, 0) - mine.get(n, 0) for n in p.impression.candidates],
                     dtype=float)
        s = np.array([shown.get(n, 0) - in_row.get(n, 0) for n in p.impression.candidates],
                     dtype=float)
        return c, s

    def popularity(p: Prepared) -> Array:
        return counts(p)[0]

    def ctr(p: Prepared) -> Array:
        c, s = counts(p)
        return engagement_component(c, s, topo.ranking)

    return {"oracle:popularity-whole-log": popularity, "oracle:ctr-whole-log": ctr}


def min_detectable_effect(diff: Array, idx: npt.NDArray[Any]) -> tuple[float, float]:
    """Minimum detectable effect of a paired difference (per-impression values ``diff``,
    bootstrap resamples ``idx`` of shape (n_boot, n)), on the difference's scale.

    Returns ``(mde_ci, mde_80)``: ``mde_ci`` = observed mean - 2.5th percentile of the
    resampled means, the smallest true gain whose percentile CI lower bound would lie above 0
    if the bootstrap distribution only shifted with the gain (a true gain equal to it clears 0
    half of the time); ``mde_80`` = ``(z_0.975 + z_0.80) * se`` with ``se`` the standard
    deviation of the resampled means, the gain cleared with 80% power (normal approximation;
    Cohen, "Statistical Power Analysis for the Behavioral Sciences", 2nd ed., 1988).
    """
    means = diff[idx].mean(axis=1)
    lo = float(np.percentile(means, 2.5))
    return float(diff.mean()) - lo, (Z_975 + Z_80) * float(means.std(ddof=1))
