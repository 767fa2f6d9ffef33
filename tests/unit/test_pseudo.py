"""Unit tests of the pseudo-impressions from reading histories (ops/evaluate/pseudo.py), of the
fit with them (ops/evaluate/fit.py ``extra``, ``without``) and of the reported set's bounds
(ops/evaluate/bounds.py: oracle popularity, minimum detectable effect)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fit_support import popularity_impressions

from feedpipe.model.item import Meta
from feedpipe.rank.components import Candidates
from feedpipe.topology import topology
from ops.evaluate.bounds import min_detectable_effect, oracle_scorers
from ops.evaluate.data import Impression, Prepared, parse_behaviors
from ops.evaluate.fit import FEATURES, fit_cv
from ops.evaluate.pseudo import pseudo_impressions
from ops.evaluate.report import evaluate

CATS = {"A": "sports", "B": "sports", "C": "news", "D": "finance", "E": "sports",
        "F": "news"}
METAS = {n: Meta(n, "mind", (c,), (c,), None) for n, c in CATS.items()}
ROWS = [
    # U1: history A, X (no metadata), B; candidates C, D, E shown the same day.
    "1\tU1\t11/9/2019 10:00:00 AM\tA X B\tC-0 D-1 E-0",
    # U1 again: its history is not used twice.
    "2\tU1\t11/9/2019 11:00:00 AM\tA X B\tC-1 D-0",
    # U2: only one history item with metadata: nothing to build a profile before it.
    "3\tU2\t11/9/2019 12:00:00 PM\tC X\tD-1 E-0",
    # Two days later: F is outside U1's 24 h pool.
    "4\tU3\t11/11/2019 10:00:00 AM\tX\tF-1 C-0",
]


def test_pseudo_impressions_from_histories() -> None:
    rows, bad = parse_behaviors(ROWS)
    assert not bad
    topo = topology()
    out = pseudo_impressions(rows, METAS, {}, topo, negatives=4, seed=1)
    assert len(out) == 1
    (p,) = out
    imp = p.impression
    assert imp.impression_id == "pseudo:1:2" and imp.history == ("A", "X")
    assert imp.candidates[0] == "B" and sorted(imp.candidates[1:]) == ["C", "D", "E"]
    assert list(p.labels) == [1.0, 0.0, 0.0, 0.0]
    # Click 2 of 3 is placed one history spacing before the row's time.
    assert imp.at_ms == rows[0].at_ms - topo.profiles.history_click_spacing_s * 1000
    # The profile (A: sports) favours the sports items B and E over C (news) and D (finance).
    aff = dict(zip(imp.candidates, np.asarray(p.cands.affinity), strict=True))
    assert aff["B"] == aff["E"] > 0 and aff["C"] == aff["D"] == 0
    # Fewer negatives than the pool: a seeded sample.
    again = pseudo_impressions(rows, METAS, {}, topo, negatives=2, seed=1)
    assert again[0].impression.candidates == pseudo_impressions(
        rows, METAS, {}, topo, negatives=2, seed=1)[0].impression.candidates
    assert len(again[0].labels) == 3
    with pytest.raises(ValueError):
        pseudo_impressions(rows, METAS, {}, topo, negatives=0)


def test_pseudo_negatives_from_other_readers_histories() -> None:
    rows, _ = parse_behaviors(ROWS)
    topo = topology()
    (p,) = pseudo_impressions(rows, METAS, {}, topo, pool_from="read")
    # The rows within 24 h of U1's read C (U2's history; X has no metadata); F, shown two
    # days later, and U1's own reads are not in the pool.
    assert p.impression.candidates == ("B", "C")
    assert list(p.labels) == [1.0, 0.0]
    # Pool "own": U1's own rows showed C, D, E (both rows), none read.
    (o,) = pseudo_impressions(rows, METAS, {}, topo, pool_from="own", seed=1)
    assert o.impression.candidates[0] == "B" and sorted(o.impression.candidates[1:]) == [
        "C", "D", "E"]
    with pytest.raises(ValueError, match="pool"):
        pseudo_impressions(rows, METAS, {}, topo, pool_from="clicked")


def _real(rng: np.random.Generator, n: int) -> list[Prepared]:
    """Popularity predicts the click and affinity is constant within each impression (the
    fitting split's situation: affinity is not identified)."""
    return popularity_impressions(rng, n, lambda _: float(rng.random()))


def _pseudo(rng: np.random.Generator, n: int) -> list[Prepared]:
    """Pseudo-impressions: 5 candidates, only affinity varies, the read item has the highest
    affinity more often than not."""
    out = []
    for i in range(n):
        aff = rng.random(5)
        p = np.exp(3.0 * aff)
        labels = np.zeros(5)
        labels[rng.choice(5, p=p / p.sum())] = 1.0
        z = np.zeros(5)
        cands = Candidates(affinity=aff, age_hours=z, clicks=z, impressions=z,
                           category_weight=z, bias=z + 0.5)
        imp = Impression(f"pseudo:{i}", f"P{i}", i, (), tuple(f"M{j}" for j in range(5)),
                         tuple(int(v) for v in labels))
        out.append(Prepared(imp, labels, cands, np.ones(5)))
    return out


def test_fit_with_pseudo_impressions_identifies_affinity() -> None:
    rng = np.random.default_rng(3)
    real = _real(rng, 200)
    alone = fit_cv(real, topology(), grid=(1.0,))
    assert alone.weights["affinity"] == 0.0  # constant within every impression
    assert alone.cv_auc_extra == {}
    joint = fit_cv(real, topology(), grid=(1.0,), extra=_pseudo(rng, 300))
    assert joint.weights["affinity"] > 0.5
    assert joint.weights["popularity"] > 0.1
    assert joint.cv_auc[1.0] > 0.6 and joint.cv_auc_extra[1.0] > 0.6


def test_fit_without_features() -> None:
    rng = np.random.default_rng(4)
    full = fit_cv(_real(rng, 100), topology(), grid=(1.0,))
    assert full.weights["popularity"] != 0.0 and full.weights["ctr"] != 0.0
    res = fit_cv(_real(rng, 100), topology(), grid=(1.0,), without=("popularity",))
    assert res.weights["popularity"] == 0.0 and res.weights["ctr"] != 0.0
    assert set(res.weights) == set(FEATURES)
    with pytest.raises(ValueError, match="unknown features"):
        fit_cv(_real(rng, 10), topology(), without=("nope",))


def test_oracle_counts_the_whole_log_but_the_row_itself() -> None:
    rows, _ = parse_behaviors(ROWS)
    scorers = oracle_scorers(rows, topology())
    z = np.zeros(3)
    first = Prepared(rows[0], np.array([0.0, 1.0, 0.0]),
                     Candidates(affinity=z, age_hours=z, clicks=z, impressions=z,
                                category_weight=z, bias=z), z + 1)
    # Row 1's own clicks are left out; the later rows 2 and 3 count (C clicked in row 2,
    # D in row 3).
    assert list(scorers["oracle:popularity-whole-log"](first)) == [1.0, 1.0, 0.0]
    ctr = scorers["oracle:ctr-whole-log"](first)
    assert ctr[0] > ctr[2] and ctr.shape == (3,)


def test_min_detectable_effect_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(5)
    diff = rng.normal(0.0, 0.4, 400)
    idx = np.random.default_rng(6).integers(0, 400, size=(4000, 400))
    mde_ci, mde_80 = min_detectable_effect(diff, idx)
    se = 0.4 / np.sqrt(400)
    assert mde_ci == pytest.approx(1.96 * se, rel=0.1)
    assert mde_80 == pytest.approx(2.80 * se, rel=0.1)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    """``(behaviors.tsv of ROWS, news.tsv of CATS)`` in ``tmp_path``."""
    news = tmp_path / "news.tsv"
    news.write_text("".join(f"{n}\t{c}\t{c}\tTitle {n}\tAbstract\t\t[]\t[]\n"
                            for n, c in CATS.items()), encoding="utf-8")
    beh = tmp_path / "behaviors.tsv"
    beh.write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    return beh, news


def test_evaluate_with_oracle_rows(tmp_path: Path) -> None:
    beh, news = _files(tmp_path)
    r = evaluate(beh, news, n_boot=50, oracle=True)
    assert "oracle:popularity-whole-log" in r.rows and "oracle:ctr-whole-log" in r.rows
    assert r.best is not None and not r.best.startswith("oracle:")
    assert r.mde is not None and r.mde[0] >= 0 and r.mde[1] >= 0
    assert "minimum detectable effect" in r.table()
    plain = evaluate(beh, news, n_boot=50)
    assert plain.mde is None and not any(n.startswith("oracle:") for n in plain.rows)
    single = evaluate(beh, news, n_boot=50, features=True)
    assert {f"feature:{k}" for k in FEATURES} <= set(single.rows)
    assert single.best is not None and not single.best.startswith("feature:")
    # log(1 + clicks before) ranks as the popularity baseline (clicks before).
    assert single.rows["feature:popularity"]["auc"] == single.rows["baseline:popularity"]["auc"]


def test_cli_oracle_json(tmp_path: Path) -> None:
    import orjson
    from typer.testing import CliRunner

    from ops.cli import cli

    beh, news = _files(tmp_path)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["evaluate", str(beh), "--news", str(news), "--bootstrap",
                                   "20", "--oracle", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = orjson.loads(out.read_bytes())
    assert set(data["minimum_detectable_effect"]) == {"ci_lower_above_0", "power_80"}
    assert "oracle:ctr-whole-log" in data["minus_popularity_auc"]
