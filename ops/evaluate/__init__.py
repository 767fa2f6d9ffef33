"""Offline evaluation of the rankers on MIND-format impression logs (``feedpipe evaluate``).

Each impression of a MIND ``behaviors.tsv``-format file (``impression_id, user_id, time,
history, "N1-1 N2-0 ..."``) is re-ranked by every weight set of topology.yaml's ``rankers``
section (through :mod:`feedpipe.rank.components`, the code the click path ranks feeds with) and by
three
baselines, and scored with the MIND competition's metrics (github.com/msnews/MIND,
``evaluate.py``: per-impression AUC, MRR, nDCG@5, nDCG@10, averaged over impressions).

No future leakage (docs/evaluation.md):

* profile: built from the impression's own ``history`` column only, through
  ``feedpipe.model.profile.new_profile`` / ``apply_events`` (the click path's code). History
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

Modules: :mod:`~ops.evaluate.data` (parsing, leak-free preparation), :mod:`~ops.evaluate.metrics`
(metrics, bootstrap), :mod:`~ops.evaluate.report` (scoring every row, the report, ``--tune``).
"""

from __future__ import annotations

from ops.evaluate.data import Coverage, Impression, Prepared, parse_behaviors, prepare, read_news
from ops.evaluate.metrics import METRICS, auc, bootstrap, impression_metrics, mrr, ndcg
from ops.evaluate.pseudo import load_pseudo, pseudo_impressions
from ops.evaluate.report import Report, evaluate, load, random_baseline, scorers, tune

__all__ = [
    "METRICS",
    "Coverage",
    "Impression",
    "Prepared",
    "Report",
    "auc",
    "bootstrap",
    "evaluate",
    "impression_metrics",
    "load",
    "load_pseudo",
    "mrr",
    "ndcg",
    "parse_behaviors",
    "prepare",
    "pseudo_impressions",
    "random_baseline",
    "read_news",
    "scorers",
    "tune",
]
