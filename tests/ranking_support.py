"""Ranking test helpers shared by the unit tests of feedpipe.rank (a small two-brand world
and the seed ranking configuration)."""

from __future__ import annotations

import random

from feedpipe.model.item import CandidateMatrix
from feedpipe.model.profile import Event, apply_events, new_profile
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.weights import RankingConfig
from feedpipe.topology import topology

T0 = 1_573_300_000_000
RANKING = topology().ranking

World = tuple[list[dict[str, object]], CandidateMatrix, dict[str, tuple[int, int]]]


def world(users: int = 30) -> World:
    from feedpipe.model.item import Meta as _Meta

    rng = random.Random(5)
    cats = ["news", "sports", "finance", "travel", "health"]
    metas = [
        _Meta(
            f"{i:064x}",
            rng.choice(["mind", "frontity"]),
            (rng.choice(cats),),
            (rng.choice(cats), f"sub-{rng.randint(0, 30)}"),
            None if i % 4 == 0 else T0 - rng.randint(0, 72) * HOUR_MS,
        )
        for i in range(400)
    ]
    by_id = {m.content_id: m for m in metas}
    stats = {m.content_id: (rng.randint(0, 300), rng.randint(0, 20)) for m in metas}
    spec = topology().profiles
    profiles: list[dict[str, object]] = []
    for u in range(users):
        p = new_profile(f"u{u}", T0, spec)
        evs = [
            Event(str(j), "click", rng.choice(metas).content_id, T0 + rng.randint(0, 48) * HOUR_MS)
            for j in range(rng.randint(0, 12))
        ]
        apply_events(p, evs, by_id, spec)
        profiles.append(p)
    return profiles, CandidateMatrix(metas), stats


def config(enabled: bool) -> RankingConfig:
    topo = topology()
    cfg = topo.ranker_config()
    cfg = cfg.model_copy(
        update={"brands": {"default": "affinity-seed-default", "mind": "affinity-seed-mind"}}
    )
    exps = {
        name: spec.model_copy(update={"enabled": enabled})
        for name, spec in topo.experiments.items()
    }
    return RankingConfig(cfg, exps, 0, 1)
