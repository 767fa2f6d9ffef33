"""Fitting the ``learned`` ranker (``feedpipe evaluate --fit``): a logistic regression over the
features of :func:`feedpipe.rank.components.learned_features`, written to topology.yaml as a new
version of a ``learned`` weight set (the worker's WeightsRegistry hot-reloads the file)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from feedpipe.errors import ConfigError
from feedpipe.rank.components import learned_features
from feedpipe.topology import RANKER_COMPONENTS, Topology, load_topology
from ops.evaluate.data import Prepared

FEATURES: tuple[str, ...] = RANKER_COMPONENTS["learned"]
"""The learned ranker's features, in weight-key order."""

C_REGULARISATION = 1.0
"""Inverse L2 strength of scikit-learn's LogisticRegression on standardised features (its
default; the features are few and the fit split has ~180,000 candidates)."""


def design(prepared: Sequence[Prepared], topo: Topology) -> tuple[np.ndarray, np.ndarray]:
    """``(X (n candidates, len(FEATURES) + 1), y (n,))`` of all candidates of ``prepared``;
    the last column is ``has_meta`` (see :func:`fit`)."""
    xs = []
    for p in prepared:
        f = learned_features(p.cands, topo.ranking)
        cols = [np.broadcast_to(f[k], p.labels.shape) for k in FEATURES]
        xs.append(np.column_stack([*cols, p.has_meta]))
    return np.vstack(xs), np.concatenate([p.labels for p in prepared])


def fit(prepared: Sequence[Prepared], topo: Topology) -> dict[str, float]:
    """Logistic-regression weights per feature (raw feature scale), rounded to 4 decimals.

    Fit with scikit-learn's ``LogisticRegression`` (lbfgs, L2, C = :data:`C_REGULARISATION`)
    on standardised features; the coefficients are divided by the features' standard
    deviations so that ``score = sum(w_k * x_k)`` ranks as the fitted model (the intercept and
    the means shift every candidate's score equally, so they are dropped). A constant feature
    gets weight 0.

    A nuisance column, "the candidate has metadata in the news file", is fit and then dropped:
    in a log sample whose metadata covers only some items (MIND's sample: affinity and content
    similarity are 0 without metadata), it absorbs how that sample was drawn instead of letting
    the content features carry it. Every catalogue item ranked live has metadata, so the column
    is constant there and dropping it changes no ranking.

    Raises:
        ValueError: no positive or no negative label.
    """
    from sklearn.linear_model import LogisticRegression

    x, y = design(prepared, topo)
    if y.min() == y.max():
        raise ValueError("fitting needs clicked and not-clicked candidates")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    live = std > 0
    z = (x[:, live] - mean[live]) / std[live]
    model = LogisticRegression(C=C_REGULARISATION, max_iter=1000).fit(z, y)
    w = np.zeros(x.shape[1])
    w[live] = model.coef_[0] / std[live]
    w = w[: len(FEATURES)]
    return {k: round(float(v), 4) for k, v in zip(FEATURES, w, strict=True)}


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
