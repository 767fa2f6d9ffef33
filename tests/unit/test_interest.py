"""Text interest vectors (feedpipe/model/interest.py): the stored form's size and precision, the
forward-decayed sum through the profile fold, similarity for many users as the evaluation's
per-user function, the enrichment's text vector into the item's meta, and the learned
ranker's live ``similarity`` column."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from feedpipe.model import interest
from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.profile import Event, apply_events, new_profile
from feedpipe.model.text import encode, interest_add, similarity
from feedpipe.rank.rankers import rank_users
from feedpipe.rank.weights import RankingConfig
from feedpipe.topology import WeightSet, topology

T0 = 1_573_550_000_000
HOUR = 3_600_000

FOOTBALL = ("Football club wins the championship final",
            "The striker scored twice as the football club beat its rivals in the final.")
ELECTION = ("Parliament election results announced",
            "Voters elected a new parliament; the election turnout was the highest in decades.")


def _vec(seed: int, n: int = 48) -> dict[int, float]:
    rng = np.random.default_rng(seed)
    terms = rng.choice(2**20, size=n, replace=False)
    w = rng.random(n) + 0.01
    w /= np.linalg.norm(w)
    return {int(k): float(v) for k, v in zip(terms, w, strict=True)}


def test_stored_form_is_bounded_and_round_trips_to_8_bits() -> None:
    vec = interest_add({}, _vec(1), 3.0, top=interest.INTEREST_TERMS)
    stored = interest.pack(vec)
    # the profile's compact codec writes unknown keys as "~key" in its rest JSON
    assert len(orjson.dumps({"~" + interest.FIELD: stored})) - 2 <= 200
    back = interest.unpack(stored)
    assert set(back) == set(vec)
    top = max(vec.values())
    for k, v in vec.items():
        assert back[k] == pytest.approx(v, abs=top / 255 / 2 + 1e-9)
    assert interest.unpack("") == {} and interest.pack({}) == ""
    with pytest.raises(ValueError):
        interest.unpack("not base64!")
    with pytest.raises(ValueError):
        interest.unpack("AAAAAAA=")  # 5 bytes: a scale and a partial term


def test_interest_add_takes_pairs_and_cuts_to_the_heaviest_terms_ties_by_index() -> None:
    a, b = _vec(5), _vec(6)
    from_dict = interest_add(a, b, 2.0, top=interest.INTEREST_TERMS)
    from_pairs = interest_add(a, tuple(b.items()), 2.0, top=interest.INTEREST_TERMS)
    assert from_pairs == from_dict and list(from_pairs) == list(from_dict)
    assert len(from_dict) == interest.INTEREST_TERMS
    summed = {k: a.get(k, 0.0) + 2.0 * b.get(k, 0.0) for k in set(a) | set(b)}
    assert min(from_dict.values()) >= sorted(summed.values())[-interest.INTEREST_TERMS]
    tied = interest_add({}, {9: 1.0, 3: 1.0, 7: 1.0, 1: 0.5}, 1.0, top=2)
    assert list(tied) == [3, 7]  # equal weights: the smaller indexes, heaviest first


def test_reads_sum_with_forward_decay_and_rebase_keeps_the_direction() -> None:
    p = new_profile("u", T0, topology().profiles)
    a, b = _vec(2), _vec(3)
    interest.add_read(p, a, T0)
    interest.add_read(p, b, T0 + int(p["half_life_s"] * 1000))  # one half-life later: x2
    got = interest.interest_of(p)
    want = interest_add(interest_add({}, a, 1.0, 32), b, 2.0, 32)
    cands = [a, b, _vec(4)]
    assert np.allclose(similarity(got, cands), similarity(want, cands), atol=0.01)
    assert similarity(got, [b])[0] > similarity(got, [a])[0]
    before = similarity(got, cands)
    interest.rebase(p, 450.0)
    assert np.allclose(similarity(interest.interest_of(p), cands), before, atol=1e-6)
    assert max(interest.interest_of(p).values()) < 1e-100  # the stored scale moved
    p[interest.FIELD] = "@@"  # unreadable: starts anew, no exception
    assert interest.interest_of(p) == {}
    interest.add_read(p, a, T0)
    assert set(interest.interest_of(p)) <= set(a)


def test_similarity_rows_equal_the_per_user_function() -> None:
    items = [_vec(10 + i) for i in range(6)] + [{}]
    users = [interest_add(interest_add({}, items[0], 1.0), items[3], 0.5), {}, items[5]]
    rows = interest.similarity_rows(users, interest.text_index(items))
    assert rows.shape == (3, 7)
    for u, row in zip(users, rows, strict=True):
        assert np.allclose(row, similarity(u, items))
    assert rows[2, 5] == pytest.approx(1.0)


def test_clicks_build_the_interest_through_the_profile_fold() -> None:
    spec = topology().profiles
    foot = Meta("f", "mind", ("sports",), ("sports",), None,
                tuple(encode(FOOTBALL, "en").items()))
    p = new_profile("u", T0, spec)
    apply_events(p, [Event("e1", "click", "f", T0 + HOUR)], {"f": foot}, spec)
    assert p[interest.FIELD]
    vec = interest.interest_of(p)
    other = encode(("The football final", "A club and its striker"), "en")
    vote = encode(ELECTION, "en")
    s_other, s_vote = similarity(vec, [other, vote])
    assert s_other > 0.2 and s_vote == 0.0
    # a click on an item without a text vector leaves it as is
    bare = Meta("b", "mind", ("news",), ("news",), None)
    stored = p[interest.FIELD]
    apply_events(p, [Event("e2", "click", "b", T0 + 2 * HOUR)], {"b": bare}, spec)
    assert p[interest.FIELD] == stored


def test_meta_json_carries_the_text_vector() -> None:
    vec = encode(ELECTION, "en")
    m = Meta("c", "mind", ("news",), ("politics",), T0, tuple(vec.items()))
    back = Meta.from_json(orjson.loads(orjson.dumps(m.to_json())))
    assert dict(back.text) == pytest.approx({k: round(v, 4) for k, v in vec.items()})
    plain = Meta("c", "mind", ("news",), (), None)
    assert "text" not in plain.to_json() and Meta.from_json(plain.to_json()) == plain
    with pytest.raises(ValueError):
        Meta.from_json({**plain.to_json(), "text": [[1, 2, 3]]})


def test_enrichment_text_vector_reaches_the_meta_not_the_content_json() -> None:
    from content_support import content_record as _content

    from streams.metadata import enrich, text_vector
    from streams.stages.enrich import TEXT_KEY, content_json, meta_of, stored_doc

    rec = enrich(_content("t", "1", title="Elecciones al parlamento",
                          summary="Los votantes eligieron un nuevo parlamento en las elecciones "
                                  "con la participación más alta en décadas.",
                          brand="mind"), datetime(2019, 11, 12, tzinfo=UTC))
    assert rec["language"] == "es"
    terms = rec["text_vector"]
    assert terms and sum(t["weight"] ** 2 for t in terms) == pytest.approx(1.0)
    # Spanish stemming: "elecciones" and "parlamento" share stems with the singular forms
    single = text_vector("Elección del parlamento", "", "", "es")
    assert {t["term"] for t in single} <= {t["term"] for t in terms}
    doc = content_json(rec)
    meta = meta_of(doc)
    assert [k for k, _ in meta.text] == [t["term"] for t in terms]
    assert TEXT_KEY not in stored_doc(doc)
    assert text_vector("", "", "", "und") == []


def test_learned_ranker_serves_live_similarity_and_explains_it() -> None:
    foot = tuple(encode(FOOTBALL, "en").items())
    vote = tuple(encode(ELECTION, "en").items())
    metas = [Meta(f"{i:064x}", "mind", ("news",), ("news",), T0, foot if i % 2 else vote)
             for i in range(6)]
    matrix = CandidateMatrix(metas)
    topo = topology()
    ws = WeightSet(ranker="learned", version=1, weights={
        **dict.fromkeys(topo.ranker_config().weight_sets["learned-mind"].weights, 0.0),
        "similarity": 1.0})
    cfg = topo.ranker_config()
    cfg = cfg.model_copy(update={"weight_sets": {**cfg.weight_sets, "s": ws},
                                 "brands": {"default": "s", "mind": "s"}})
    p = new_profile("u", T0, topo.profiles)
    read = metas[1]
    apply_events(p, [Event("e", "click", read.content_id, T0 + HOUR)], {read.content_id: read},
                 topo.profiles)
    (items,) = rank_users([p], matrix, {}, topo.ranking, RankingConfig(cfg, {}, 0, 1))
    got = {it["content_id"]: it["similarity"] for it in items}
    assert read.content_id not in got  # read items are excluded
    for m in metas:
        if m.content_id in got:
            want = similarity(interest.interest_of(p), [dict(m.text)])[0]
            assert got[m.content_id] == pytest.approx(want)
    assert [it["content_id"] for it in items[:2]] == [metas[3].content_id, metas[5].content_id]
    assert items[0]["similarity"] > 0.9 and items[-1]["similarity"] == 0.0
    assert all(it["score"] == pytest.approx(it["similarity"]) for it in items)


def test_a_version_1_enriched_record_reads_with_an_empty_text_vector() -> None:
    from streams.stages.enrich import TEXT_KEY, content_json, meta_of

    doc = content_json({"content": {"content_id": "c", "brand": "mind", "categories": [],
                                    "published_at": None, "updated_at": None},
                        **dict.fromkeys(("language", "language_confidence", "word_count",
                                         "reading_time_s", "reading_level", "reading_grade",
                                         "sentiment")),
                        "keywords": [], "topics": [], "entities": [],
                        "enriched_at": datetime(2019, 11, 12, tzinfo=UTC)})
    assert doc[TEXT_KEY] == [] and meta_of(doc).text == ()
