"""ops.evaluate: metrics by hand, a synthetic MIND log by hand, the real derived log."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from feedpipe.settings import settings
from feedpipe.topology import RankersSpec, WeightSet, topology
from ops.cli import cli
from ops.evaluate import METRICS, auc, evaluate, mrr, ndcg, parse_behaviors

L3 = 1 / math.log2(3)


def test_metrics_without_ties_match_mind_definitions() -> None:
    y = np.array([0.0, 1.0, 0.0, 1.0])
    s = np.array([0.9, 0.8, 0.1, 0.2])  # ranks: 0.9 (neg), 0.8 (pos), 0.2 (pos), 0.1 (neg)
    assert auc(y, s) == pytest.approx(2 / 4)  # pairs won: 0.8 > 0.1, 0.2 > 0.1
    assert mrr(y, s) == pytest.approx((1 / 2 + 1 / 3) / 2)
    dcg = L3 + 0.5
    assert ndcg(y, s, 5) == pytest.approx(dcg / (1 + L3))
    assert ndcg(y, s, 2) == pytest.approx(L3 / (1 + L3))


def test_metrics_with_ties_are_expectations_over_tie_orders() -> None:
    y = np.array([1.0, 0.0])
    s = np.array([0.0, 0.0])
    assert auc(y, s) == 0.5
    assert mrr(y, s) == pytest.approx(0.75)
    assert ndcg(y, s, 10) == pytest.approx((1 + L3) / 2)
    with pytest.raises(ValueError):
        auc(np.array([1.0, 1.0]), s)


NEWS = [
    ("N1", "sports", "football_nfl"),
    ("N2", "news", "newsus"),
    ("N3", "sports", "baseball"),
    ("N4", "finance", "markets"),
]
BEHAVIORS = [
    "1\tU1\t11/9/2019 10:00:00 AM\tN1\tN2-1 N3-0",
    "2\tU2\t11/10/2019 10:00:00 AM\tN1 N3\tN2-0 N3-1 N4-0",
    "3\tU3\t11/11/2019 10:00:00 AM\t\tN4-1",  # no non-click: skipped
    "4\tU4\t11/11/2019 11:00:00 AM\tN1\tN4-0 N2-0",  # no click: skipped
    "5\tU5\tyesterday\tN1\tN4-0",  # malformed time
]


def _files(tmp_path: Path) -> tuple[Path, Path]:
    news = tmp_path / "news.tsv"
    news.write_text(
        "".join(f"{i}\t{c}\t{s}\tTitle {i}\tAbstract\t\t[]\t[]\n" for i, c, s in NEWS),
        encoding="utf-8",
    )
    beh = tmp_path / "behaviors.tsv"
    beh.write_text("\n".join(BEHAVIORS) + "\n", encoding="utf-8")
    return beh, news


def test_parse_behaviors_reports_bad_rows() -> None:
    rows, bad = parse_behaviors([*BEHAVIORS, "x\ty", "6\tU6\t11/9/2019 1:00:00 PM\t\tN1-2"])
    assert len(rows) == 4
    assert set(bad) == {5, 6, 7}
    assert "time" in bad[5] and "columns" in bad[6] and "N1-2" in bad[7]


def test_synthetic_log_by_hand(tmp_path: Path) -> None:
    beh, news = _files(tmp_path)
    sets = {"only-affinity": WeightSet(ranker="affinity", version=1,
                                       weights={"a": 1.0, "b": 0.0, "c": 0.0})}
    topo = topology().model_copy(
        update={"rankers": RankersSpec(weight_sets=sets, brands={"default": "only-affinity"})}
    )
    r = evaluate(beh, news, topo=topo, n_boot=50, seed=3)
    c = r.coverage
    assert (c.evaluated, c.skipped_no_negative, c.skipped_no_positive, c.malformed) == (2, 1, 1, 1)
    assert (c.candidates, c.clicks, c.candidates_without_metadata) == (5, 2, 0)

    # Popularity (clicks strictly before): row 1 sees nothing -> N2, N3 tied at 0: AUC 1/2,
    # MRR (1 + 1/2)/2, nDCG (1 + 1/log2 3)/2. Row 2 sees row 1: N2 = 1 click, N3 = N4 = 0;
    # the click N3 loses to N2 and ties N4: AUC 1/4, MRR (1/2 + 1/3)/2,
    # nDCG (1/log2 3 + 1/2)/2.
    pop = r.rows["baseline:popularity"]
    assert pop["auc"][0] == pytest.approx((0.5 + 0.25) / 2)
    assert pop["mrr"][0] == pytest.approx((0.75 + (1 / 2 + 1 / 3) / 2) / 2)
    assert pop["ndcg@5"][0] == pytest.approx(((1 + L3) / 2 + (L3 + 0.5) / 2) / 2)
    # Recency (first sighting strictly before, else now): row 1 all new -> tie (1/2);
    # row 2: N2, N3 first seen a day earlier, N4 new -> N4 first; N3 ties N2: AUC 1/4.
    assert r.rows["baseline:recency"]["auc"][0] == pytest.approx((0.5 + 0.25) / 2)
    # Affinity: row 1, U1 read N1 (sports): N3 (sports) 0.75 > N2 (news) 0 but N2 was
    # clicked -> AUC 0; row 2, U2 read N1, N3 (sports): the click N3 beats N2, N4 -> 1.
    aff = r.rows["affinity:only-affinity@v1"]
    assert aff["auc"][0] == pytest.approx(0.5)
    assert aff["mrr"][0] == pytest.approx((0.5 + 1.0) / 2)
    for metrics in r.rows.values():
        for mean, lo, hi in metrics.values():
            assert lo - 1e-12 <= mean <= hi + 1e-12
    assert list(r.rows) == ["affinity:only-affinity@v1", "baseline:random",
                            "baseline:popularity", "baseline:recency", "baseline:trending"]
    # Trending (24 h decayed clicks strictly before): row 2 sees row 1's click on N2 a day
    # earlier (weight 1/2), N3 and N4 none -> same order as popularity.
    assert r.rows["baseline:trending"]["auc"][0] == pytest.approx((0.5 + 0.25) / 2)


def test_real_derived_eval_file() -> None:
    mind = settings().data_dir / "mind"
    r = evaluate(mind / "derived_eval_impressions.tsv", mind / "news.tsv", n_boot=300)
    names = {f"{ws.ranker}:{n}@v{ws.version}"
             for n, ws in topology().ranker_config().weight_sets.items()}
    assert names | {"baseline:random", "baseline:popularity", "baseline:recency",
                    "baseline:trending"} == set(r.rows)
    assert r.coverage.evaluated == 119
    for metrics in r.rows.values():
        assert set(metrics) == set(METRICS)
        for mean, lo, hi in metrics.values():
            assert lo <= mean <= hi
            assert lo >= 0.0 and hi <= 1.0
    assert r.rows["baseline:random"]["auc"][0] == pytest.approx(0.5, abs=0.05)
    assert r.best in r.rows and r.best_minus_popularity_auc is not None
    js = r.to_json()
    assert js["rows"]["baseline:popularity"]["auc"]["mean"] == r.rows["baseline:popularity"][
        "auc"][0]


def test_cli_evaluate_json(tmp_path: Path) -> None:
    beh, news = _files(tmp_path)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        cli, ["evaluate", str(beh), "--news", str(news), "--bootstrap", "20", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "baseline:popularity" in res.output
    assert out.read_bytes().startswith(b"{")
    bad = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "missing.tsv"), "--news", str(news)])
    assert bad.exit_code == 2


def test_interest_uses_the_live_codec() -> None:
    """The evaluation's interest vector is the click path's (feedpipe.model.interest): at most
    INTEREST_TERMS terms, so a term outside the reader's heaviest 32 scores 0."""
    from feedpipe.model.interest import INTEREST_TERMS
    from feedpipe.model.item import Meta
    from ops.evaluate.data import Impression, prepare

    # History item H: 48 terms, weights decreasing; term 0 heaviest, term 47 lightest.
    raw = {k: 48.0 - k for k in range(48)}
    norm = math.sqrt(sum(v * v for v in raw.values()))
    texts = {"H": {k: v / norm for k, v in raw.items()}, "IN": {0: 1.0}, "OUT": {47: 1.0}}
    metas = {n: Meta(n, "mind", ("news",), ("news",), None) for n in texts}
    imp = Impression("1", "U1", 1_573_300_000_000, ("H",), ("IN", "OUT"), (1, 0))
    (p,), _ = prepare([imp], metas, [imp], topology(), texts=texts)
    assert INTEREST_TERMS < 48
    assert p.cands.similarity is not None
    sim = np.asarray(p.cands.similarity)
    assert sim[0] > 0.1
    assert sim[1] == 0.0


def test_mean_auc_per_group() -> None:
    from ops.evaluate.metrics import mean_auc

    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    s = np.array([0.9, 0.1, 0.5, 0.5, 0.2, 0.3, 0.0])
    g = np.array([0, 0, 1, 1, 2, 2, 3])  # group 3 has no negative: left out
    assert mean_auc(y, s, g) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert math.isnan(mean_auc(np.ones(2), s[:2], np.array([0, 0])))
