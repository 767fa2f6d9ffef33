"""Fan-out on write: interests, the audience index writes, the celebrity switch, the digest and
the read-time merge (feedpipe/rank/fanout.py). Pure functions: no Redis here."""

from __future__ import annotations

import orjson
import pytest

from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.profile import affinity_at
from feedpipe.rank.fanout import (
    REST,
    CelebrityCache,
    audience_writes,
    digest,
    interests,
    is_celebrity,
    merge,
    parse_audience,
    pseudo_profile,
    score_celebrities,
)
from feedpipe.rank.rankers import rank_users
from feedpipe.rank.weights import WeightsRegistry
from feedpipe.store.keys import keys
from feedpipe.topology import FanoutSpec, topology

SPEC = FanoutSpec(celebrity_audience=3, interest_categories=2, interest_topics=2)
HEX = "0123456789abcdef"


def cid(n: int) -> str:
    return (HEX[n % 16] * 4 + f"{n:060x}")[:64]


def profile(user: str = "U1", **over: object) -> dict[str, object]:
    p: dict[str, object] = {
        "user_id": user,
        "version": 3,
        "category_affinity": {"news": 5.0, "sports": 3.0, "travel": 1.0},
        "topic_affinity": {"newsus": 4.0, "nfl": 2.0, "asia": 1.0},
        "brands": {"mind": 4},
        "recent_reads": [],
        "last_seen": 1_573_550_000_000,
    }
    p.update(over)
    return p


def test_interests_are_the_top_categories_and_topics() -> None:
    assert interests(profile(), SPEC) == ["c:news", "c:sports", "t:newsus", "t:nfl"]
    assert interests(profile(category_affinity={}, topic_affinity={}), SPEC) == []


def test_audience_writes_register_once_then_only_on_change_or_refresh() -> None:
    k = keys()
    ranking = topology().ranking
    p = profile()
    first = audience_writes({"U1": p}, ranking, SPEC, k, 1_000)
    assert first.registered == 1 and not first.remove
    part = k.partition_of("U1")  # the user's partition's sets, the slot of its batch
    assert set(first.add) == {k.audience("mind", f, part) for f in interests(p, SPEC)}
    assert p["aud"] == {"b": ["mind"], "f": interests(p, SPEC), "at": 1_000}
    # unchanged and fresh: nothing written
    again = audience_writes({"U1": p}, ranking, SPEC, k, 2_000)
    assert again.registered == 0 and not again.add and not again.remove
    # stale registration: re-stamped with the new time
    day = int(SPEC.audience_refresh_hours * 3_600_000)
    stale = audience_writes({"U1": p}, ranking, SPEC, k, 1_000 + day)
    assert stale.registered == 1 and not stale.remove
    assert all(m == {"U1": float(1_000 + day)} for m in stale.add.values())
    # interests moved: the facet left is removed, the new one added
    p["category_affinity"] = {"news": 5.0, "travel": 4.0, "sports": 1.0}
    moved = audience_writes({"U1": p}, ranking, SPEC, k, 3_000 + day)
    assert moved.remove == {k.audience("mind", "c:sports", part): ["U1"]}
    assert k.audience("mind", "c:travel", part) in moved.add


def test_audience_writes_skip_unchanged_users_only_while_their_registration_holds() -> None:
    k = keys()
    ranking = topology().ranking
    day = int(SPEC.audience_refresh_hours * 3_600_000)
    p = profile()
    audience_writes({"U1": p}, ranking, SPEC, k, 1_000)
    # an impression-only user with a fresh registration: not recomputed, nothing written
    kept = audience_writes({"U1": p}, ranking, SPEC, k, 2_000, unchanged={"U1"})
    assert kept.registered == 0 and not kept.add and p["aud"]["at"] == 1_000
    # a stale registration is re-stamped as for any user
    stale = audience_writes({"U1": p}, ranking, SPEC, k, 1_000 + day, unchanged={"U1"})
    assert stale.registered == 1 and p["aud"]["at"] == 1_000 + day
    # an unregistered user with affinities (a profile from before the index) is registered
    legacy = profile("U2")
    got = audience_writes({"U2": legacy}, ranking, SPEC, k, 5_000, unchanged={"U2"})
    assert got.registered == 1 and legacy["aud"]["f"] == interests(legacy, SPEC)
    # no affinities and no registration: nothing, as without the hint
    blank = profile("U3", category_affinity={}, topic_affinity={}, brands={})
    for hint in (set(), {"U3"}):
        none = audience_writes({"U3": blank}, ranking, SPEC, k, 5_000, unchanged=hint)
        assert none.registered == 0 and not none.add and "aud" not in blank


