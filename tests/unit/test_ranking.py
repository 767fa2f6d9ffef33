"""Pure profile and ranking logic (feedpipe.model.profile): no Kafka, no Redis."""

from __future__ import annotations

import copy
import random

import pytest

from feedpipe.model.item import Meta
from feedpipe.model.profile import Event, apply_events, new_profile
from feedpipe.rank.reference import engagement, rank, recency
from feedpipe.topology import topology

T0 = 1_573_300_000_000  # 2019-11-09, ms
HOUR = 3_600_000


def _catalogue(n: int, seed: int = 7) -> list[Meta]:
    rng = random.Random(seed)
    cats = ["news", "sports", "finance", "travel", "health"]
    return [
        Meta(
            f"{i:064x}",
            rng.choice(["mind", "frontity"]),
            (rng.choice(cats),),
            (rng.choice(cats), f"sub-{rng.randint(0, 30)}"),
            None if i % 4 == 0 else T0 - rng.randint(0, 72) * HOUR,
        )
        for i in range(n)
    ]


def test_profile_is_independent_of_event_order() -> None:
    spec = topology().profiles
    metas = {m.content_id: m for m in _catalogue(50)}
    ids = list(metas)
    rng = random.Random(3)
    events = [
        Event(
            str(i),
            rng.choice(["click", "impression"]),
            rng.choice(ids),
            T0 + rng.randint(-500, 500) * HOUR,
        )
        for i in range(300)
    ]
    a = new_profile("u", T0, spec)
    apply_events(a, events, metas, spec)
    shuffled = events[:]
    rng.shuffle(shuffled)
    b = new_profile("u", T0, spec)
    for chunk in range(0, 300, 37):  # several batches, any order
        apply_events(b, shuffled[chunk : chunk + 37], metas, spec)
    assert a["recent_reads"] == b["recent_reads"]
    assert (a["clicks"], a["impressions"]) == (b["clicks"], b["impressions"])
    for name in ("category_affinity", "topic_affinity"):
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert a[name][k] == pytest.approx(b[name][k], rel=1e-9)


def test_forward_decay_halves_after_one_half_life() -> None:
    spec = topology().profiles
    m = Meta("c" * 64, "mind", ("news",), ("news",), None)
    old, new = (
        Event("1", "click", m.content_id, T0),
        Event("2", "click", m.content_id, T0 + int(spec.half_life_hours * HOUR)),
    )
    p = new_profile("u", T0, spec)
    apply_events(p, [old], {m.content_id: m}, spec)
    first = p["category_affinity"]["news"]
    apply_events(p, [new], {m.content_id: m}, spec)
    assert p["category_affinity"]["news"] == pytest.approx(first * 3)  # 1 + 2 at landmark scale


def test_pending_click_applied_on_resolve() -> None:
    spec = topology().profiles
    m = Meta("d" * 64, "mind", ("sports",), ("sports", "nfl"), None)
    p = new_profile("u", T0, spec)
    waiting = apply_events(p, [Event("1", "click", m.content_id, T0)], {}, spec)
    assert waiting == [m.content_id]
    assert p["pending"] == [{"content_id": m.content_id, "at": T0}]
    assert p["category_affinity"] == {} and p["clicks"] == 1
    apply_events(p, [Event("r", "resolve", m.content_id, T0 + 10**9)], {m.content_id: m}, spec)
    assert p["pending"] == [] and p["category_affinity"]["sports"] > 0
    assert p["last_seen"] == T0  # resolve is bookkeeping, not activity
    again = copy.deepcopy(p)
    apply_events(p, [Event("r", "resolve", m.content_id, T0)], {m.content_id: m}, spec)
    assert p["category_affinity"] == again["category_affinity"]  # a second resolve is a no-op


def test_components_bounds() -> None:
    spec = topology().ranking
    assert recency(T0, T0, spec) == 1.0
    assert recency(T0 - int(spec.recency_half_life_hours * HOUR), T0, spec) == pytest.approx(0.5)
    assert recency(None, T0, spec) == 0.0
    prior_mean = spec.engagement_prior_clicks / spec.engagement_prior_impressions
    assert engagement(0, 0, spec) == pytest.approx(0.5)
    assert engagement(50, 100, spec) > 0.85 > prior_mean
    assert 0.0 < engagement(0, 10_000, spec) < 0.05


def test_diversity_caps_each_primary_category_then_fills_from_the_capped() -> None:
    spec = topology().profiles
    base = topology().ranking
    # 6 sports items outscore 3 news items (the user only clicked sports)
    metas = [Meta(f"s{i}", "mind", ("sports",), ("sports",), T0 - i * HOUR) for i in range(6)]
    metas += [Meta(f"n{i}", "mind", ("news",), ("news",), T0 - i * HOUR) for i in range(3)]
    p = new_profile("u", T0, spec)
    apply_events(p, [Event("e", "click", "s5", T0, "live")], {m.content_id: m for m in metas}, spec)
    p["recent_reads"] = []  # keep s5 a candidate
    uncapped = rank(p, metas, {}, base.model_copy(update={"feed_size": 5, "max_per_category": 0}))
    assert [s.content_id[0] for s in uncapped] == ["s"] * 5
    capped = rank(p, metas, {}, base.model_copy(update={"feed_size": 5, "max_per_category": 2}))
    assert [s.content_id for s in capped][:2] == [s.content_id for s in uncapped][:2]
    # two per category, then the feed is topped up with the best capped-out item
    assert [s.content_id[0] for s in capped] == ["s", "s", "n", "n", "s"]
    assert capped[4].content_id == uncapped[2].content_id
    assert capped[3].score < uncapped[4].score  # news made it in despite lower scores
