"""The pure-Python reference ranker (feedpipe.rank.reference): component bounds, diversity."""

from __future__ import annotations

import pytest

from feedpipe.model.item import Meta
from feedpipe.model.profile import Event, apply_events, new_profile
from feedpipe.model.units import HOUR_MS as HOUR
from feedpipe.rank.reference import engagement, rank, recency
from feedpipe.topology import topology

T0 = 1_573_300_000_000  # 2019-11-09, ms


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