def test_the_celebrity_switch_is_by_audience_size() -> None:
    assert not is_celebrity(3, SPEC)
    assert is_celebrity(4, SPEC)
    assert parse_audience([2, [b"U2", b"U1"]]) == (2, ["U1", "U2"])
    assert parse_audience([40_000]) == (40_000, None)
    assert topology().fanout.celebrity_audience == 10_000  # documented default


def test_digest_is_small_and_restores_the_shares() -> None:
    celeb = cid(7)
    p = profile(recent_reads=[{"content_id": celeb, "at": 1}, {"content_id": cid(8), "at": 0}])
    spec = topology().fanout
    dg = digest(p, topology().ranking, spec, {celeb})
    assert len(orjson.dumps(dg)) < 200
    assert dg["cr"] == [celeb[:12]]
    pseudo = pseudo_profile("U1", dg, {celeb[:12]: celeb})
    shares = affinity_at(pseudo, 0)
    full = affinity_at(p, 0)
    for c in dg["c"]:
        assert shares["category"][c] == pytest.approx(full["category"][c], abs=1e-4)
    assert REST not in dg["c"]
    assert pseudo["recent_reads"] == [{"content_id": celeb, "at": 0}]
    with pytest.raises(ValueError):
        pseudo_profile("U1", {"b": "mind"})
    with pytest.raises(ValueError):
        pseudo_profile("U1", ["not", "a", "digest"])  # type: ignore[arg-type]


def _cache(metas: list[Meta], stats: dict[str, tuple[int, int]]) -> CelebrityCache:
    cache = CelebrityCache()
    gen = cache.gen
    cache.set_items(b"1", metas)
    cache.set_stats(b"1", stats)
    assert cache.gen > gen
    return cache


def test_celebrities_are_scored_by_rank_users_like_a_stored_feed() -> None:
    """With interests covering all of a profile's labels the digest is exact, so the merged
    scores equal rank_users over the same items for the full profile."""
    p = profile(
        category_affinity={"news": 5.0, "sports": 3.0}, topic_affinity={"newsus": 4.0, "nfl": 2.0}
    )
    metas = [
        Meta(cid(1), "mind", ("news",), ("newsus",), 1_573_540_000_000),
        Meta(cid(2), "mind", ("sports",), ("nfl",), None),
        Meta(cid(3), "mind", ("travel",), ("asia",), 1_573_000_000_000),
        Meta(cid(4), "other", ("news",), ("newsus",), None),  # brand the user does not read
    ]
    stats = {cid(1): (100, 9), cid(2): (10, 0)}
    ranking = topology().ranking
    cfg = WeightsRegistry().current()
    cache = _cache(metas, stats)
    dg = digest(p, ranking, topology().fanout, {m.content_id for m in metas})
    got = score_celebrities("U1", dg, cache, ranking, cfg)
    (want,) = rank_users([p], CandidateMatrix(metas), stats, cache.ranking_for(ranking), cfg)
    assert [it["content_id"] for it in got] == [it["content_id"] for it in want]
    assert cid(4) not in {it["content_id"] for it in got}
    for g, w in zip(got, want, strict=True):
        assert g["score"] == pytest.approx(w["score"], abs=1e-4)
        assert g["source"] == "celebrity" and g["weight_set"] == w["weight_set"]
    # an item the user read is not offered again
    p["recent_reads"] = [{"content_id": cid(1), "at": 1}]
    dg = digest(p, ranking, topology().fanout, {m.content_id for m in metas})
    again = score_celebrities("U1", dg, cache, ranking, cfg)
    assert cid(1) not in {it["content_id"] for it in again}


