"""Live co-reads, pure parts: the shard merge, the per-reader scores, the fold's counting, the
``coread`` source and feature of ``rank_users`` and the celebrity digest's co-read scores."""

from __future__ import annotations

import numpy as np
import pytest

from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.profile import Event
from feedpipe.model.signals import (
    COREAD_NEIGHBOURS,
    CoReads,
    coread_add,
    coread_replay,
    coread_scores,
    trend_epoch,
)
from feedpipe.rank.candidates import COREAD, CandidateInputs, CandidateSpec, candidate_sources
from feedpipe.rank.fanout import CelebrityCache, digest, digest_coreads, score_celebrities
from feedpipe.rank.rankers import coread_matrix, rank_users
from feedpipe.rank.weights import RankingConfig
from feedpipe.store.coreads import CoReadState, decode_row, merge_rows, user_coreads
from feedpipe.topology import WeightSet, topology
from streams.clickpath.fold import coread_maps, count_coreads

T0 = 1_573_550_000_000
KEEP = topology().profiles.recent_reads


def test_merged_shards_sum_and_keep_the_largest() -> None:
    a = {"y": 2.0, "z": 1.0}
    b = {"y": 1.0, "w": 1.0}
    assert merge_rows([a, None, b]) == {"y": 3.0, "z": 1.0, "w": 1.0}
    rows = [{f"n{i:03d}": 1.0 for i in range(COREAD_NEIGHBOURS)}, {"a": 5.0, "n999": 1.0}]
    got = merge_rows(rows)
    assert len(got) == COREAD_NEIGHBOURS and got["a"] == 5.0
    # equal counts: the smaller ids stay (coread_add evicts the largest)
    assert "n999" not in got and "n049" not in got and "n048" in got


def test_reader_scores_are_coread_scores() -> None:
    table: CoReads = {}
    for prior, item in [(["a", "b"], "c"), (["a"], "c"), (["b"], "d"), (["a"], "e")]:
        coread_add(table, prior, item)
    got = user_coreads(table, ["b", "a"])
    want = coread_scores(table, ["b", "a"], ["c", "d", "e", "z"])
    assert got == pytest.approx(dict(zip(["c", "d", "e"], want[:3].tolist(), strict=True)))
    assert user_coreads(table, ["z"]) == {}


def test_rows_decode_or_read_as_empty() -> None:
    assert decode_row(b'{"y": 2.0, "z": 1}') == {"y": 2.0, "z": 1.0}
    for bad in (b"not json", b"[1, 2]", b'{"y": "x", "z": -1}', None):
        assert decode_row(bad) == {}


def _click(cid: str, at: int) -> Event:
    return Event("e" + cid + str(at), "click", cid, at, "live")


def test_the_fold_counts_each_click_after_the_reads_before_it() -> None:
    e = trend_epoch(T0)
    state = CoReadState(partition=1, epochs=(e - 1, e))
    state.shards[(e, 1)] = {"a": {"b": 1.0}}
    stored = [(T0 - 2, "x"), (T0 - 1, "a")]
    clicks = [Event("h", "click", "h", T0 - 5, "history"), _click("b", T0 + 1),
              _click("c", T0 + 2), _click("d", T0 + 2)]  # offset order
    count_coreads(state, stored, clicks, KEEP)
    want: CoReads = {"a": {"b": 1.0}}
    # as the evaluation: clicks of one time do not count each other; "h" has no read before it
    for p, item in [(["h", "x", "a"], "b"), (["h", "x", "a", "b"], "c"),
                    (["h", "x", "a", "b"], "d")]:
        coread_add(want, p, item)
    assert state.own(e) == want
    assert state.changed == {(e, x) for x in ("h", "x", "a", "b")}
    # the same events split over two batches count the same
    split = CoReadState(partition=1, epochs=(e - 1, e))
    split.shards[(e, 1)] = {"a": {"b": 1.0}}
    count_coreads(split, stored, clicks[:2], KEEP)
    count_coreads(split, [*stored, (T0 + 1, "b"), (T0 - 5, "h")], clicks[2:], KEEP)
    assert split.own(e) == want
    # another partition's shard adds to the merged view the ranking uses
    state.shards[(e, 0)] = {"a": {"c": 2.0}}
    (scores,) = coread_maps([{"recent_reads": [{"content_id": "a", "at": T0}]}], state)
    a_total = 1 + sum(merge_rows([want["a"], {"c": 2.0}]).values())
    assert scores == pytest.approx({"b": 2 / a_total, "c": 3 / a_total, "d": 1 / a_total})


