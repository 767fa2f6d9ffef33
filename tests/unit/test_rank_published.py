"""rank_users equals the pure reference whether every item, none or some have a publication
time (the recency columns are raised only for published items)."""

from __future__ import annotations

import dataclasses

import pytest
from ranking_support import RANKING, T0, config, world

from feedpipe.model.item import CandidateMatrix
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.rankers import rank_users
from feedpipe.rank.reference import rank


@pytest.mark.parametrize("published", ["all", "none"])
def test_rank_users_agrees_with_the_reference_for_all_or_no_published_items(
    published: str,
) -> None:
    profiles, matrix, stats = world()
    metas = [
        dataclasses.replace(m, published_at=(T0 - (i % 50) * HOUR_MS if published == "all"
                                             else None))
        for i, m in enumerate(matrix.metas)
    ]
    matrix = CandidateMatrix(metas)
    got = rank_users(profiles, matrix, stats, RANKING, config(False))
    assert any(got)
    recency = [it["recency"] for items in got for it in items]
    assert (max(recency) > 0) if published == "all" else (max(recency) == 0)
    for p, items in zip(profiles, got, strict=True):
        brands = sorted(p["brands"]) or [RANKING.default_brand]  # type: ignore[call-overload]
        ref = rank(p, [m for m in matrix.metas if m.brand in brands], stats, RANKING)
        assert [it["content_id"] for it in items] == [s.content_id for s in ref]
        assert [it["score"] for it in items] == pytest.approx([s.score for s in ref])
        assert [it["recency"] for it in items] == pytest.approx([s.recency for s in ref])
