"""The MIND competition's per-impression metrics (AUC, MRR, nDCG@5, nDCG@10; msnews/MIND
``evaluate.py``) with tie-expected values, and the percentile bootstrap of their means."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from feedpipe.rank.components import Array

METRICS: tuple[str, ...] = ("auc", "mrr", "ndcg@5", "ndcg@10")
"""Metric names, in table order (MIND competition, msnews/MIND evaluate.py)."""


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


def mean_auc(labels: Array, scores: Array, groups: npt.NDArray[Any]) -> float:
    """Mean of :func:`auc` over the impressions of ``groups`` (one id per row, rows of an
    impression adjacent) that have a positive and a negative label; NaN when none has."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    vals = [auc(labels[s:e], scores[s:e])
            for s, e in zip(starts, np.r_[starts[1:], len(groups)], strict=True)
            if 0 < np.sum(labels[s:e] > 0) < e - s]
    return float(np.mean(vals)) if vals else float("nan")


def impression_metrics(labels: Array, scores: Array) -> tuple[float, float, float, float]:
    """``(AUC, MRR, nDCG@5, nDCG@10)`` of one impression."""
    return (auc(labels, scores), mrr(labels, scores), ndcg(labels, scores, 5),
            ndcg(labels, scores, 10))


def bootstrap(values: Array, idx: npt.NDArray[Any]) -> tuple[float, float, float]:
    """``(mean, 2.5th, 97.5th percentile)`` of the mean of ``values`` over resamples ``idx``
    (shape (n_boot, n))."""
    means = values[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi)
