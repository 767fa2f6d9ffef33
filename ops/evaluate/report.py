"""Scoring every ranker and baseline on prepared impressions: the evaluation report with
bootstrap confidence intervals, and the weight grid search (``feedpipe evaluate --tune``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from feedpipe.model.text import SparseVec
from feedpipe.rank.baselines import BASELINES, baseline_scores
from feedpipe.rank.components import Array, score
from feedpipe.topology import RankersSpec, Topology, WeightSet
from ops.evaluate.data import (
    Coverage,
    Impression,
    Prepared,
    prepare,
    read_behaviors,
    read_news,
)
from ops.evaluate.metrics import METRICS, bootstrap, impression_metrics

Scorer = Callable[[Prepared], Array]


def scorers(topo: Topology, rankers: RankersSpec) -> dict[str, Scorer]:
    """Row name -> scoring function: every weight set (``ranker:name@vN``) and the popularity
    and recency baselines (random: :func:`random_baseline`)."""
    out: dict[str, Scorer] = {}
    editorial = rankers.editorial

    def ranker(name: str, ws: WeightSet) -> Scorer:
        return lambda p: score(name, ws, p.cands, topo.ranking, editorial).score

    for name, ws in rankers.weight_sets.items():
        out[f"{ws.ranker}:{name}@v{ws.version}"] = ranker(name, ws)
    for b in BASELINES:
        if b != "random":
            out[f"baseline:{b}"] = (
                (lambda p, b=b: baseline_scores(b, p.cands))  # type: ignore[misc]
            )
    return out


def feature_scorers(topo: Topology) -> dict[str, Scorer]:
    """``feature:NAME`` -> the learned ranker's feature NAME alone as the score
    (:func:`feedpipe.rank.components.learned_features`): single-feature rows, never a ranker."""
    from feedpipe.rank.components import learned_features
    from feedpipe.topology import RANKER_COMPONENTS

    def one(name: str) -> Scorer:
        return lambda p: np.broadcast_to(learned_features(p.cands, topo.ranking)[name],
                                         p.labels.shape)

    return {f"feature:{k}": one(k) for k in RANKER_COMPONENTS["learned"]}


RANDOM_DRAWS = 32
"""Seeded random orders per impression whose metrics are averaged for the random baseline."""


def random_baseline(prepared: Sequence[Prepared], seed: int, draws: int = RANDOM_DRAWS) -> Array:
    """(n impressions, 4) metrics of the random baseline: per impression, the mean over
    ``draws`` seeded uniform-random scorings (a Monte Carlo estimate of a random order's
    expected metric, so the row measures chance level, not one lucky draw)."""
    rng = np.random.default_rng([seed, 0])
    out = np.zeros((len(prepared), 4))
    for i, p in enumerate(prepared):
        for _ in range(draws):
            out[i] += impression_metrics(p.labels, baseline_scores("random", p.cands, rng))
    return out / draws


def tune(
    prepared: Sequence[Prepared], ranker: str, topo: Topology, step: float = 0.05
) -> list[tuple[float, dict[str, float]]]:
    """Grid search of ``ranker``'s weights on the simplex (multiples of ``step``) by mean AUC.

    Vectorised over all (clicked, not clicked) pairs of all impressions. Returns
    ``[(mean AUC, weights)]`` best first. Use it on impressions *disjoint* from the ones
    reported (``evaluate(exclude=...)``), or say that the reported numbers are tuned.

    Raises:
        ValueError: ``step`` not in (0, 1]; KeyError: unknown ranker.
    """
    from feedpipe.rank.components import COMPONENT_NAMES, components
    from feedpipe.topology import RANKER_COMPONENTS

    if not 0 < step <= 1:
        raise ValueError("step must be in (0, 1]")
    editorial = topo.ranker_config().editorial
    comps = [components(ranker, p.cands, topo.ranking, editorial) for p in prepared]
    flat = {k: np.concatenate([c[k] for c in comps]) for k in COMPONENT_NAMES[ranker]}
    pos_i: list[npt.NDArray[Any]] = []
    neg_i: list[npt.NDArray[Any]] = []
    imp_i: list[npt.NDArray[Any]] = []
    offset = 0
    for j, p in enumerate(prepared):
        pos = np.flatnonzero(p.labels > 0) + offset
        neg = np.flatnonzero(p.labels <= 0) + offset
        pp, nn = np.meshgrid(pos, neg, indexing="ij")
        pos_i.append(pp.ravel())
        neg_i.append(nn.ravel())
        imp_i.append(np.full(pp.size, j))
        offset += len(p.labels)
    pi, ni, ii = (np.concatenate(x).astype(np.int64) for x in (pos_i, neg_i, imp_i))
    pairs = np.bincount(ii, minlength=len(prepared)).astype(float)
    keys = RANKER_COMPONENTS[ranker]
    names = COMPONENT_NAMES[ranker]
    n = round(1 / step)
    results: list[tuple[float, dict[str, float]]] = []
    for i in range(n + 1):
        for j in range(n + 1 - i):
            w = (i / n, j / n, (n - i - j) / n)
            s = np.zeros(offset)
            for wk, c in zip(w, names, strict=True):
                s = s + wk * flat[c]
            d = s[pi] - s[ni]
            val = (d > 0) + 0.5 * (d == 0)
            per = np.bincount(ii, weights=val, minlength=len(prepared)) / pairs
            results.append((float(per.mean()), dict(zip(keys, w, strict=True))))
    results.sort(key=lambda r: -r[0])
    return results


@dataclass
class Report:
    """Evaluation results: per row and metric, ``(mean, lo, hi)``; plus coverage and timing."""

    rows: dict[str, dict[str, tuple[float, float, float]]]
    coverage: Coverage
    n_boot: int
    seed: int
    seconds: float
    best: str | None = None
    best_minus_popularity_auc: tuple[float, float, float] | None = None
    mde: tuple[float, float] | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    minus_popularity_auc: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable mapping (metrics as ``{"mean", "lo", "hi"}``)."""
        return {
            "inputs": self.inputs,
            "coverage": vars(self.coverage),
            "bootstrap": {"resamples": self.n_boot, "seed": self.seed, "ci": 0.95},
            "seconds": round(self.seconds, 3),
            "rows": {
                name: {m: {"mean": v[0], "lo": v[1], "hi": v[2]} for m, v in metrics.items()}
                for name, metrics in self.rows.items()
            },
            "best_ranker": self.best,
            "best_minus_popularity_auc": None
            if self.best_minus_popularity_auc is None
            else dict(zip(("mean", "lo", "hi"), self.best_minus_popularity_auc, strict=True)),
            "minus_popularity_auc": {
                name: dict(zip(("mean", "lo", "hi"), d, strict=True))
                for name, d in self.minus_popularity_auc.items()
            },
            "minimum_detectable_effect": None if self.mde is None
            else dict(zip(("ci_lower_above_0", "power_80"), self.mde, strict=True)),
        }

    def table(self) -> str:
        """The plain-text table: rows = rankers and baselines, columns = metrics with CIs."""
        width = max(len(n) for n in self.rows) if self.rows else 10
        head = f"{'ranker':<{width}}  " + "  ".join(f"{m:<21}" for m in METRICS)
        lines = [head, "-" * len(head)]
        for name, metrics in self.rows.items():
            cells = [f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for v in metrics.values()]
            lines.append(f"{name:<{width}}  " + "  ".join(f"{c:<21}" for c in cells))
        c = self.coverage
        lines.append(
            f"{c.evaluated} impressions evaluated ({c.candidates} candidates, {c.clicks} clicks); "
            f"skipped {c.skipped_no_positive} without a click, {c.skipped_no_negative} without "
            f"a non-click; {c.malformed} malformed, {c.excluded} excluded rows"
        )
        lines.append(
            f"{c.candidates_without_metadata} candidates without metadata; "
            f"{c.histories_with_metadata} histories with metadata; "
            f"{c.candidates_seen_before} candidates seen in the log before"
        )
        for name, d in self.minus_popularity_auc.items():
            if name != self.best:
                lines.append(f"{name}: AUC - popularity AUC = {d[0]:+.3f} "
                             f"[{d[1]:+.3f}, {d[2]:+.3f}] (paired bootstrap)")
        if self.best_minus_popularity_auc is not None:
            d = self.best_minus_popularity_auc
            lines.append(
                f"best ranker {self.best}: AUC - popularity AUC = {d[0]:+.3f} "
                f"[{d[1]:+.3f}, {d[2]:+.3f}] (paired bootstrap)"
            )
        if self.mde is not None:
            lines.append(
                f"minimum detectable effect of this set (paired, best - popularity): "
                f"{self.mde[0]:+.3f} (CI lower bound above 0 at the observed spread), "
                f"{self.mde[1]:+.3f} (80% power)"
            )
        lines.append(f"95% percentile bootstrap, {self.n_boot} resamples, seed {self.seed}; "
                     f"{self.seconds:.2f} s")
        return "\n".join(lines)