def _batched(stored: list[tuple[int, str]], clicks: list[Event], cuts: list[int],
             keep: int) -> CoReads:
    """The co-reads of ``clicks`` (arrival order) applied in batches cut at ``cuts``, the
    stored reads of each batch kept as the profile keeps them (newest ``keep``)."""
    e = trend_epoch(T0)
    state = CoReadState(partition=1, epochs=(e - 1, e))
    reads = list(stored)
    for lo, hi in zip([0, *cuts], [*cuts, len(clicks)], strict=True):
        count_coreads(state, reads, clicks[lo:hi], keep)
        reads = sorted({*reads, *((ev.at, ev.content_id) for ev in clicks[lo:hi])})[-keep:]
    return state.own(e)


@pytest.mark.parametrize("cuts", [[1], [2], [3], [1, 2], [1, 2, 3, 4]])
def test_clicks_count_the_same_however_they_are_batched(cuts: list[int]) -> None:
    # a reader's second session arrives after the first but happened before it (a replayed
    # log out of time order, a late device): the early-arriving click never counts a read
    # that arrived after it, in one batch as in two (one worker or two)
    stored = [(T0 - 60_000 * i, f"s{i}") for i in range(1, 8)]
    clicks = [_click("late", T0 + 3_600_000), Event("h1", "click", "h1", T0 - 1, "history"),
              _click("a", T0), _click("b", T0), _click("c", T0 + 1)]
    whole = _batched(stored, clicks, [], 6)
    assert whole["h1"] == {"a": 1.0, "b": 1.0, "c": 1.0}  # not "late": h1 arrived after it
    assert {x for x, row in whole.items() if "late" in row} == {"s1", "s2", "s3", "s4", "s5"}
    assert _batched(stored, clicks, cuts, 6) == whole


def _learned_cfg() -> RankingConfig:
    cfg = topology().ranker_config()
    names = cfg.weight_sets["learned-mind"].weights
    ws = WeightSet(ranker="learned", version=1,
                   weights={**dict.fromkeys(names, 0.0), "coread": 1.0})
    cfg = cfg.model_copy(update={"weight_sets": {**cfg.weight_sets, "co": ws},
                                 "brands": {"default": "co", "mind": "co"}})
    return RankingConfig(cfg, {}, 0, 1)


def _profile(reads: list[str]) -> dict[str, object]:
    return {"user_id": "u", "last_seen": T0, "brands": {"mind": 1},
            "recent_reads": [{"content_id": c, "at": T0} for c in reads],
            "category_affinity": {"news": 1.0}, "topic_affinity": {},
            "landmark_ms": T0, "half_life_s": 3600}


def test_coread_is_a_candidate_source_and_a_learned_feature() -> None:
    ids = ["i0", "i1", "i2", "i3"]
    metas = [Meta(c, "mind", (cat,), (cat,), None) for c, cat in
             zip(ids, ["news", "sports", "autos", "music"], strict=True)]
    matrix = CandidateMatrix(metas)
    # only the affinity source (news) and the co-read source propose items
    spec = CandidateSpec(fresh_hours=0.001, top_affinities=1, trending_k=0)
    sources = CandidateInputs(spec, {})
    co = [{"i2": 0.25, "elsewhere": 1.0}]
    (items,) = rank_users([_profile([])], matrix, {}, topology().ranking, _learned_cfg(),
                          sources=sources, coreads=co)
    by_id = {it["content_id"]: it for it in items}
    assert set(by_id) == {"i0", "i2"}  # i1, i3: no source
    assert by_id["i2"]["sources"] == ["coread"] and by_id["i2"]["coread"] == 0.25
    assert items[0]["content_id"] == "i2" and items[0]["score"] == pytest.approx(0.25)
    assert by_id["i0"]["coread"] == 0.0
    (plain,) = rank_users([_profile([])], matrix, {}, topology().ranking, _learned_cfg(),
                          sources=sources)
    assert [it["content_id"] for it in plain] == ["i0"]
    got = coread_matrix(co, matrix.index, len(matrix))
    assert got is not None and got.tolist() == [[0.0, 0.0, 0.25, 0.0]]
    assert coread_matrix([{"elsewhere": 1.0}], matrix.index, len(matrix)) is None


