"""Unit tests of the learned ranker's fit (grouped cross-validation, per-impression centring) and
of the co-read replay of reading histories (ops/evaluate/fit.py, feedpipe/model/signals.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fit_support import popularity_impressions

from feedpipe.model.signals import CoReads, coread_add, coread_replay, coread_scores
from feedpipe.topology import topology
from ops.evaluate.data import Prepared, parse_behaviors, prepare
from ops.evaluate.fit import C_GRID, centre, fit_cv, pair_differences


def test_coread_replay_counts_each_history_item_once() -> None:
    table: CoReads = {}
    assert coread_replay(table, ["a", "b", "c"]) == 3
    expected: CoReads = {}
    coread_add(expected, [], "a")
    coread_add(expected, ["a"], "b")
    coread_add(expected, ["a", "b"], "c")
    assert table == expected == {"a": {"b": 1.0, "c": 1.0}, "b": {"c": 1.0}}
    # The same history again (a reader's next impression) adds nothing; a longer one adds the
    # new reads only.
    assert coread_replay(table, ["a", "b", "c"], 3) == 3
    assert table == expected
    assert coread_replay(table, ["a", "b", "c", "d"], 3) == 4
    assert table["c"] == {"d": 1.0} and table["a"] == {"b": 1.0, "c": 1.0, "d": 1.0}
    assert coread_replay(table, ["a"], 4) == 4  # a shorter list never rewinds


def test_prepare_counts_co_reads_of_earlier_histories() -> None:
    rows, bad = parse_behaviors([
        "1\tU1\t11/9/2019 8:00:00 AM\tA B\tX-1 Y-0",
        "2\tU1\t11/9/2019 8:30:00 AM\tA B\tX-0 Y-1",
        "3\tU2\t11/9/2019 9:00:00 AM\tA\tB-1 Y-0",
    ])
    assert not bad
    prepared, _ = prepare(rows, {}, rows, topology())
    last = prepared[-1]
    assert last.impression.impression_id == "3"
    # A -> B comes from U1's history (replayed once, although U1 has two rows), not from a
    # clicked candidate: 1 of A's 3 co-reads (B, X, Y), over 1 + 3.
    assert last.cands.coread == pytest.approx([1 / 4, 1 / 4])


def test_centre_removes_between_impression_variation() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]])
    groups = np.array([0, 0, 1, 1, 1])
    c = centre(x, groups)
    assert np.allclose(c[:, 1], 0.0)
    assert c[:, 0] == pytest.approx([-1.0, 1.0, -10.0, 0.0, 10.0])


def _prepared(rng: np.random.Generator, n_imp: int) -> list[Prepared]:
    """Clicks (popularity) predict the click within an impression; affinity is constant within
    an impression and higher where there are more clicks (a between-impression confound)."""
    return popularity_impressions(rng, n_imp, lambda labels: float(labels.sum()) / 2,
                                  second_click_odd=True)


def test_fit_cv_picks_c_by_grouped_cross_validation() -> None:
    rng = np.random.default_rng(7)
    res = fit_cv(_prepared(rng, 300), topology())
    assert set(res.cv_auc) == set(C_GRID) and res.c in C_GRID
    assert res.cv_auc[res.c] == max(res.cv_auc.values())
    assert res.cv_auc[res.c] > 0.6  # the popularity signal is found out of fold
    assert res.weights["popularity"] > 0 or res.weights["ctr"] > 0
    # Constant within every impression: centring leaves nothing to fit.
    assert res.weights["affinity"] == 0.0
    with pytest.raises(ValueError):
        fit_cv(_prepared(rng, 10), topology(), grid=())


def test_coread_scores_of_a_replayed_history() -> None:
    table: CoReads = {}
    coread_replay(table, ["a", "b", "c", "b"])
    s = coread_scores(table, ["a"], ["b", "c", "z"])
    assert s[0] > s[1] > 0 and s[2] == 0


def test_pair_differences_weigh_each_impression_once() -> None:
    z = np.array([[1.0], [0.0], [2.0], [5.0], [3.0], [4.0]])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    d, w = pair_differences(z, y, groups)
    assert d[:, 0].tolist() == [1.0, -1.0, 1.0, -1.0]
    assert w.tolist() == [0.5, 0.5, 0.5, 0.5]


def test_pairwise_objective_finds_the_within_impression_signal() -> None:
    rng = np.random.default_rng(11)
    res = fit_cv(_prepared(rng, 300), topology(), objective="pairwise")
    assert res.cv_auc[res.c] > 0.6
    assert res.weights["popularity"] > 0 or res.weights["ctr"] > 0
    assert res.weights["affinity"] == 0.0
    with pytest.raises(ValueError, match="objective"):
        fit_cv(_prepared(rng, 10), topology(), objective="listwise")
