"""Fitting the ``learned`` ranker (``feedpipe evaluate --fit``): a logistic regression over the
features of :func:`feedpipe.rank.components.learned_features`, written to topology.yaml as a new
version of a ``learned`` weight set (the worker's WeightsRegistry hot-reloads the file)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from feedpipe.errors import ConfigError
from feedpipe.rank.components import Array, learned_features
from feedpipe.topology import RANKER_COMPONENTS, Topology, load_topology
from ops.evaluate.data import Prepared
from ops.evaluate.metrics import mean_auc

FEATURES: tuple[str, ...] = RANKER_COMPONENTS["learned"]
"""The learned ranker's features, in weight-key order."""

C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
"""Inverse L2 strengths of scikit-learn's LogisticRegression (on standardised features) tried by
the grouped cross-validation of :func:`fit_cv`; 1.0 is scikit-learn's default."""

CV_FOLDS = 5
"""Folds of the cross-validation, grouped by impression (an impression's candidates are never
split between fitting and validation)."""


@dataclass(frozen=True, slots=True)
class Fit:
    """Result of :func:`fit_cv`.

    Attributes:
        weights: feature -> weight (raw feature scale, rounded to 4 decimals).
        c: the inverse L2 strength chosen.
        cv_auc: C -> mean per-impression AUC over the held-out folds (real impressions).
        cv_auc_extra: C -> the same over the held-out ``extra`` impressions (none: empty).
    """

    weights: dict[str, float]
    c: float
    cv_auc: dict[float, float]
    cv_auc_extra: dict[float, float] = field(default_factory=dict)


def design(prepared: Sequence[Prepared], topo: Topology) -> tuple[np.ndarray, np.ndarray]:
    """``(X (n candidates, len(FEATURES) + 1), y (n,))`` of all candidates of ``prepared``;
    the last column is ``has_meta`` (see :func:`fit_cv`)."""
    xs = []
    for p in prepared:
        f = learned_features(p.cands, topo.ranking)
        cols = [np.broadcast_to(f[k], p.labels.shape) for k in FEATURES]
        xs.append(np.column_stack([*cols, p.has_meta]))
    return np.vstack(xs), np.concatenate([p.labels for p in prepared])


def centre(x: Array, groups: np.ndarray) -> Array:
    """``x`` (n, k) minus the mean of its impression (``groups`` (n,) ints 0..g-1) per column.

    A linear score shifted by a constant per impression ranks every impression the same, so
    the fitted weights rank as a fit on raw features would; what centring removes is the
    variation *between* impressions (how many clicks an impression has, which log sample it
    came from), which per-impression metrics (AUC, MRR, nDCG) never reward.
    """
    g = int(groups.max()) + 1 if len(groups) else 0
    counts = np.bincount(groups, minlength=g).astype(float)
    out = np.array(x, dtype=float)
    for j in range(out.shape[1]):
        out[:, j] -= (np.bincount(groups, weights=out[:, j], minlength=g) / counts)[groups]
    return out


OBJECTIVES: tuple[str, ...] = ("pointwise", "pairwise")
"""Fitting objectives of :func:`fit_cv`: ``pointwise`` = logistic regression on each
candidate's click label; ``pairwise`` = logistic regression on within-impression
(clicked - not clicked) feature differences (RankNet's loss with a linear scorer: Burges et al.,
"Learning to Rank using Gradient Descent", ICML 2005; Joachims, "Optimizing Search Engines
using Clickthrough Data", KDD 2002), each impression's pairs weighing 1 in total, so the loss
is a smooth surrogate of the mean per-impression AUC."""


