"""The Redis Cluster key layout (feedpipe/store/keys.py, docs/redis-keys.md): the user's
partition is Kafka's, every key of a partition's transaction carries its tag, the shards merge,
and on a cluster a misrouted reader event is a DLQ record."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from feedpipe import settings as settings_module
from feedpipe.store.audience import _merge
from feedpipe.store.keys import key_partition, keys
from feedpipe.wire.codec import codec

TAG = re.compile(r"\{([^}]*)\}")


def tag_of(key: str) -> str:
    """The hash tag Redis Cluster hashes (the first ``{...}`` with content)."""
    m = TAG.search(key)
    assert m and m.group(1), key
    return m.group(1)


def test_partition_of_is_kafkas_default_key_partitioner() -> None:
    parts = list(range(4))
    for u in ["U1", "U13740", "NRMS-user", "x" * 128, "ü-user"]:
        assert key_partition(u, 4) == DefaultPartitioner()(u.encode(), parts, parts)
    k = keys()
    users = [f"U{i}" for i in range(400)]
    assert {k.partition_of(u) for u in users} == set(k.partitions())  # all partitions used


def test_a_partitions_keys_share_one_tag_and_groups_differ() -> None:
    k = keys()
    u = "U42"
    p = k.partition_of(u)
    batch = [
        k.profile(u), k.feed(u), k.active(p), k.watermark("profiles", "reader.events", p),
        k.feeds_refreshed(p), k.rebuilding("reader.events", p), k.stats("c1", p),
        k.stats_version(p), k.trending("mind", 3, p), k.trending_epoch("mind", p),
        k.pending_users("c1", p), k.ab("exp", p), k.ab_experiments(p),
        k.audience("mind", "c:news", p),
    ]
    assert {tag_of(x) for x in batch} == {f"p{p}"}
    catalogue = [
        k.content("c1"), k.meta("c1"), k.catalogue("mind"), k.catalogue_version(),
        k.celebrity("mind"), k.celebrity_version(),
    ]
    assert {tag_of(x) for x in catalogue} == {"cat"}
    assert {tag_of(x) for x in (k.item_ord(), k.item_id(), k.item_gen())} == {"item"}
    assert {tag_of(x) for x in (k.ops_snapshot(), k.ops_history())} == {"ops"}
    assert len({k.stats("c1", q) for q in k.partitions()}) == len(k.partitions())


def test_audience_replies_of_the_partitions_merge() -> None:
    assert _merge([[2, [b"U1", b"U2"]], [1, [b"U3"]]], 3) == [3, [b"U1", b"U2", b"U3"]]
    assert _merge([[2, [b"U1", b"U2"]], [2, [b"U3", b"U4"]]], 3) == [4]  # the sum is over
    assert _merge([[5], [1, [b"U3"]]], 3) == [6]  # one partition already over: a lower bound
    assert _merge([[0, []], [0, []]], 3) == [0, []]


def _event(user: str) -> bytes:
    return codec("ReaderEvent").encode(
        {
            "event_id": f"e-{user}",
            "type": "click",
            "user_id": user,
            "content_id": "c1",
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
            "origin": "live",
            "dwell_ms": None,
        }
    )


@pytest.mark.parametrize("cluster", [False, True])
def test_misrouted_events_are_dead_letters_on_a_cluster(
    cluster: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.clickpath.records import Record, decode

    monkeypatch.setenv("FEEDPIPE_REDIS_CLUSTER", "1" if cluster else "0")
    settings_module.settings.cache_clear()
    try:
        k = keys()
        home = "U7"
        p = k.partition_of(home)
        other = next(u for u in (f"U{i}" for i in range(100)) if k.partition_of(u) != p)
        recs = [
            Record("reader.events", p, 0, home.encode(), _event(home)),
            Record("reader.events", p, 1, other.encode(), _event(other)),
        ]
        good, bad = decode(recs)
    finally:
        monkeypatch.undo()
        settings_module.settings.cache_clear()
    if cluster:
        assert [off for off, _ in good] == [0]
        assert [off for off, _, _ in bad] == [1]
        dl = codec("DeadLetter").decode(bad[0][2])
        assert dl["error_type"] == "misrouted" and other in dl["reason"]
    else:
        assert [off for off, _ in good] == [0, 1] and bad == []


def test_the_local_stack_starts_a_cluster_when_configured(tmp_path: Path) -> None:
    from feedpipe.settings import Settings
    from ops.infra import LocalStack, RedisClusterNodes, RedisServer

    url = "redis://127.0.0.1:46379/0"
    single = LocalStack(Settings(state_dir=tmp_path, redis_url=url, redis_cluster=False))
    cluster = LocalStack(Settings(state_dir=tmp_path, redis_url=url, redis_cluster=True))
    assert isinstance(single.redis, RedisServer)
    assert isinstance(cluster.redis, RedisClusterNodes)
    assert [n.port for n in cluster.redis.nodes] == [46379, 46380, 46381]
    assert cluster.redis.url == url