def per_impression(prepared: Sequence[Prepared], scorer: Scorer) -> Array:
    """(n impressions, 4) metric matrix of one scorer (columns: :data:`METRICS`)."""
    return np.array([impression_metrics(p.labels, scorer(p)) for p in prepared]).reshape(-1, 4)


def read_rows(path: Path, topo: Topology, brand: str = "mind") -> list[Impression]:
    """The impressions of a MIND behaviors-format file or an EB-NeRD split folder (malformed
    rows left out; :func:`load` counts them).

    Raises:
        ConfigError: an unreadable input.
    """
    from ops.evaluate.ebnerd import is_ebnerd, read_ebnerd

    if is_ebnerd(path):
        return read_ebnerd(path, topo, "ebnerd" if brand == "mind" else brand)[0]
    return read_behaviors(path)[0]


def load(
    path: Path,
    news: Path,
    log: Path | None = None,
    topo: Topology | None = None,
    exclude: Path | None = None,
    brand: str = "mind",
) -> tuple[list[Prepared], Coverage, Topology]:
    """Read the inputs and :func:`prepare` them (arguments as :func:`evaluate`).

    ``path`` (and ``log``, ``exclude``) is a MIND behaviors.tsv-format file or an EB-NeRD split
    folder (:mod:`ops.evaluate.ebnerd`; ``news`` is then unused: the split's articles.parquet
    gives metadata, text and publication times, and the brand is ``ebnerd`` unless given).

    Raises:
        ConfigError: an unreadable input file; ValueError: no evaluable impression.
    """
    from feedpipe.topology import topology
    from ops.evaluate.ebnerd import is_ebnerd, read_ebnerd

    topo = topo or topology()
    texts: dict[str, SparseVec] = {}
    published: dict[str, int] = {}

    def rows(p: Path) -> list[Impression]:
        return read_rows(p, topo, brand)

    if is_ebnerd(path):
        brand = "ebnerd" if brand == "mind" else brand
        imps, bad, metas, texts, published = read_ebnerd(path, topo, brand)
    else:
        imps, bad = read_behaviors(path)
        metas, _ = read_news(news, topo, brand, texts)
    log_rows = imps if log is None else rows(log)
    excluded = 0
    if exclude is not None:
        drop = {r.impression_id for r in rows(exclude)}
        before = len(imps)
        imps = [r for r in imps if r.impression_id not in drop]
        excluded = before - len(imps)
    prepared, cov = prepare(imps, metas, log_rows, topo, brand, texts=texts,
                            published=published)
    cov.malformed = len(bad)
    cov.excluded = excluded
    if not prepared:
        raise ValueError(f"{path}: no impression with both a click and a non-click")
    return prepared, cov, topo


