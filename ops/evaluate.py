"""Offline evaluation of the rankers on MIND-format impression logs (``feedpipe evaluate``).

Each impression of a MIND ``behaviors.tsv``-format file (``impression_id, user_id, time,
history, "N1-1 N2-0 ..."``) is re-ranked by every weight set of topology.yaml's ``rankers``
section (through :mod:`feedpipe.rank.components`, the code the feeds stage runs) and by three
baselines, and scored with the MIND competition's metrics (github.com/msnews/MIND,
``evaluate.py``: per-impression AUC, MRR, nDCG@5, nDCG@10, averaged over impressions).

No future leakage (docs/evaluation.md):

* profile: built from the impression's own ``history`` column only, through
  ``feedpipe.model.profile.new_profile`` / ``apply_events`` (the profiles stage's code). History
  clicks carry no time in MIND; as the replay connector does, click i of h is placed at
  ``impression time - (h - i) * profiles.history_click_spacing_s``;
* clicks, impressions (engagement, popularity) and first sightings (the age proxy: MIND news
  has no publication time) come only from rows of the counting log (``log``, default the
  evaluated file) whose time is strictly before the impression's time; a candidate never seen
  before is first seen at the impression's own time (age 0);
* labels of the impression are used for the metrics only.

Ties: items with equal scores get the *expected* value of each metric over all orders of the
tie (McSherry and Najork, "Computing Information Retrieval Performance Measures Efficiently in
the Presence of Tied Scores", ECIR 2008); for AUC this is scikit-learn's ``roc_auc_score``
convention (a tied pair counts 1/2). Without ties the values equal msnews/MIND's.

Confidence intervals: percentile bootstrap (Efron and Tibshirani, "An Introduction to the
Bootstrap", 1993) over impressions, ``n_boot`` resamples (1,000 by default), seeded; every
scorer uses the same resamples, so differences between rows are paired.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from feedpipe.errors import ConfigError
from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.profile import Event, apply_events, new_profile
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.baselines import BASELINES, baseline_scores
from feedpipe.rank.components import (
    Array,
    Candidates,
    affinity_scores,
    category_weights,
    item_biases,
    profile_shares,
    score,
    user_bias,
)
from feedpipe.topology import RankersSpec, Topology, WeightSet

METRICS: tuple[str, ...] = ("auc", "mrr", "ndcg@5", "ndcg@10")
"""Metric names, in table order (MIND competition, msnews/MIND evaluate.py)."""


# -- input --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Impression:
    """One MIND impression log row.

    Attributes:
        impression_id: as in the file.
        user_id: as in the file.
        at_ms: impression time, epoch ms (MIND times read as UTC).
        history: clicked news ids before the impression, oldest first.
        candidates: news ids shown; ``labels`` 1 = clicked, 0 = not (same length).
    """

    impression_id: str
    user_id: str
    at_ms: int
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    labels: tuple[int, ...]


def parse_behaviors(lines: Iterable[str]) -> tuple[list[Impression], dict[int, str]]:
    """Parse behaviors.tsv lines; return ``(impressions, {line number: reason})``.

    A malformed row (not 5 tab-separated columns, empty ids, a time not ``M/D/YYYY h:mm:ss
    AM/PM``, an entry not ``<news id>-<0|1>``) is not evaluated and is reported with its reason.
    Blank lines are ignored.
    """
    from connectors.files.mind import parse_mind_time

    out: list[Impression] = []
    bad: dict[int, str] = {}
    for n, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            bad[n] = f"expected 5 tab-separated columns, got {len(cols)}"
            continue
        iid, uid, when, hist, imps = (c.strip() for c in cols)
        if not iid or not uid:
            bad[n] = "empty impression_id or user_id"
            continue
        try:
            at_ms = int(parse_mind_time(when).timestamp() * 1000)
        except ValueError:
            bad[n] = f"time {when!r} is not 'M/D/YYYY h:mm:ss AM/PM'"
            continue
        cands: list[str] = []
        labels: list[int] = []
        for entry in imps.split():
            nid, sep, label = entry.rpartition("-")
            if not sep or not nid or label not in ("0", "1"):
                bad[n] = f"impression entry {entry!r} is not '<news id>-<0|1>'"
                break
            cands.append(nid)
            labels.append(int(label))
        else:
            out.append(Impression(iid, uid, at_ms, tuple(hist.split()), tuple(cands),
                                  tuple(labels)))
    return out, bad


def read_behaviors(path: Path) -> tuple[list[Impression], dict[int, str]]:
    """:func:`parse_behaviors` of a file (UTF-8).

    Raises:
        ConfigError: the file cannot be read or is not UTF-8.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_behaviors(text.splitlines())