def test_merge_orders_by_score_caps_categories_and_keeps_the_feed_size() -> None:
    stored = [
        {"content_id": cid(i), "rank": i + 1, "score": 0.9 - 0.1 * i, "brand": "mind"}
        for i in range(5)
    ]
    stored_primary = ["news", "news", "sports", "news", None]
    extra = [
        {"content_id": cid(20), "rank": 1, "score": 0.95, "source": "celebrity"},
        {"content_id": cid(21), "rank": 2, "score": 0.75, "source": "celebrity"},
        {"content_id": cid(1), "rank": 3, "score": 0.99, "source": "celebrity"},  # stored already
    ]
    out = merge(stored, stored_primary, extra, ["travel", "news", "news"], 5, 3)
    ids = [it["content_id"] for it in out]
    assert ids == [cid(20), cid(0), cid(1), cid(21), cid(2)]
    assert [it["rank"] for it in out] == [1, 2, 3, 4, 5]
    assert out[0]["source"] == "celebrity" and "source" not in out[1]
    # cap 2 per category: the third news item gives way to lower-scored other categories
    capped = merge(stored, stored_primary, extra, ["travel", "news", "news"], 5, 2)
    ids = [it["content_id"] for it in capped]
    assert ids == [cid(20), cid(0), cid(1), cid(2), cid(4)]
    assert merge(stored, stored_primary, [], [], 100, 30) == [
        {**e, "rank": i + 1} for i, e in enumerate(stored)
    ]


def test_fanout_events_coalesce_one_record_per_user() -> None:
    """Three items of a batch whose audiences overlap: one record per user, deterministic ids
    over every (item, content version) reaching the user (a redelivery gives the same ids)."""
    from datetime import UTC, datetime

    from feedpipe.rank.fanout import fanout_events

    at = datetime(2026, 11, 24, tzinfo=UTC)
    batch = {cid(2): (["U2", "U1"], "h2"), cid(1): (["U1"], "h1"), cid(3): (["U3", "U2"], "h3")}
    got = fanout_events(batch, at)
    assert [(ev["user_id"], ev["content_id"]) for ev in got] == [
        ("U1", cid(1)), ("U2", cid(2)), ("U3", cid(3))
    ]
    assert all(ev["type"] == "fanout" and ev["occurred_at"] == at for ev in got)
    assert [ev["event_id"] for ev in fanout_events(dict(reversed(batch.items())), at)] == [
        ev["event_id"] for ev in got
    ]
    changed = fanout_events({**batch, cid(1): (["U1"], "h1-edited")}, at)
    assert changed[0]["event_id"] != got[0]["event_id"]  # a new content version: a new record
    assert changed[1:] == got[1:]
    assert fanout_events({}, at) == []


def test_the_merge_scores_content_similarity_with_the_stored_interest_vector() -> None:
    """The read endpoint passes the profile's stored interest vector: the celebrity items get
    the click path's similarity (rank_users over the full profile), not 0."""
    from feedpipe.model import interest
    from feedpipe.model.text import encode
    from feedpipe.rank.weights import RankingConfig
    from feedpipe.topology import WeightSet

    football = encode(["Football club wins the championship final",
                       "The striker scored twice as the football club beat its rivals."], "en")
    election = encode(["Parliament election results announced",
                       "Voters elected a new parliament; turnout was the highest in decades."],
                      "en")
    metas = [Meta(cid(1), "mind", ("news",), ("newsus",), None, tuple(election.items())),
             Meta(cid(2), "mind", ("news",), ("newsus",), None, tuple(football.items()))]
    p = profile(landmark_ms=1_573_550_000_000, half_life_s=86_400.0)
    interest.add_read(p, encode(["The football club won the final"], "en"), 1_573_550_000_000)
    stored = p[interest.FIELD]
    assert isinstance(stored, str)
    topo = topology()
    cfg = topo.ranker_config()
    names = cfg.weight_sets["learned-mind"].weights
    ws = WeightSet(ranker="learned", version=1,
                   weights={**dict.fromkeys(names, 0.0), "similarity": 1.0})
    config = RankingConfig(cfg.model_copy(update={"weight_sets": {**cfg.weight_sets, "sim": ws},
                                                  "brands": {"default": "sim", "mind": "sim"}}),
                           {}, 0, 1)
    cache = _cache(metas, {})
    dg = digest(p, topo.ranking, topo.fanout, {m.content_id for m in metas})
    without = score_celebrities("U1", dg, cache, topo.ranking, config)
    assert [it["similarity"] for it in without] == [0.0, 0.0]
    got = score_celebrities("U1", dg, cache, topo.ranking, config, stored)
    (want,) = rank_users([p], CandidateMatrix(metas), {}, cache.ranking_for(topo.ranking), config)
    assert [it["content_id"] for it in got] == [it["content_id"] for it in want] == [cid(2), cid(1)]
    for g, w in zip(got, want, strict=True):
        assert g["similarity"] == pytest.approx(w["similarity"], abs=1e-9)
    assert got[0]["similarity"] > 0.2 and got[0]["score"] > got[1]["score"]