def evaluate(
    path: Path,
    news: Path,
    log: Path | None = None,
    topo: Topology | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    exclude: Path | None = None,
    brand: str = "mind",
    oracle: bool = False,
    features: bool = False,
) -> Report:
    """Evaluate every weight set and baseline on the impressions of ``path``.

    Args:
        path: MIND behaviors-format file to evaluate.
        news: MIND news.tsv with the candidates' metadata.
        log: counting log for clicks / impressions / first sightings (default ``path``).
        topo: topology (default: the repository's topology.yaml).
        n_boot: bootstrap resamples (>= 1).
        seed: seeds the random baseline and the resampling.
        exclude: a behaviors-format file whose impression ids are not evaluated (e.g. the
            report set, when tuning on the rest of a log).
        brand: brand of the content (taxonomy, editorial category weights).
        oracle: add the leaky oracle rows of :func:`ops.evaluate.bounds.oracle_scorers`
            (never chosen as the best ranker) and the minimum detectable effect
            (:func:`ops.evaluate.bounds.min_detectable_effect`).
        features: add a ``feature:NAME`` row per feature of the learned ranker, ranking by
            that feature alone (:func:`feature_scorers`).

    Raises:
        ConfigError: an unreadable input file; ValueError: ``n_boot < 1`` or no evaluable
            impression.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    t0 = time.perf_counter()
    prepared, cov, topo = load(path, news, log, topo, exclude, brand)
    boot_rng = np.random.default_rng([seed, 1])
    idx = boot_rng.integers(0, len(prepared), size=(n_boot, len(prepared)))
    rows: dict[str, dict[str, tuple[float, float, float]]] = {}
    auc_of: dict[str, Array] = {}
    every = scorers(topo, topo.ranker_config())
    if oracle:
        from ops.evaluate.bounds import oracle_scorers

        every |= oracle_scorers(read_rows(log or path, topo, brand), topo)
    if features:
        every |= feature_scorers(topo)
    for name, fn in every.items():
        m = per_impression(prepared, fn)
        auc_of[name] = m[:, 0]
        rows[name] = {metric: bootstrap(m[:, j], idx) for j, metric in enumerate(METRICS)}
    m = random_baseline(prepared, seed)
    auc_of["baseline:random"] = m[:, 0]
    rows["baseline:random"] = {metric: bootstrap(m[:, j], idx) for j, metric in enumerate(METRICS)}
    extra = ("baseline:", "oracle:", "feature:")
    order = [n for n in rows if not n.startswith(extra)] + [
        f"baseline:{b}" for b in BASELINES
    ] + [n for n in rows if n.startswith(extra[1:])]
    rows = {n: rows[n] for n in order}
    ranker_rows = [n for n in rows if not n.startswith(extra)]
    best = max(ranker_rows, key=lambda n: rows[n]["auc"][0]) if ranker_rows else None
    diff = mde = None
    if best is not None:
        diff = bootstrap(auc_of[best] - auc_of["baseline:popularity"], idx)
        if oracle:
            from ops.evaluate.bounds import min_detectable_effect

            mde = min_detectable_effect(auc_of[best] - auc_of["baseline:popularity"], idx)
    return Report(
        rows, cov, n_boot, seed, time.perf_counter() - t0, best, diff, mde,
        {"impressions": str(path), "news": str(news), "log": str(log or path),
         "exclude": str(exclude) if exclude else ""},
        {n: bootstrap(auc_of[n] - auc_of["baseline:popularity"], idx)
         for n in rows if not n.startswith("baseline:")},
    )