def read_news(path: Path, topo: Topology, brand: str = "mind") -> tuple[dict[str, Meta], int]:
    """Ranking features of a MIND news.tsv, by news id, built as the pipeline builds them.

    Each row goes through the MIND normaliser (``streams.normalisers.mind.normalise_row``),
    the brand taxonomy (``Topology.map_categories``) and the enrichment's topic rule
    (``streams.metadata.topics``), so categories and topics equal those of the replayed
    catalogue. ``published_at`` is None (MIND has none). Returns ``(metas, rejected rows)``.

    Raises:
        ConfigError: the file cannot be read.
    """
    from feedpipe.errors import RejectedInput
    from streams.metadata import topics
    from streams.normalisers.mind import normalise_row

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    metas: dict[str, Meta] = {}
    rejected = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            d = normalise_row(line, deleting=False)
        except RejectedInput:
            rejected += 1
            continue
        src = list(dict.fromkeys(d.source_categories))
        cats = topo.map_categories(
            brand, src if d.categories_from is None else d.categories_from
        )
        metas[d.source_id] = Meta(d.source_id, brand, tuple(cats),
                                  tuple(topics(cats, src, d.tags)), None)
    return metas, rejected


# -- features -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Prepared:
    """One evaluable impression: labels and the rankers' inputs, leak-free."""

    impression: Impression
    labels: Array
    cands: Candidates


@dataclass
class Coverage:
    """Counts describing the evaluated data (reported with the table)."""

    rows: int = 0
    malformed: int = 0
    excluded: int = 0
    evaluated: int = 0
    skipped_no_positive: int = 0
    skipped_no_negative: int = 0
    candidates: int = 0
    clicks: int = 0
    candidates_without_metadata: int = 0
    histories_with_metadata: int = 0
    candidates_seen_before: int = 0


