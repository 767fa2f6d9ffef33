"""The learned ranker's signals (trending windows, co-reads, text vectors), its features and
score, the logistic fit and its weight-set write (feedpipe/model/signals.py, text.py,
feedpipe/rank/components.py, ops/evaluate/fit.py)."""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from feedpipe.errors import ConfigError
from feedpipe.model import text
from feedpipe.model.signals import (
    COREAD_NEIGHBOURS,
    TREND_EPOCH_MS,
    coread_add,
    coread_scores,
    trend_add,
    trend_at,
    trend_epoch,
    trend_values,
)
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.components import Candidates, learned_features, score
from feedpipe.topology import TOPOLOGY_PATH, WeightSet, load_topology, topology
from ops.evaluate import evaluate
from ops.evaluate.fit import FEATURES, fit_cv, write_weight_set
from ops.evaluate.report import load

T0 = 1_573_000_000_000


def test_trend_decays_by_half_lives_and_ignores_order() -> None:
    events = [(T0, True), (T0 + HOUR_MS, False), (T0 + 3 * HOUR_MS, True)]
    states = []
    for perm in itertools.permutations(events):
        st = None
        for at, clicked in perm:
            st = trend_add(st, clicked, at)
        states.append(trend_at(st, T0 + 3 * HOUR_MS))
    for s in states[1:]:
        assert s == pytest.approx(states[0])
    c1, i1, c24, i24 = states[0]
    assert c1 == pytest.approx(1 + 2**-3)
    assert i1 == pytest.approx(1 + 2**-2 + 2**-3)
    assert c24 == pytest.approx(1 + 2 ** (-3 / 24))
    assert i24 == pytest.approx(1 + 2 ** (-2 / 24) + 2 ** (-3 / 24))
    assert trend_at(None, T0) == (0.0, 0.0, 0.0, 0.0)


def test_trend_across_epochs_and_vectorised() -> None:
    e = trend_epoch(T0)
    start = e * TREND_EPOCH_MS
    st = trend_add(None, True, int(start - 2 * HOUR_MS))  # last epoch
    st = trend_add(st, True, int(start + 2 * HOUR_MS))
    assert sorted(st) == [e - 1, e]
    assert all(math.isfinite(v) for sums in st.values() for v in sums)
    c1, _, c24, _ = trend_at(st, start + 2 * HOUR_MS)
    assert c1 == pytest.approx(1 + 2**-4) and c24 == pytest.approx(1 + 2 ** (-4 / 24))
    # Two epochs later the old epoch no longer counts; the current one still does.
    later = start + TREND_EPOCH_MS + 2 * HOUR_MS
    assert trend_at(st, later)[2] == pytest.approx(2 ** (-TREND_EPOCH_MS / (24 * HOUR_MS)))
    # trend_values: m readers x n items at once, equal to trend_at item by item.
    other = trend_add(None, False, int(start + HOUR_MS))
    sums = {k: np.array([st.get(k, [0.0] * 4), other.get(k, [0.0] * 4)]) for k in (e - 1, e)}
    nows = np.array([start + 3 * HOUR_MS, start + 30 * HOUR_MS])
    got = trend_values(sums, nows)
    assert got.shape == (2, 2, 4)
    for i, now in enumerate(nows):
        assert got[i, 0] == pytest.approx(trend_at(st, now))
        assert got[i, 1] == pytest.approx(trend_at(other, now))


def test_coreads_are_bounded_and_normalised() -> None:
    table: dict[str, dict[str, float]] = {}
    coread_add(table, ["a", "b"], "c")
    coread_add(table, ["a"], "c")
    coread_add(table, ["a"], "a")  # a read after itself does not count
    assert table == {"a": {"c": 2.0}, "b": {"c": 1.0}}
    s = coread_scores(table, ["a", "b"], ["c", "z"])
    assert s == pytest.approx([2 / 3 + 1 / 2, 0.0])
    for i in range(COREAD_NEIGHBOURS + 10):
        coread_add(table, ["a"], f"n{i:03d}")
    assert len(table["a"]) == COREAD_NEIGHBOURS
    assert table["a"]["c"] == 2.0  # the heaviest neighbour survives eviction


def test_text_vectors_stem_per_language_and_are_compact() -> None:
    en = text.encode(["Football clubs", "The club won the football match"], "en")
    assert len(en) <= text.TOP_TERMS
    assert sum(v * v for v in en.values()) == pytest.approx(1.0)
    # Spanish and Danish inflections meet on their stems.
    es = text.similarity(text.encode(["elecciones presidenciales"], "es"),
                         [text.encode(["la elección presidencial"], "es")])
    da = text.similarity(text.encode(["fodboldklubberne vandt"], "da"),
                         [text.encode(["fodboldklubben"], "da"), text.encode(["regeringen"], "da")])
    assert es[0] > 0.4 and da[0] > 0.4 and da[1] == 0.0
    assert text.encode(["a b c"], "xx") == {}  # only short tokens, unknown language
    assert text.from_json(text.to_json(en)) == pytest.approx(en, abs=1e-4)
    with pytest.raises(ValueError):
        text.from_json([[1, 2, 3]])


def test_interest_vector_decays_and_matches_reads() -> None:
    sport = text.encode(["football match goal league"], "en")
    money = text.encode(["stocks market shares investors"], "en")
    interest = text.interest_add({}, sport, 1.0)
    interest = text.interest_add(interest, money, 4.0)  # newer read: larger forward weight
    sim = text.similarity(interest, [sport, money, None])
    assert sim[1] > sim[0] > 0 and sim[2] == 0.0
    assert len(text.interest_add(interest, text.encode(["x" * 5 + str(i) for i in range(99)],
                                                       "en"), 1.0)) <= text.TOP_TERMS