def pair_differences(z: Array, y: np.ndarray, groups: np.ndarray) -> tuple[Array, Array]:
    """``(d (p, k), w (p,))``: for every clicked/not-clicked pair of one impression (rows of an
    impression adjacent in ``groups``), ``z[clicked] - z[not clicked]``, and the pair weight
    ``1 / (pairs of its impression)``. Impressions without both labels give no pair."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ds: list[Array] = [np.zeros((0, z.shape[1]))]
    ws: list[Array] = [np.zeros(0)]
    for s, e in zip(starts, np.r_[starts[1:], len(groups)], strict=True):
        pos = np.flatnonzero(y[s:e] > 0) + s
        neg = np.flatnonzero(y[s:e] <= 0) + s
        if len(pos) and len(neg):
            ds.append((z[pos][:, None, :] - z[neg][None, :, :]).reshape(-1, z.shape[1]))
            ws.append(np.full(len(pos) * len(neg), 1.0 / (len(pos) * len(neg))))
    return np.vstack(ds), np.concatenate(ws)


def _coefficients(z: Array, y: np.ndarray, c: float, groups: np.ndarray,
                  objective: str = "pointwise") -> Array:
    """Logistic-regression coefficients on standardised, centred ``z`` (no intercept: the
    columns have mean 0 in every impression; a pair difference has no offset either)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=1000, fit_intercept=False)
    if objective == "pairwise":
        d, w = pair_differences(z, y, groups)
        if len(d) == 0:
            return np.zeros(z.shape[1])
        # Each pair once as (d, clicked first) and once as (-d, not): a symmetric problem
        # whose unpenalised optimum has no intercept; weights rescaled to mean 1 so C keeps
        # its meaning per example.
        w = np.r_[w, w] * (len(w) / w.sum())
        model.fit(np.vstack([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))],
                  sample_weight=w)
    else:
        model.fit(z, y)
    return np.asarray(model.coef_[0], dtype=float)


def fit_cv(prepared: Sequence[Prepared], topo: Topology,
           grid: Sequence[float] = C_GRID, folds: int = CV_FOLDS,
           objective: str = "pointwise", extra: Sequence[Prepared] = (),
           without: Sequence[str] = ()) -> Fit:
    """Logistic-regression weights per feature (raw feature scale), rounded to 4 decimals.

    scikit-learn's ``LogisticRegression`` (lbfgs, L2) on features centred per impression
    (:func:`centre`) and standardised; the L2 strength ``C`` is the one of ``grid`` with the
    best mean per-impression AUC in a ``folds``-fold cross-validation grouped by impression
    (scikit-learn ``GroupKFold``; Hastie, Tibshirani, Friedman, "The Elements of Statistical
    Learning", 2nd ed., section 7.10). The coefficients are divided by the features' standard
    deviations so that ``score = sum(w_k * x_k)`` ranks as the fitted model. A constant feature
    gets weight 0.

    A nuisance column, "the candidate has metadata in the news file", is fit and then dropped:
    in a log sample whose metadata covers only some items (MIND's sample: affinity and content
    similarity are 0 without metadata), it absorbs how that sample was drawn instead of letting
    the content features carry it. Every catalogue item ranked live has metadata, so the column
    is constant there and dropping it changes no ranking.

    ``objective`` (:data:`OBJECTIVES`): ``pointwise`` fits the click labels of the centred
    candidates, ``pairwise`` the within-impression (clicked - not clicked) differences
    (:func:`pair_differences`); both are scored by the same grouped cross-validation.

    ``extra`` impressions (the pseudo-impressions of :mod:`ops.evaluate.pseudo`) are fit with
    ``prepared`` and split into the same grouped folds; C is chosen by the held-out AUC of the
    ``prepared`` impressions only (the task), the held-out AUC of ``extra`` is reported
    beside it. Features named in ``without`` are left out (weight 0).

    Raises:
        ValueError: no positive or no negative label, an empty ``grid``, an unknown
            ``objective`` or an unknown feature in ``without``.
    """
    from sklearn.model_selection import GroupKFold

    if not grid:
        raise ValueError("the C grid is empty")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    unknown = set(without) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}")
    everything = [*prepared, *extra]
    x, y = design(everything, topo)
    if y.min() == y.max():
        raise ValueError("fitting needs clicked and not-clicked candidates")
    groups = np.repeat(np.arange(len(everything)), [len(p.labels) for p in everything])
    is_extra = groups >= len(prepared)
    xc = centre(x, groups)
    std = xc.std(axis=0)
    live = std > 1e-12
    for name in without:
        live[FEATURES.index(name)] = False
    z = xc[:, live] / std[live]
    cv_auc: dict[float, float] = {}
    cv_extra: dict[float, float] = {}
    k = min(folds, len(everything))
    if k >= 2:
        splits = list(GroupKFold(n_splits=k).split(z, y, groups))
        for c in grid:
            aucs: list[float] = []
            extra_aucs: list[float] = []
            for tr, te in splits:
                if y[tr].min() == y[tr].max():
                    continue
                coef = _coefficients(z[tr], y[tr], c, groups[tr], objective)
                for got, rows in ((aucs, te[~is_extra[te]]), (extra_aucs, te[is_extra[te]])):
                    if len(rows):
                        got.append(mean_auc(y[rows], z[rows] @ coef, groups[rows]))
            cv_auc[c] = float(np.nanmean(aucs)) if aucs else math.nan
            if extra_aucs:
                cv_extra[c] = float(np.nanmean(extra_aucs))
    def cv_rank(c: float) -> tuple[float, float]:  # a NaN (no fold could score) ranks last
        got = cv_auc.get(c, math.nan)
        return (-math.inf if math.isnan(got) else got), c

    best = max(grid, key=cv_rank) if cv_auc else grid[-1]
    w = np.zeros(x.shape[1])
    w[live] = _coefficients(z, y, best, groups, objective) / std[live]
    w = w[: len(FEATURES)]
    weights = {k: round(float(v), 4) for k, v in zip(FEATURES, w, strict=True)}
    return Fit(weights, best, cv_auc, cv_extra)


