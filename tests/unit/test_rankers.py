"""The vectorised rankers: components (feedpipe.rank.components) agree with the pure reference
(feedpipe.rank.reference), formulas by hand, baselines, hot reload (feedpipe.rank.weights), and
rank_users (feedpipe.rank.rankers)."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from ranking_support import config, world

from feedpipe.errors import ConfigError
from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.profile import Event, affinity_at, apply_events, new_profile
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.baselines import baseline_scores, order
from feedpipe.rank.components import (
    Candidates,
    affinity_scores,
    bias_match,
    category_weights,
    engagement_component,
    freshness_component,
    item_biases,
    profile_shares,
    recency_component,
    score,
    user_bias,
)
from feedpipe.rank.rankers import rank_users
from feedpipe.rank.reference import engagement, item_affinity, rank, recency
from feedpipe.rank.weights import RankingConfig, WeightsRegistry
from feedpipe.topology import TOPOLOGY_PATH, EditorialSpec, WeightSet, topology

T0 = 1_573_300_000_000
RANKING = topology().ranking


def _cands(n: int, **kw: object) -> Candidates:
    base: dict[str, object] = {
        "affinity": np.zeros(n),
        "age_hours": np.zeros(n),
        "clicks": np.zeros(n),
        "impressions": np.zeros(n),
        "category_weight": np.full(n, 0.5),
        "bias": np.full(n, 0.5),
        "user_bias": 0.5,
    }
    base.update(kw)
    return Candidates(**base)  # type: ignore[arg-type]


def test_affinity_equals_ranking_item_affinity() -> None:
    rnd = random.Random(7)
    cats = ["news", "sports", "finance", "health"]
    tops = [*cats, "nfl", "markets", "covid"]
    metas = [
        Meta(f"{i:064x}", "mind", tuple(rnd.sample(cats, rnd.randint(0, 2))),
             tuple(rnd.sample(tops, rnd.randint(0, 3))), None)
        for i in range(60)
    ]
    spec = topology().profiles
    profile = new_profile("u", T0, spec)
    events = [Event(str(i), "click", metas[rnd.randrange(60)].content_id, T0 + i * 60_000)
              for i in range(25)]
    apply_events(profile, events, {m.content_id: m for m in metas}, spec)
    matrix = CandidateMatrix(metas)
    s_cat, s_top = profile_shares([profile], matrix)
    got = affinity_scores(s_cat, s_top, matrix.cat, matrix.topic)[0]
    shares = affinity_at(profile, 0)
    want = [item_affinity(shares["category"], shares["topic"], m) for m in matrix.metas]
    assert got == pytest.approx(want, abs=1e-12)
    assert got.max() > 0


def test_engagement_and_recency_equal_ranking() -> None:
    clicks = np.array([0, 1, 5, 30])
    imps = np.array([0, 10, 20, 1000])
    assert engagement_component(clicks, imps, RANKING) == pytest.approx(
        [engagement(c, i, RANKING) for c, i in zip(clicks, imps, strict=True)]
    )
    ages = np.array([0.0, 3.0, 24.0, 100.0])
    want = [recency(T0 - int(a * HOUR_MS), T0, RANKING) for a in ages]
    assert recency_component(ages, RANKING.recency_half_life_hours) == pytest.approx(want)
    assert recency_component(np.array([np.nan]), 24.0)[0] == 0.0


def test_editorial_formula_by_hand() -> None:
    ws = WeightSet(ranker="editorial", version=3,
                   weights={"category": 0.4, "bias": 0.3, "freshness": 0.3})
    c = _cands(3, category_weight=np.array([1.0, 0.2, 0.5]), bias=np.array([0.9, 0.1, 0.5]),
               user_bias=0.7, age_hours=np.array([0.0, 10.0, np.nan]))
    r = score("ed", ws, c, RANKING, EditorialSpec())
    want = [
        0.4 * 1.0 + 0.3 * (1 - 0.2) + 0.3 * 1.0,
        0.4 * 0.2 + 0.3 * (1 - 0.6) + 0.3 / (1 + 0.1 * 10),
        0.4 * 0.5 + 0.3 * (1 - 0.2) + 0.0,
    ]
    assert r.score == pytest.approx(want)
    b = r.breakdown(1, arm="editorial")
    assert b["ranker"] == "editorial" and b["weights"] == "ed@v3" and b["arm"] == "editorial"
    assert b["components"] == pytest.approx({"category": 0.2, "bias": 0.4, "freshness": 0.5})
    assert b["score"] == pytest.approx(want[1])


def test_affinity_ranker_weights_and_matrix_shape() -> None:
    ws = WeightSet(ranker="affinity", version=1, weights={"a": 0.5, "b": 0.25, "c": 0.25})
    aff = np.array([[0.2, 1.0], [0.0, 0.4]])  # 2 users x 2 items
    c = _cands(2, affinity=aff, age_hours=np.array([24.0, np.nan]),
               clicks=np.array([1.0, 0.0]), impressions=np.array([20.0, 0.0]))
    r = score("x", ws, c, RANKING, EditorialSpec())
    assert r.score.shape == (2, 2)
    eng = engagement_component(np.array([1.0, 0.0]), np.array([20.0, 0.0]), RANKING)
    want = 0.5 * aff + 0.25 * np.array([0.5, 0.0]) + 0.25 * eng
    assert r.score == pytest.approx(want)
    assert r.breakdown(1, 0)["components"]["affinity"] == 0.0


def test_weight_sets_validated() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        WeightSet(ranker="affinity", version=1, weights={"a": 0.6, "b": 0.2, "c": 0.3})
    with pytest.raises(ValidationError, match="exactly the keys"):
        WeightSet(ranker="editorial", version=1, weights={"a": 0.4, "b": 0.3, "c": 0.3})
    with pytest.raises(ValidationError):
        WeightSet(ranker="nope", version=1, weights={"a": 1.0, "b": 0, "c": 0})  # type: ignore[arg-type]


def test_without_a_rankers_section_weight_sets_come_from_ranking_weights() -> None:
    topo = topology().model_copy(update={"rankers": None})
    cfg = topo.ranker_config()
    name, ws = cfg.for_brand("mind")
    assert name == "ranking.weights.mind"
    assert ws.weights == topology().ranking.weights["mind"].as_dict()
    assert cfg.for_brand("unknown-brand")[0] == "ranking.weights.default"


def test_repository_topology_rankers() -> None:
    cfg = topology().ranker_config()
    assert {ws.ranker for ws in cfg.weight_sets.values()} == {"affinity", "editorial", "learned"}
    assert cfg.for_brand("mind")[1].version >= 1


def test_small_helpers() -> None:
    spec = EditorialSpec(source_bias={"left-wire": 0.1}, category_weights={"b": {"x": 0.9}})
    assert item_biases([0.8, None, None], ["s", "left-wire", None], spec) == pytest.approx(
        [0.8, 0.1, 0.5])
    with pytest.raises(ValueError):
        item_biases([1.5], ["s"], spec)
    m1 = Meta("1", "b", ("x", "y"), (), None)
    m2 = Meta("2", "b", ("y",), (), None)
    assert category_weights([m1, m2, None], "b", spec) == pytest.approx([0.9, 0.5, 0.5])
    assert user_bias([]) == 0.5
    assert user_bias([0.0, 1.0], [3, 1]) == pytest.approx(0.25)
    assert bias_match(np.array([0.0, 1.0]), 0.25) == pytest.approx([0.75, 0.25])
    assert freshness_component(np.array([0.0, 10.0]), 0.1) == pytest.approx([1.0, 0.5])
    assert order(np.array([0.5, 0.9, 0.5]), ["c", "a", "b"]) == [1, 2, 0]
    c = _cands(3, clicks=np.array([3.0, 1.0, 2.0]), age_hours=np.array([5.0, np.nan, 1.0]))
    assert baseline_scores("popularity", c).tolist() == [3.0, 1.0, 2.0]
    assert order(baseline_scores("recency", c), ["a", "b", "c"]) == [2, 0, 1]
    r1 = baseline_scores("random", c, np.random.default_rng(1))
    assert r1 == pytest.approx(baseline_scores("random", c, np.random.default_rng(1)))
    with pytest.raises(KeyError):
        baseline_scores("oracle", c)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_weights_registry_reloads_on_change_only_when_due(tmp_path: Path) -> None:
    base = TOPOLOGY_PATH.read_text(encoding="utf-8")
    old = "affinity-mind: {ranker: affinity, version: 2, weights: {a: 0.3, b: 0.0, c: 0.7}}"
    new = "affinity-mind: {ranker: affinity, version: 3, weights: {a: 0.5, b: 0.0, c: 0.5}}"
    assert old in base
    path = tmp_path / "topology.yaml"
    _write(path, base, 1_000_000_000)
    clock = _Clock()
    reg = WeightsRegistry(path, check_every_s=5.0, clock=clock)
    first = reg.current()
    assert first.generation == 1
    assert first.rankers.weight_sets["affinity-mind"].version == 2

    _write(path, base.replace(old, new), 2_000_000_000)
    clock.t = 4.0  # not due yet: no stat, same config
    assert reg.current() is first
    clock.t = 5.0
    second = reg.current()
    assert second.generation == 2
    assert second.rankers.weight_sets["affinity-mind"].weights["a"] == 0.5
    clock.t = 10.0  # due, unchanged file: same object
    assert reg.current() is second

    # A broken edit keeps the previous weights and reports why.
    _write(path, base.replace(old, old.replace("c: 0.7", "c: 0.9")), 3_000_000_000)
    clock.t = 15.0
    assert reg.current() is second
    assert reg.last_error is not None and "sum to 1" in reg.last_error


def test_weights_registry_first_load_error_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        WeightsRegistry(tmp_path / "missing.yaml").current()


# -- rank_users: the click path's feed ranking ------------------------------------------
@pytest.mark.parametrize("published", ["some", "all", "none"])
def test_rank_users_with_seed_weight_sets_agrees_with_the_pure_reference(published: str) -> None:
    """The vectorised ranker equals :func:`feedpipe.rank.reference.rank` (pure Python, item by item)
    on every user: same order, same scores and components, full explanation per item; whether
    some, every or no item has a publication time (recency is raised only for published
    items)."""
    profiles, matrix, stats = world()
    if published != "some":
        matrix = CandidateMatrix([
            dataclasses.replace(m, published_at=T0 - (i % 50) * HOUR_MS if published == "all"
                                else None)
            for i, m in enumerate(matrix.metas)])
    got = rank_users(profiles, matrix, stats, RANKING, config(False))
    assert any(got)
    recency = [it["recency"] for items in got for it in items]
    assert (max(recency) == 0) == (published == "none")
    for p, items in zip(profiles, got, strict=True):
        brands = sorted(p["brands"]) or [RANKING.default_brand]  # type: ignore[call-overload]
        ref = rank(p, [m for m in matrix.metas if m.brand in brands], stats, RANKING)
        assert [it["content_id"] for it in items] == [s.content_id for s in ref]
        assert [it["score"] for it in items] == pytest.approx([s.score for s in ref])
        assert [it["affinity"] for it in items] == pytest.approx([s.affinity for s in ref])
        assert [it["recency"] for it in items] == pytest.approx([s.recency for s in ref])
        assert [it["rank"] for it in items] == list(range(1, len(items) + 1))
        read = {r["content_id"] for r in p["recent_reads"]}  # type: ignore[attr-defined]
        assert not read & {it["content_id"] for it in items}
        for it, s in zip(items, ref, strict=True):
            assert it["weights"] == s.weights.as_dict()
            assert (it["ranker"], it["weight_version"], it["arm"]) == ("affinity", 1, None)
            want = "affinity-seed-mind" if s.brand == "mind" else "affinity-seed-default"
            assert it["weight_set"] == want


def test_candidate_generation_agrees_with_the_pure_reference_and_names_sources() -> None:
    """With candidate generation on, rank_users scores only what the fresh, trending and
    affinity sources propose, exactly as the reference does (ties at the top-affinity cut
    included), and every item names its sources; the filter bites (feeds get shorter)."""
    from feedpipe.rank.candidates import CandidateInputs, CandidateSpec

    profiles, matrix, stats = world(40)
    added = {m.content_id: float(T0 + (i % 7) * 24 * HOUR_MS) for i, m in enumerate(matrix.metas)}
    matrix = CandidateMatrix(matrix.metas, added)
    trending = {"mind": [m.content_id for m in matrix.metas[::37]]}
    sources = CandidateInputs(CandidateSpec(fresh_hours=12, trending_k=8, top_affinities=2),
                              trending)
    got = rank_users(profiles, matrix, stats, RANKING, config(False), sources=sources)
    full = rank_users(profiles, matrix, stats, RANKING, config(False))
    assert sum(map(len, got)) < sum(map(len, full))
    names = {"fresh", "trending", "affinity"}
    seen_sources: set[str] = set()
    for p, items in zip(profiles, got, strict=True):
        brands = sorted(p["brands"]) or [RANKING.default_brand]  # type: ignore[call-overload]
        cands = [m for m in matrix.metas if m.brand in brands]
        ref = rank(p, cands, stats, RANKING, sources, added)
        assert [it["content_id"] for it in items] == [s.content_id for s in ref]
        assert [it["score"] for it in items] == pytest.approx([s.score for s in ref])
        for it in items:
            assert it["sources"] and set(it["sources"]) <= names
            seen_sources |= set(it["sources"])
            if "trending" in it["sources"]:
                assert it["content_id"] in trending["mind"][:8]
    assert seen_sources == names


def test_rank_users_serves_each_user_their_experiment_arm() -> None:
    from feedpipe.rank.experiments import assign_arm

    profiles, matrix, stats = world(60)
    cfg = config(True)
    exp = cfg.experiments["mind-rankers"]
    got = rank_users(profiles, matrix, stats, RANKING, cfg)
    arms_seen = set()
    for p, items in zip(profiles, got, strict=True):
        arm = assign_arm("mind-rankers", exp, str(p["user_id"]))
        ws_name = exp.arms[arm].weights
        ws = cfg.rankers.weight_sets[ws_name]
        for it in items:
            if it["brand"] != "mind":
                assert it["arm"] is None and it["experiment"] is None
                continue
            arms_seen.add(arm)
            assert (it["arm"], it["experiment"]) == (arm, "mind-rankers")
            assert (it["weight_set"], it["ranker"]) == (ws_name, ws.ranker)
            assert it["weight_version"] == ws.version
            names = ("affinity", "recency", "engagement") if ws.ranker == "affinity" else (
                "category", "bias", "freshness"
            )
            keys = list(ws.weights)
            total = sum(ws.weights[k] * it[c] for k, c in zip(keys, names, strict=True))
            assert it["score"] == pytest.approx(total)
        scores = [it["score"] for it in items]
        assert scores == sorted(scores, reverse=True)
    assert arms_seen == set(exp.arms)


def test_rank_users_serves_a_learned_set_with_the_evaluation_s_features() -> None:
    """A brand served by a ``learned`` weight set: each item's score is the weighted sum of
    the features of :func:`feedpipe.rank.components.learned_features` (the evaluation's
    code), every feature's value is on the item, and the UserFeed record carries them in
    ``components``."""
    from feedpipe.rank.components import learned_features
    from feedpipe.wire.codec import codec
    from feedpipe.wire.user_feed import feed_items, user_feed_record

    profiles, matrix, stats = world(20)
    feats = topology().ranker_config().weight_sets["learned-mind"].weights
    ws = WeightSet(ranker="learned", version=3, weights=dict(feats))
    cfg = config(False)
    rankers = cfg.rankers.model_copy(update={
        "weight_sets": {**cfg.rankers.weight_sets, "learned-t": ws},
        "brands": {"default": "learned-t", "mind": "learned-t"}})
    got = rank_users(profiles, matrix, stats, RANKING,
                     RankingConfig(rankers, cfg.experiments, 0, 1))
    assert any(got)
    for p, items in zip(profiles, got, strict=True):
        for it in items:
            served = (it["ranker"], it["weight_set"], it["weight_version"])
            assert served == ("learned", "learned-t", 3)
            assert it["score"] == pytest.approx(sum(feats[k] * it[k] for k in feats))
            i = matrix.index[it["content_id"]]
            m = matrix.metas[i]
            age = np.nan if m.published_at is None else max(
                0.0, (float(p["last_seen"]) - m.published_at) / HOUR_MS)  # type: ignore[arg-type]
            one = learned_features(Candidates(
                affinity=np.array([it["affinity"]]), age_hours=np.array([age]),
                clicks=np.array([float(stats[m.content_id][1])]),
                impressions=np.array([float(stats[m.content_id][0])]),
                category_weight=np.zeros(1), bias=np.zeros(1)), RANKING)
            for k in feats:
                assert it[k] == pytest.approx(float(one[k][0]))
        scores = [it["score"] for it in items]
        assert scores == sorted(scores, reverse=True)
    doc = {"user_id": "u", "profile_version": 1, "generated_at": 0, "ranker": "learned",
           "items": got[0]}
    user_feed = codec("UserFeed")
    back = feed_items(user_feed.decode_plain(user_feed.encode(user_feed_record(doc))))
    assert back == [{k: v for k, v in it.items() if k != "sources"} for it in got[0]]
    assert back[0]["ctr"] == got[0][0]["ctr"] and "engagement" not in back[0]


def test_ranking_config_serves() -> None:
    cfg = config(False)
    assert cfg.serves("affinity") and not cfg.serves("learned") and not cfg.serves("editorial")
    assert config(True).serves("editorial")  # an arm of the enabled experiment
    rankers = cfg.rankers.model_copy(update={"brands": {"default": "learned-mind"}})
    assert RankingConfig(rankers, cfg.experiments, 0, 1).serves("learned")


def test_item_columns_follow_new_stats_and_matrices() -> None:
    """The per-item columns are shared between calls on the same matrix and stats and rebuilt
    when either is replaced: ranking with new stats equals ranking with them from scratch."""
    from feedpipe.rank import rankers

    profiles, matrix, stats = world(12)
    cfg = config(False)
    first = rank_users(profiles, matrix, stats, RANKING, cfg)
    again = rankers.item_columns(matrix, stats, RANKING, cfg.rankers.editorial.default_bias)
    assert rankers.item_columns(matrix, stats, RANKING,
                                cfg.rankers.editorial.default_bias) is again
    assert rank_users(profiles, matrix, stats, RANKING, cfg) == first
    clicked = {c: (imps, clicks + 50) for c, (imps, clicks) in stats.items()}
    got = rank_users(profiles, matrix, clicked, RANKING, cfg)
    rankers._COLUMNS.clear()
    assert got == rank_users(profiles, matrix, clicked, RANKING, cfg)
    assert got != first  # the engagement moved: the cached columns were not reused
    fresh = CandidateMatrix(list(matrix.metas))
    assert rankers.item_columns(fresh, clicked, RANKING,
                                cfg.rankers.editorial.default_bias) is not again