def test_candidate_sources_mark_co_reads() -> None:
    allowed = np.array([[True, True, False]])
    bits = candidate_sources(
        item_cat=np.zeros((3, 1)), item_topic=np.zeros((3, 1)), published_ms=np.full(3, np.nan),
        allowed=allowed, share_cat=np.zeros((1, 1)), share_topic=np.zeros((1, 1)),
        ref_ms=np.array([float(T0)]), trending_rows=[],
        spec=CandidateSpec(fresh_hours=1, top_affinities=1), coread=np.array([[0.0, 0.5, 0.5]]),
    )
    assert bits.tolist() == [[0, COREAD, 0]]  # item 2 not allowed


def test_the_celebrity_merge_scores_the_digest_co_reads() -> None:
    celeb = "ab" * 32
    other = "cd" * 32
    p = {**_profile(["x"]), "version": 1}
    topo = topology()
    dg = digest(p, topo.ranking, topo.fanout, [celeb, other], {celeb: 0.123456, "x2": 0.9})
    assert dg["co"] == {celeb[:12]: 0.1235}
    cache = CelebrityCache()
    cache.set_items(b"1", [Meta(celeb, "mind", ("news",), ("news",), None),
                           Meta(other, "mind", ("news",), ("news",), None)])
    cache.set_stats(b"1", {})
    assert digest_coreads(dg, cache.by_prefix) == {celeb: 0.1235}
    assert digest_coreads({"co": ["bad"]}, cache.by_prefix) == {}
    items = score_celebrities("u", dg, cache, topo.ranking, _learned_cfg())
    assert [it["content_id"] for it in items] == [celeb, other]
    assert items[0]["coread"] == pytest.approx(0.1235) and items[1]["coread"] == 0.0


def test_a_replayed_history_counts_as_the_evaluation_replays_it() -> None:
    e = trend_epoch(T0)
    state = CoReadState(partition=1, epochs=(e - 1, e))
    history = ["h1", "h2", "h3", "h4", "h5", "h6", "h7"]
    clicks = [Event("ev" + h, "click", h, T0 + 60_000 * i, "history")
              for i, h in enumerate(history)]
    count_coreads(state, [], clicks, KEEP)
    want: CoReads = {}
    assert coread_replay(want, history) == len(history)
    assert want  # the history gave co-reads
    assert state.own(e) == want


def _run(batches: list[list[Event]], keep: int = KEEP) -> CoReads:
    """Count ``batches`` (one user's clicks, offset order) as the fold does: each batch after
    the reads its predecessors left in the profile (the ``keep`` newest)."""
    e = trend_epoch(T0)
    state = CoReadState(partition=1, epochs=(e - 1, e))
    reads: list[tuple[int, str]] = []
    for batch in batches:
        count_coreads(state, reads, batch, keep)
        reads = sorted({*reads, *((ev.at, ev.content_id) for ev in batch)})[-keep:]
    return state.own(e)


def test_counts_do_not_depend_on_where_batches_end() -> None:
    """A replayed history, live clicks, a row of an earlier time arriving later (MIND rows are
    not in time order) and a click older than the profile's read cap: every split of the same
    offset-ordered clicks counts the same co-reads."""
    history = [Event(f"h{i}", "click", f"h{i}", T0 + 60_000 * i, "history") for i in range(7)]
    later = [_click("l1", T0 + 3_600_000), _click("l2", T0 + 3_600_000)]
    earlier_row = [_click("o1", T0 + 1_800_000), _click("o2", T0 + 1_800_000)]
    oldest = [_click("z", T0 - 60_000)]  # older than every read: no prior, counted once
    newest = [_click("l3", T0 + 7_200_000)]
    clicks = history + later + earlier_row + newest + oldest
    for keep in (KEEP, 4):  # 4: fewer reads kept than the window
        whole = _run([clicks], keep)
        assert whole
        for cut in range(1, len(clicks)):
            assert _run([clicks[:cut], clicks[cut:]], keep) == whole, (keep, cut)
        assert _run([[ev] for ev in clicks], keep) == whole
    # the earlier row's clicks are not co-reads of the later ones already counted, in one batch
    got = _run([clicks])
    assert got["l1"] == {"l3": 1.0} and got["o1"] == {"l3": 1.0}
    assert {"l1", "l2", "o1", "o2"} <= got["h6"].keys()


def test_a_bot_flagged_mid_batch_counts_the_clicks_before_the_flag() -> None:
    from feedpipe.model.admission import admit_events
    from feedpipe.model.profile import new_profile

    spec = topology().profiles
    n = spec.bot_clicks_per_minute + 2
    events = [_click(f"b{i:03d}", T0 + i) for i in range(n)]  # one event-time minute
    p = new_profile("u", T0, spec)
    adm = admit_events(p, events, spec)
    assert p["bot"] and adm.flagged_by is events[spec.bot_clicks_per_minute]
