"""The batch click path (streams/clickpath/) on real Redis and real Kafka.

Batches are handed to :meth:`ClickPath.apply_partition` as consumed records would be (topic,
partition, offset, key, value); every output record is really produced to the session broker
and also kept in a list so the test can read what was sent.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis
from clickpath_support import (
    T0,
    Sent,
    apply,
    reader,
    records,
    seed_catalogue,
    stored_feed,
    stored_profile,
    user_in,
    with_path,
)
from pipeline import run_store

from feedpipe.ids import content_id, event_id
from feedpipe.store import stats as stats_store
from feedpipe.store.feeds import MAGIC3
from feedpipe.store.keys import keys
from feedpipe.store.profiles import MAGIC as PROFILE_MAGIC
from feedpipe.topology import topology
from feedpipe.wire.codec import codec

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("feed_format", ["json", "compact"])
def test_redelivery_and_duplicates_do_not_change_the_profile(
    kafka_bootstrap: str,
    topics_applied: Any,
    redis_client: redis.Redis,
    feed_format: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streams.clickpath.write

    topo = topology()
    ranking = topo.ranking.model_copy(update={"feed_format": feed_format})
    monkeypatch.setattr(
        streams.clickpath.write, "topology", lambda: topo.model_copy(update={"ranking": ranking})
    )
    k = keys()
    sports, news = seed_catalogue(redis_client, ["sports", "news"])
    user = f"U{uuid.uuid4().hex[:8]}"
    values = [
        reader(user, "impression", sports, T0),
        reader(user, "click", sports, T0, dwell_ms=30_000),
        reader(user, "impression", news, T0 + timedelta(minutes=1)),
        b"not avro",
    ]

    async def body(path: Any, sent: Sent) -> None:
        first = await apply(path, records(user, values, 0))
        assert (first.applied, first.dead_letters) == (3, 1)
        before = stored_profile(redis_client, user)
        again = await apply(path, records(user, values, 0))  # same offsets: a redelivery
        assert again.skipped_offsets == 3 and again.applied == 0
        dup = await apply(path, records(user, values[:3], 10))  # same ids at new offsets
        assert dup.duplicates == 3 and dup.applied == 0
        after = stored_profile(redis_client, user)
        prev = before or {}
        for field in ("impressions", "clicks", "category_affinity", "recent_reads", "sessions"):
            assert after[field] == prev[field], field
        assert (after["impressions"], after["clicks"]) == (2, 1)
        assert after["dwell_ms_total"] == 30_000 and after["sessions"] == 1

    sent = asyncio.run(with_path(kafka_bootstrap, body))
    assert run_store(stats_store.read_stats, [sports]) == {sports: (1, 1)}
    raw_feed = redis_client.get(k.feed(user)) or b"null"
    assert raw_feed.startswith(MAGIC3) == (feed_format == "compact")  # interned item ids
    raw_profile = redis_client.get(k.profile(user)) or b""
    assert raw_profile.startswith(PROFILE_MAGIC)  # profiles.profile_format: compact
    feed = stored_feed(redis_client, user)
    assert [it["content_id"] for it in feed["items"]] == [news]  # read items are excluded
    dlq = [codec("DeadLetter").decode(v) for t, _, v in sent if t == "reader.events.dlq" and v]
    assert [d["error_type"] for d in dlq] == ["undecodable"]
    assert {t for t, _, _ in sent} >= {"profiles.updated", "feeds.updated"}
    ttl = redis_client.ttl(k.profile(user))
    assert 0 < ttl <= topology().profiles.ttl_days * 86_400
    assert 0 < redis_client.ttl(k.feed(user)) <= topology().profiles.ttl_days * 86_400


def test_late_events_go_to_the_dlq_and_sessions_split_on_inactivity(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    (item,) = seed_catalogue(redis_client, ["sports"])
    user = f"U{uuid.uuid4().hex[:8]}"
    lateness = timedelta(hours=topology().profiles.allowed_lateness_hours)
    values = [
        reader(user, "click", item, T0),
        reader(user, "impression", item, T0 + timedelta(minutes=20)),
        reader(user, "impression", item, T0 + timedelta(minutes=90)),  # > 30 min gap: session 2
        reader(user, "impression", item, T0 - lateness - timedelta(hours=1)),  # too late
    ]

    async def body(path: Any, sent: Sent) -> None:
        res = await apply(path, records(user, values, 0))
        assert (res.applied, res.dead_letters) == (3, 1)

    sent = asyncio.run(with_path(kafka_bootstrap, body))
    p = stored_profile(redis_client, user)
    assert p["impressions"] == 2 and p["sessions"] == 2 and p["session_clicks_total"] == 1
    dlq = [codec("DeadLetter").decode(v) for t, _, v in sent if t == "reader.events.dlq" and v]
    assert [d["error_type"] for d in dlq] == ["late"] and dlq[0]["offset"] == 3


def test_bots_are_flagged_and_left_out_of_stats_and_trending(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    (item,) = seed_catalogue(redis_client, ["sports"])
    bot, human = user_in(0), user_in(1)
    limit = topology().profiles.bot_clicks_per_minute
    bot_values = [
        reader(bot, "click", item, T0 + timedelta(seconds=i % 50), eid=f"bot-{i}")
        for i in range(limit + 5)
    ]

    async def body(path: Any, sent: Sent) -> None:
        await apply(path, records(bot, bot_values, 0))
        await apply(path, records(human, [reader(human, "click", item, T0)], 0, partition=1))

    asyncio.run(with_path(kafka_bootstrap, body))
    assert stored_profile(redis_client, bot)["bot"] is True
    assert "bot" not in stored_profile(redis_client, human)
    assert run_store(stats_store.read_stats, [item])[item][1] == 1  # the human's click only
    trend_epoch, pairs = run_store(stats_store.trending_scores, "mind")
    epoch = -1 if trend_epoch is None else trend_epoch
    score = dict(pairs).get(item, 0.0)
    hours = topology().ranking.trending_epoch_hours
    w = 2.0 ** (
        (T0.timestamp() * 1000 - epoch * hours * 3_600_000)
        / (topology().ranking.trending_half_life_hours * 3_600_000)
    )
    assert score == pytest.approx(w)  # one click's weight, not limit + 6


def test_ab_counters_and_arm_feeds_in_the_batch_transaction(
    kafka_bootstrap: str,
    topics_applied: Any,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streams.clickpath.write
    from feedpipe.rank.experiments import assign_arm
    from feedpipe.rank.weights import RankingConfig

    topo = topology()
    exps = {n: s.model_copy(update={"enabled": True}) for n, s in topo.experiments.items()}
    cfg = RankingConfig(topo.ranker_config(), exps, 0, 1)

    class Fixed:
        def current(self) -> RankingConfig:
            return cfg

    monkeypatch.setattr(streams.clickpath.write, "REGISTRY", Fixed())
    spec = exps["mind-rankers"]
    k = keys()
    redis_client.delete(*[k.ab("mind-rankers", p) for p in k.partitions()])
    sports, news, travel = seed_catalogue(redis_client, ["sports", "news", "travel"])
    users: dict[str, str] = {}  # arm -> user
    while len(users) < len(spec.arms):  # the i-th arm's user in partition i (sorted arms)
        u = f"U{uuid.uuid4().hex[:8]}"
        arm = assign_arm("mind-rankers", spec, u)
        if keys().partition_of(u) == sorted(spec.arms).index(arm):
            users.setdefault(arm, u)
    batches = {
        arm: records(
            u,
            [
                reader(u, "click", travel, T0 - timedelta(hours=1), origin="history"),
                reader(u, "impression", sports, T0),
                reader(u, "impression", news, T0),
                reader(u, "click", sports, T0 + timedelta(seconds=5)),
            ],
            0,
            partition=i,
        )
        for i, (arm, u) in enumerate(sorted(users.items()))
    }

    async def body(path: Any, sent: Sent) -> None:
        for recs in batches.values():
            await apply(path, recs)
            again = await apply(path, recs)  # a redelivery counts nothing twice
            assert again.applied == 0

    asyncio.run(with_path(kafka_bootstrap, body))
    assert "mind-rankers" in run_store(stats_store.experiments)
    counts = run_store(stats_store.ab_counts, "mind-rankers")
    want = {}
    for arm in spec.arms:
        want[f"{arm}:impressions"] = 2
        want[f"{arm}:clicks"] = 1  # the history click is not live: not counted
    assert counts == want
    for arm, u in users.items():
        feed = stored_feed(redis_client, u)
        ws_name = spec.arms[arm].weights
        assert feed["items"], arm
        for it in feed["items"]:
            assert (it["arm"], it["experiment"], it["weight_set"]) == (arm, "mind-rankers", ws_name)
            assert it["ranker"] == cfg.rankers.weight_sets[ws_name].ranker
            assert it["weight_version"] == cfg.rankers.weight_sets[ws_name].version


def test_clicks_on_unknown_items_wait_in_pending_sets(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    from streams.clickpath.records import Record

    k = keys()
    (known,) = seed_catalogue(redis_client, ["sports"])
    ghosts = [content_id("clickpath-test", f"ghost-{uuid.uuid4().hex[:6]}") for _ in range(2)]
    # two users of partition 3 (a Redis Cluster run refuses records in another partition)
    u1, u2 = user_in(3), user_in(3)
    clicks = [reader(u1, "click", c, T0) for c in (*ghosts, known)]
    recs = [
        *records(u1, clicks, 0, partition=3),
        Record("reader.events", 3, 3, u2.encode(), reader(u2, "click", ghosts[0], T0)),
    ]

    async def body(path: Any, sent: Sent) -> None:
        res = await apply(path, recs)
        assert res.pending_items == sorted(ghosts)

    asyncio.run(with_path(kafka_bootstrap, body))

    def waiting(cid: str) -> set[bytes]:
        shards = (redis_client.smembers(k.pending_users(cid, p)) for p in k.partitions())
        return set().union(*shards)

    assert waiting(ghosts[0]) == {u1.encode(), u2.encode()}
    assert waiting(ghosts[1]) == {u1.encode()}
    assert redis_client.sismember(k.pending_users(ghosts[0], k.partition_of(u2)), u2)
    p = stored_profile(redis_client, u1)
    assert sorted(e["content_id"] for e in p["pending"]) == sorted(ghosts)


def test_clicks_whose_item_never_arrives_expire_to_the_dlq(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    k = keys()
    spec = topology().profiles
    (known,) = seed_catalogue(redis_client, ["sports"])
    ghost, kept = (content_id("clickpath-test", f"ghost-{uuid.uuid4().hex[:6]}") for _ in "ab")
    user = f"U{uuid.uuid4().hex[:8]}"
    ttl = timedelta(hours=spec.pending_ttl_hours)
    first = [reader(user, "click", ghost, T0)]
    later = [
        reader(user, "click", kept, T0 + ttl),  # waits: exactly at the bound
        reader(user, "impression", known, T0 + ttl + timedelta(minutes=1)),
    ]
    part = k.partition_of(user)

    async def body(path: Any, sent: Sent) -> None:
        await apply(path, records(user, first, 0, partition=part))
        ttl_s = redis_client.ttl(k.pending_users(ghost, part))
        assert 0 < ttl_s <= spec.pending_ttl_hours * 3600
        res = await apply(path, records(user, later, 1, partition=part))
        assert res.dead_letters == 1

    sent = asyncio.run(with_path(kafka_bootstrap, body))
    p = stored_profile(redis_client, user)
    assert [e["content_id"] for e in p["pending"]] == [kept]
    assert not redis_client.exists(k.pending_users(ghost, part))  # the user left the set
    assert redis_client.sismember(k.pending_users(kept, part), user)
    dlq = [codec("DeadLetter").decode(v) for t, _, v in sent if t == "reader.events.dlq" and v]
    assert [d["error_type"] for d in dlq] == ["pending_expired"]
    assert (dlq[0]["offset"], dlq[0]["key"]) == (2, user.encode())
    click = orjson.loads(dlq[0]["value"])
    assert click == {"user_id": user, "content_id": ghost, "at": int(T0.timestamp() * 1000)}


def test_feeds_updated_only_when_the_ranked_list_moves(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    sports, news = seed_catalogue(redis_client, ["sports", "news"])
    k = keys()
    user = f"U{uuid.uuid4().hex[:8]}"
    first = [reader(user, "click", sports, T0)]
    second = [reader(user, "impression", news, T0 + timedelta(minutes=1))]

    async def body(path: Any, sent: Sent) -> None:
        await apply(path, records(user, first, 0))
        assert [t for t, _, _ in sent] == ["profiles.updated", "feeds.updated"]
        fp = stored_profile(redis_client, user)["feed_fp"]
        sent.clear()
        redis_client.expire(k.feed(user), 100)  # the renewal below must lift it
        await apply(path, records(user, second, 1))  # impressions only: profile, no re-rank
        assert [t for t, _, _ in sent] == ["profiles.updated"]
        p = stored_profile(redis_client, user)
        assert (p["feed_fp"], p["impressions"]) == (fp, 1)
        feed = stored_feed(redis_client, user)
        assert feed["profile_version"] == p["version"] - 1  # the feed of the click is kept
        assert [it["content_id"] for it in feed["items"]] == [news]
        # and lives as long as the profile: its TTL renewed with the profile's write
        assert 100 < redis_client.ttl(k.feed(user)) <= topology().profiles.ttl_days * 86_400

    asyncio.run(with_path(kafka_bootstrap, body))


def test_dlq_records_and_tombstones_are_acknowledged_before_the_watermark_moves(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    """After the EXEC that moves the partition's offset watermark, a redelivery skips those
    offsets: a DLQ record or an erase tombstone sent after it would be lost by a crash in
    between. Each is sent (and acknowledged) while the watermark still has its old value."""
    (item,) = seed_catalogue(redis_client, ["sports"])
    user, gone = user_in(3), user_in(3)
    k = keys()
    wm_key = k.watermark("profiles", "reader.events", 3)
    redis_client.set(wm_key, 99)
    lateness = timedelta(hours=topology().profiles.allowed_lateness_hours)
    values = [
        reader(user, "click", item, T0),
        reader(user, "impression", item, T0 - lateness - timedelta(hours=1)),  # late
        b"\x00\x00\x00\x00\x01 truncated",  # undecodable
    ]
    erase = codec("ReaderEvent").encode(
        {"event_id": event_id("erase", gone), "type": "erase", "user_id": gone,
         "content_id": "", "occurred_at": T0, "origin": "live"}
    )
    seen: list[tuple[str, bytes | None, bytes | None]] = []  # (topic, value, watermark then)

    async def body(path: Any, sent: Sent) -> None:
        inner = path.send

        async def watching(topic: str, key: bytes, value: bytes | None) -> Any:
            seen.append((topic, value, redis_client.get(wm_key)))
            return await inner(topic, key, value)

        path.send = watching
        recs = records(user, values, 100, partition=3)
        recs.append(records(gone, [reader(gone, "click", item, T0)], 103, partition=3)[0])
        recs.append(records(gone, [erase], 104, partition=3)[0])
        res = await apply(path, recs)
        assert res.dead_letters == 2 and res.erased == 1

    asyncio.run(with_path(kafka_bootstrap, body))
    early = [(t, v, wm) for t, v, wm in seen if t == "reader.events.dlq" or v is None]
    assert sorted(t for t, _, _ in early) == [
        "feeds.updated", "profiles.updated", "reader.events.dlq", "reader.events.dlq"
    ]
    assert all(wm == b"99" for _, _, wm in early)  # sent before the EXEC moved it
    assert redis_client.get(wm_key) == b"104"
    later = [wm for t, v, wm in seen if t == "profiles.updated" and v is not None]
    assert later and all(wm == b"104" for wm in later)  # outputs follow the transaction


def test_mixed_redelivery_republishes_users_whose_records_were_all_applied(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    """A crash after the EXEC but before the outputs were sent, then a redelivery batch that
    mixes those offsets with new ones: the users of the already-applied offsets get their stored
    profile and feed sent again (found by the fault suite's worker-kill scenario: the compacted
    profiles.updated lagged behind Redis for those users)."""
    (item,) = seed_catalogue(redis_client, ["sports"])
    early, late_user = user_in(2), user_in(2)
    first = records(early, [reader(early, "click", item, T0)], 0, partition=2)
    second = records(late_user, [reader(late_user, "click", item, T0)], 1, partition=2)

    async def crashed(path: Any, sent: Sent) -> None:
        await apply(path, first)  # applied in Redis; its outputs "lost" (publish=False)

    async def redelivered(path: Any, sent: Sent) -> None:
        res = await apply(path, first + second)
        assert res.skipped_offsets == 1 and res.users == 1

    asyncio.run(with_path(kafka_bootstrap, crashed, publish=False))
    sent = asyncio.run(with_path(kafka_bootstrap, redelivered))
    profiles = {k_.decode() for t, k_, v in sent if t == "profiles.updated" and v}
    assert profiles == {early, late_user}


def test_impressions_alone_rank_no_feed_until_a_click(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    sports, news = seed_catalogue(redis_client, ["sports", "news"])
    k = keys()
    user = f"U{uuid.uuid4().hex[:8]}"
    seen = [reader(user, "impression", sports, T0), reader(user, "impression", news, T0)]
    click = [reader(user, "click", sports, T0 + timedelta(minutes=2))]

    async def body(path: Any, sent: Sent) -> None:
        await apply(path, records(user, seen, 0))
        assert [t for t, _, _ in sent] == ["profiles.updated"]
        assert stored_profile(redis_client, user)["impressions"] == 2
        assert not redis_client.exists(k.feed(user))  # the read endpoint falls back
        sent.clear()
        await apply(path, records(user, click, 2))  # the first click ranks the feed
        assert [t for t, _, _ in sent] == ["profiles.updated", "feeds.updated"]
        feed = stored_feed(redis_client, user)
        assert feed["profile_version"] == stored_profile(redis_client, user)["version"]
        assert [it["content_id"] for it in feed["items"]] == [news]

    asyncio.run(with_path(kafka_bootstrap, body))
