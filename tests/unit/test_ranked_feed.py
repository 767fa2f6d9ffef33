"""The columnar ranked feed (feedpipe.wire.ranked): the Redis value, the UserFeed record and
the fingerprint built from its columns equal those built from its item dicts, on feeds of
one and several brands, rankers and experiment arms, with and without candidate sources,
hex and non-hex content ids."""

from __future__ import annotations

import random

import pytest
from ranking_support import RANKING, T0, config, world

from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.rank.candidates import CandidateInputs, CandidateSpec
from feedpipe.rank.rankers import rank_feeds
from feedpipe.rank.weights import RankingConfig
from feedpipe.store.feeds import MAGIC, MAGIC3, decode_feed, encode_feed
from feedpipe.store.interning import ItemTable
from feedpipe.topology import WeightSet, topology
from feedpipe.wire.codec import codec
from feedpipe.wire.ranked import RankedFeed, feed_ids
from feedpipe.wire.user_feed import feed_items, user_feed_record
from streams.clickpath.catalogue import feed_fingerprint

HOUR = 3_600_000


def _configs() -> list[RankingConfig]:
    plain, arms = config(False), config(True)
    feats = topology().ranker_config().weight_sets["learned-mind"].weights
    learned = arms.rankers.model_copy(update={
        "weight_sets": {**arms.rankers.weight_sets,
                        "learned-t": WeightSet(ranker="learned", version=2, weights=dict(feats))},
        "brands": {"default": "affinity-seed-default", "mind": "learned-t"}})
    return [plain, arms, RankingConfig(learned, plain.experiments, 0, 1)]


def _table(feeds: list[RankedFeed]) -> ItemTable:
    t = ItemTable()
    t.gen = 5
    ids = sorted({c for f in feeds for c in f.ids})
    t.learn([10 + i for i in range(len(ids))], ids)
    return t


def _fixed(item: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in item.items() if type(v) is not float}


def _floats(item: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in item.items() if type(v) is float}


def _doc(feed: object, user: str) -> dict[str, object]:
    return {"user_id": user, "profile_version": 3, "stats_version": 2, "catalogue_version": 1,
            "generated_at": T0, "ranker": "affinity", "digest": {"c": {}}, "items": feed}


@pytest.mark.parametrize("hex_ids", [True, False])
@pytest.mark.parametrize("with_sources", [True, False])
@pytest.mark.parametrize("cfg_no", [0, 1, 2])
def test_columns_encode_as_the_item_dicts(hex_ids: bool, with_sources: bool,
                                          cfg_no: int) -> None:
    profiles, matrix, stats = world(40)
    if not hex_ids:
        metas = [Meta(f"item-{i}", m.brand, m.categories, m.topics, m.published_at)
                 for i, m in enumerate(matrix.metas)]
        stats = {f"item-{i}": stats[m.content_id] for i, m in enumerate(matrix.metas)}
        matrix = CandidateMatrix(metas)
    sources = None
    if with_sources:
        added = {m.content_id: float(T0 + (i % 5) * 24 * HOUR)
                 for i, m in enumerate(matrix.metas)}
        matrix = CandidateMatrix(matrix.metas, added)
        sources = CandidateInputs(CandidateSpec(fresh_hours=12, trending_k=8, top_affinities=2),
                                  {"mind": [m.content_id for m in matrix.metas[::29]]})
    cfg = _configs()[cfg_no]
    feeds = rank_feeds(profiles, matrix, stats, RANKING, cfg, chunk=16, sources=sources)
    assert any(len(f) for f in feeds)
    table = _table(feeds)
    user_feed = codec("UserFeed")
    multi = 0
    for j, feed in enumerate(feeds):
        dicts = [dict(it) for it in feed]
        assert feed_ids(feed) == [it["content_id"] for it in dicts]
        cols, plain = _doc(feed, f"u{j}"), _doc(dicts, f"u{j}")
        for fmt, t in (("compact", table), ("compact", None), ("json", table)):
            assert encode_feed(cols, fmt, t) == encode_feed(plain, fmt, t), (j, fmt)
        if len(feed):
            raw = encode_feed(cols, "compact", table)
            # servings of different rankers: the generic (hex or length-prefixed id) form
            one_ranker = len({s.names for s in feed.servings}) == 1
            assert raw.startswith(MAGIC3 if one_ranker else MAGIC)
            got = decode_feed(raw, table)["items"]
            assert [_fixed(it) for it in got] == [_fixed(it) for it in dicts]
            for a, b in zip(got, dicts, strict=True):
                assert _floats(a) == pytest.approx(_floats(b), abs=1e-4)
            if hex_ids and one_ranker:
                assert encode_feed(cols, "compact", None).startswith(MAGIC)
        assert user_feed_record(cols) == user_feed_record(plain), j
        back = feed_items(user_feed.decode_plain(user_feed.encode(user_feed_record(cols))))
        assert len(back) == len(dicts)
        assert feed_fingerprint(feed) == feed_fingerprint(dicts)
        multi += len(feed.servings) > 1
    if cfg_no > 0:  # the experiment arms and the learned brand: feeds of two servings
        assert multi > 0


def test_fingerprint_moves_with_order_and_serving() -> None:
    profiles, matrix, stats = world(12)
    feeds = rank_feeds(profiles, matrix, stats, RANKING, config(False))
    feed = next(f for f in feeds if len(f) > 2)
    dicts = [dict(it) for it in feed]
    swapped = [dicts[1], dicts[0], *dicts[2:]]
    assert feed_fingerprint(swapped) != feed_fingerprint(feed)
    other = [{**it, "weight_version": 9} for it in dicts]
    assert feed_fingerprint(other) != feed_fingerprint(feed)


def test_items_are_built_once_and_index_like_a_list() -> None:
    rng = random.Random(3)
    profiles, matrix, stats = world(8)
    feed = next(f for f in rank_feeds(profiles, matrix, stats, RANKING, config(False))
                if len(f) > 3)
    assert feed.dicts() is feed.dicts()
    k = rng.randrange(len(feed))
    assert feed[k]["rank"] == k + 1 and feed[-1] == feed.dicts()[-1]
    assert feed[:2] == feed.dicts()[:2]