_SET_LINE = re.compile(r"^(\s+)([A-Za-z0-9_.-]+):\s*\{ranker:\s*(\w+),\s*version:\s*(\d+)")


def write_weight_set(path: Path, name: str, weights: dict[str, float], note: str) -> int:
    """Write ``weights`` as the next version of ``learned`` weight set ``name`` in topology.yaml.

    Replaces the set's line in ``rankers.weight_sets`` (version + 1) or adds it as the section's
    last entry (version 1); comments and the rest of the file are kept. The new file is
    validated (``load_topology``) before it replaces the old one, written to a temporary file
    and renamed (a running worker never reads a half-written file). Returns the version.

    Raises:
        ConfigError: unreadable file, no ``rankers.weight_sets`` section, a set of that name
            for another ranker, or a result that does not validate.
    """
    if any(not math.isfinite(v) for v in weights.values()):
        raise ConfigError("learned weights must be finite")
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    start = next((i for i, ln in enumerate(lines) if ln.startswith("rankers:")), None)
    if start is None or start + 1 >= len(lines) or "weight_sets:" not in lines[start + 1]:
        raise ConfigError(f"{path}: no rankers.weight_sets section")
    end = start + 2
    found: int | None = None
    version = 1
    indent = "    "
    while end < len(lines) and (lines[end].startswith("    ")
                                or lines[end].lstrip().startswith("#")):
        m = _SET_LINE.match(lines[end])
        if m:
            indent = m.group(1)
            if m.group(2) == name:
                if m.group(3) != "learned":
                    raise ConfigError(f"{path}: weight set {name!r} is a {m.group(3)} set")
                found, version = end, int(m.group(4)) + 1
        end += 1
    body = ", ".join(f"{k}: {v:g}" for k, v in weights.items())
    new = (f"{indent}{name}: {{ranker: learned, version: {version}, weights: {{{body}}}, "
           f"note: {note!r}}}\n")
    if found is not None:
        lines[found] = new
    else:
        while end > start + 2 and lines[end - 1].lstrip().startswith("#"):
            end -= 1
        lines.insert(end, new)
    tmp = path.with_name(path.name + ".fit.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    try:
        load_topology(tmp)
    except ConfigError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return version