def _cands(n: int) -> Candidates:
    return Candidates(
        affinity=np.linspace(0, 1, n), age_hours=np.full(n, np.nan), clicks=np.arange(n) * 1.0,
        impressions=np.arange(n) * 10.0, category_weight=np.zeros(n), bias=np.zeros(n),
        trend=np.tile([1.0, 2.0, 3.0, 30.0], (n, 1)), coread=np.full(n, 0.25),
    )


def test_learned_score_is_the_weighted_sum_and_explains_each_feature() -> None:
    topo = topology()
    c = _cands(3)
    f = learned_features(c, topo.ranking)
    assert list(f) == list(FEATURES)
    assert f["popularity"] == pytest.approx(np.log1p([0, 1, 2]))
    assert f["trend_24h"] == pytest.approx(np.log1p([3.0] * 3))
    assert np.all(f["similarity"] == 0) and np.all(f["recency"] == 0)
    w = {k: float(i) - 3.0 for i, k in enumerate(FEATURES)}
    ws = WeightSet(ranker="learned", version=2, weights=w)
    r = score("learned-x", ws, c, topo.ranking, topo.ranker_config().editorial)
    assert r.score == pytest.approx(sum(w[k] * f[k] for k in FEATURES))
    b = r.breakdown(2)
    assert b["weights"] == "learned-x@v2" and set(b["components"]) == set(FEATURES)
    assert sum(b["weight_values"][k] * b["components"][k] for k in FEATURES) == pytest.approx(
        b["score"])
    with pytest.raises(ValueError):
        WeightSet(ranker="learned", version=1, weights={**w, "coread": math.inf})
    with pytest.raises(ValueError):
        WeightSet(ranker="learned", version=1, weights={"a": 1.0})


NEWS = "".join(
    f"N{i}\t{cat}\tsub\tTitle {word} {i}\tAbstract about {word}\t\t[]\t[]\n"
    for i, (cat, word) in enumerate([("sports", "football"), ("news", "election"),
                                      ("sports", "football"), ("finance", "markets")], start=1)
)


def _log(tmp_path: Path) -> tuple[Path, Path]:
    rows = []
    for d in range(9, 13):
        for h in range(0, 24, 3):
            uid = f"U{d}{h}"
            rows.append(f"{d}{h}\t{uid}\t11/{d}/2019 {h % 12 + 1}:00:00 {'AM' if h < 12 else 'PM'}"
                        f"\tN1\tN3-1 N2-0 N4-{h % 2}")
    beh = tmp_path / "behaviors.tsv"
    beh.write_text("\n".join(rows) + "\n", encoding="utf-8")
    news = tmp_path / "news.tsv"
    news.write_text(NEWS, encoding="utf-8")
    return beh, news


def test_fit_learns_the_signal_and_writes_a_new_version(tmp_path: Path) -> None:
    beh, news = _log(tmp_path)
    prepared, _, topo = load(beh, news)
    # Co-reads replay only earlier rows: the first impression has none.
    assert np.all(prepared[0].cands.coread == 0)
    assert prepared[-1].cands.coread[0] > 0  # N1 -> N3 counted from earlier rows
    w = fit_cv(prepared, topo).weights
    assert set(w) == set(FEATURES) and all(math.isfinite(v) for v in w.values())
    path = tmp_path / "topology.yaml"
    shutil.copy(TOPOLOGY_PATH, path)
    assert write_weight_set(path, "learned-test", w, "unit test") == 1
    assert write_weight_set(path, "learned-test", w, "unit test") == 2
    ws = load_topology(path).ranker_config().weight_sets["learned-test"]
    assert (ws.ranker, ws.version) == ("learned", 2)
    assert ws.weights == pytest.approx(w)
    with pytest.raises(ConfigError):
        write_weight_set(path, "affinity-seed-mind", w, "wrong ranker")
    with pytest.raises(ConfigError):
        write_weight_set(path, "x", {**w, "ctr": math.nan}, "nan")
    # The written set is a row of the evaluation.
    r = evaluate(beh, news, topo=load_topology(path), n_boot=20)
    assert "learned:learned-test@v2" in r.rows


def test_contributions_of_a_learned_item() -> None:
    from feedpipe.rank.components import contributions

    item = {"ranker": "learned", "weights": {k: 2.0 for k in FEATURES},
            **{k: 0.25 for k in FEATURES}}
    assert contributions(item) == {k: 0.5 for k in FEATURES}
    assert contributions({**item, "ranker": "affinity"}) is None
    assert contributions({**item, "weights": None}) is None
    assert contributions({k: v for k, v in item.items() if k != "ctr"}) is None


def test_cli_fit_writes_the_weight_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import feedpipe.topology as topology_module
    from ops.cli import cli

    beh, news = _log(tmp_path)
    path = tmp_path / "topology.yaml"
    shutil.copy(TOPOLOGY_PATH, path)
    monkeypatch.setattr(topology_module, "TOPOLOGY_PATH", path)
    res = CliRunner().invoke(cli, ["evaluate", str(beh), "--news", str(news), "--fit", "cli-set"])
    assert res.exit_code == 0, res.output
    assert "cli-set@v1" in res.output
    ws = load_topology(path).ranker_config().weight_sets["cli-set"]
    assert ws.ranker == "learned" and set(ws.weights) == set(FEATURES)