def prepare(
    impressions: Sequence[Impression],
    metas: Mapping[str, Meta],
    log: Sequence[Impression],
    topo: Topology,
    brand: str = "mind",
    source: str = "mind",
) -> tuple[list[Prepared], Coverage]:
    """Build every impression's :class:`Candidates` without looking at its labels or the future.

    Args:
        impressions: rows to evaluate (any order).
        metas: news id -> ranking features (:func:`read_news`); a candidate without one has no
            categories/topics (affinity 0, default category weight).
        log: counting log: clicks, impressions and first sightings of each news id are taken
            from its rows strictly before each impression's time.
        topo: profiles spec (half-life, spacing), ranking spec, rankers config.
        brand: the brand whose editorial category weights apply.
        source: the content source, for the editorial source bias.

    Returns ``(prepared, coverage)``; impressions without a click or without a non-click are
    counted in ``coverage`` and not prepared (AUC is undefined for them).
    """
    pspec = topo.profiles
    editorial = topo.ranker_config().editorial
    spacing_ms = pspec.history_click_spacing_s * 1000
    matrix = CandidateMatrix(list(metas.values()))
    cov = Coverage(rows=len(impressions))
    zero_cat = np.zeros(matrix.cat.shape[1])
    zero_top = np.zeros(matrix.topic.shape[1])

    ordered = sorted(log, key=lambda r: r.at_ms)
    clicks: dict[str, int] = {}
    shown: dict[str, int] = {}
    first: dict[str, int] = {}
    pos = 0
    out: list[Prepared] = []
    for imp in sorted(impressions, key=lambda r: (r.at_ms, r.impression_id)):
        while pos < len(ordered) and ordered[pos].at_ms < imp.at_ms:
            row = ordered[pos]
            pos += 1
            for nid, lab in zip(row.candidates, row.labels, strict=True):
                shown[nid] = shown.get(nid, 0) + 1
                clicks[nid] = clicks.get(nid, 0) + lab
                first.setdefault(nid, row.at_ms)
            for nid in row.history:
                first.setdefault(nid, row.at_ms)
        n_pos = sum(imp.labels)
        if n_pos == 0:
            cov.skipped_no_positive += 1
            continue
        if n_pos == len(imp.labels):
            cov.skipped_no_negative += 1
            continue
        cov.evaluated += 1
        cov.candidates += len(imp.candidates)
        cov.clicks += n_pos
        # Profile from the history column only, through the profiles stage's code.
        h = len(imp.history)
        profile = new_profile(imp.user_id, imp.at_ms - h * spacing_ms, pspec)
        events = [
            Event(f"{imp.impression_id}:{i}", "click", nid, imp.at_ms - (h - i) * spacing_ms,
                  "history")
            for i, nid in enumerate(imp.history)
        ]
        known = {nid: metas[nid] for nid in imp.history if nid in metas}
        apply_events(profile, events, known, pspec)
        if known:
            cov.histories_with_metadata += 1
        s_cat, s_top = profile_shares([profile], matrix)
        rows = [matrix.index.get(nid) for nid in imp.candidates]
        cov.candidates_without_metadata += sum(r is None for r in rows)
        item_cat = np.array([zero_cat if r is None else matrix.cat[r] for r in rows])
        item_top = np.array([zero_top if r is None else matrix.topic[r] for r in rows])
        aff = affinity_scores(s_cat, s_top, item_cat, item_top)[0]
        seen = [first.get(nid) for nid in imp.candidates]
        cov.candidates_seen_before += sum(s is not None for s in seen)
        first_ms = np.array([imp.at_ms if s is None else s for s in seen], dtype=float)
        cand_metas = [metas.get(nid) for nid in imp.candidates]
        read_bias = item_biases([None] * h, [source] * h, editorial)
        cands = Candidates(
            affinity=aff,
            age_hours=(imp.at_ms - first_ms) / HOUR_MS,
            clicks=np.array([clicks.get(n, 0) for n in imp.candidates], dtype=float),
            impressions=np.array([shown.get(n, 0) for n in imp.candidates], dtype=float),
            category_weight=category_weights(cand_metas, brand, editorial),
            bias=item_biases([None] * len(imp.candidates), [source] * len(imp.candidates),
                             editorial),
            user_bias=user_bias(list(read_bias), default=editorial.default_bias),
        )
        out.append(Prepared(imp, np.array(imp.labels, dtype=float), cands))
    return out, cov


# -- metrics ------------------------------------------------------------------------------
def _expected_by_rank(scores: Array, by_rank: Array) -> Array:
    """Per item, the mean of ``by_rank`` over the ranks its tie group occupies."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    out = np.empty(len(scores))
    start = 0
    n = len(scores)
    while start < n:
        end = start + 1
        while end < n and s[end] == s[start]:
            end += 1
        out[order[start:end]] = by_rank[start:end].mean()
        start = end
    return out


def auc(labels: Array, scores: Array) -> float:
    """ROC AUC of one impression (Mann-Whitney; a tied positive/negative pair counts 1/2).

    Raises:
        ValueError: no positive or no negative label.
    """
    pos = scores[labels > 0]
    neg = scores[labels <= 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUC needs at least one positive and one negative")
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(pos) * len(neg)))


def mrr(labels: Array, scores: Array) -> float:
    """MIND's MRR: ``sum(label_i / rank_i) / sum(labels)`` (ranks from 1), tie-expected."""
    rr = _expected_by_rank(scores, 1.0 / np.arange(1, len(scores) + 1))
    return float(np.sum(labels * rr) / np.sum(labels))


def ndcg(labels: Array, scores: Array, k: int) -> float:
    """MIND's nDCG@k: gains ``2**label - 1``, discounts ``log2(rank + 1)``, tie-expected."""
    disc = 1.0 / np.log2(np.arange(2, len(scores) + 2))
    disc[k:] = 0.0
    dcg = float(np.sum((2.0**labels - 1.0) * _expected_by_rank(scores, disc)))
    ideal = np.sort(labels)[::-1]
    best = float(np.sum((2.0**ideal - 1.0) * disc))
    return dcg / best if best > 0 else 0.0


def impression_metrics(labels: Array, scores: Array) -> tuple[float, float, float, float]:
    """``(AUC, MRR, nDCG@5, nDCG@10)`` of one impression."""
    return (auc(labels, scores), mrr(labels, scores), ndcg(labels, scores, 5),
            ndcg(labels, scores, 10))


# -- evaluation ---------------------------------------------------------------------------
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
    inputs: dict[str, str] = field(default_factory=dict)

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
        if self.best_minus_popularity_auc is not None:
            d = self.best_minus_popularity_auc
            lines.append(
                f"best ranker {self.best}: AUC - popularity AUC = {d[0]:+.3f} "
                f"[{d[1]:+.3f}, {d[2]:+.3f}] (paired bootstrap)"
            )
        lines.append(f"95% percentile bootstrap, {self.n_boot} resamples, seed {self.seed}; "
                     f"{self.seconds:.2f} s")
        return "\n".join(lines)


def per_impression(prepared: Sequence[Prepared], scorer: Scorer) -> Array:
    """(n impressions, 4) metric matrix of one scorer (columns: :data:`METRICS`)."""
    return np.array([impression_metrics(p.labels, scorer(p)) for p in prepared]).reshape(-1, 4)


def bootstrap(values: Array, idx: npt.NDArray[Any]) -> tuple[float, float, float]:
    """``(mean, 2.5th, 97.5th percentile)`` of the mean of ``values`` over resamples ``idx``
    (shape (n_boot, n))."""
    means = values[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi)


def load(
    path: Path,
    news: Path,
    log: Path | None = None,
    topo: Topology | None = None,
    exclude: Path | None = None,
    brand: str = "mind",
) -> tuple[list[Prepared], Coverage, Topology]:
    """Read the inputs and :func:`prepare` them (arguments as :func:`evaluate`).

    Raises:
        ConfigError: an unreadable input file; ValueError: no evaluable impression.
    """
    from feedpipe.topology import topology

    topo = topo or topology()
    imps, bad = read_behaviors(path)
    log_rows = imps if log is None else read_behaviors(log)[0]
    excluded = 0
    if exclude is not None:
        drop = {r.impression_id for r in read_behaviors(exclude)[0]}
        before = len(imps)
        imps = [r for r in imps if r.impression_id not in drop]
        excluded = before - len(imps)
    metas, _ = read_news(news, topo, brand)
    prepared, cov = prepare(imps, metas, log_rows, topo, brand)
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
    for name, fn in scorers(topo, topo.ranker_config()).items():
        m = per_impression(prepared, fn)
        auc_of[name] = m[:, 0]
        rows[name] = {metric: bootstrap(m[:, j], idx) for j, metric in enumerate(METRICS)}
    m = random_baseline(prepared, seed)
    auc_of["baseline:random"] = m[:, 0]
    rows["baseline:random"] = {metric: bootstrap(m[:, j], idx) for j, metric in enumerate(METRICS)}
    order = [n for n in rows if not n.startswith("baseline:")] + [
        f"baseline:{b}" for b in BASELINES
    ]
    rows = {n: rows[n] for n in order}
    ranker_rows = [n for n in rows if not n.startswith("baseline:")]
    best = max(ranker_rows, key=lambda n: rows[n]["auc"][0]) if ranker_rows else None
    diff = None
    if best is not None:
        diff = bootstrap(auc_of[best] - auc_of["baseline:popularity"], idx)
    return Report(
        rows, cov, n_boot, seed, time.perf_counter() - t0, best, diff,
        {"impressions": str(path), "news": str(news), "log": str(log or path),
         "exclude": str(exclude) if exclude else ""},
    )
