"""The lag probes' offsets on real Kafka, several topics and partitions: the batched ListOffsets
(feedpipe.kafka.lag.watermarks) give each partition's log start and end offsets as a consumer's
per-partition watermark query does, and the committed side comes from the group's commits; one
probe sends ListOffsets requests in proportion to the brokers, not the partitions (librdkafka's
own per-request-type counters)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from feedpipe.kafka.lag import LagProbe, end_offsets, group_lag

pytestmark = pytest.mark.integration

PARTITIONS = (1, 3, 4)
"""Partitions of the three test topics."""
_COORDINATOR_NOT_READY = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
)


@pytest.fixture()
def world(kafka_bootstrap: str) -> Iterator[dict[str, Any]]:
    """Three topics (1, 3 and 4 partitions; partition p of topic i holds 3 + 2p + i records),
    the first two records of topic 1 partition 1 deleted (log start 2), and a group that
    committed offset 1 on every partition of the first two topics."""
    tag = uuid.uuid4().hex[:8]
    names = [f"lagoff-{tag}-{i}" for i in range(len(PARTITIONS))]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futs = admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1)
                                for t, n in zip(names, PARTITIONS, strict=True)])
    for f in futs.values():
        f.result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    counts: dict[tuple[str, int], int] = {}
    for i, (t, n) in enumerate(zip(names, PARTITIONS, strict=True)):
        for p in range(n):
            counts[(t, p)] = 3 + 2 * p + i
            for j in range(counts[(t, p)]):
                producer.produce(t, value=b"x", key=str(j).encode(), partition=p)
    assert producer.flush(30) == 0
    deleted = TopicPartition(names[1], 1, 2)
    admin.delete_records([deleted])[deleted].result()
    group = f"lagoff-{tag}"
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    offsets = [TopicPartition(t, p, 1) for t, p in counts if t in names[:2]]
    deadline = time.monotonic() + 60
    while True:  # a broker just started may not have its group coordinator ready yet
        try:
            c.commit(offsets=offsets, asynchronous=False)
            break
        except KafkaException as exc:
            code = exc.args[0].code()
            if code not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    c.close()
    yield {"topics": names, "counts": counts, "group": group, "bootstrap": kafka_bootstrap}
    for f in admin.delete_topics(names).values():
        f.result()


def _reference(bootstrap: str, parts: list[tuple[str, int]]) -> dict[tuple[str, int], Any]:
    """Watermarks asked one partition at a time (a consumer's query), the reference."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lagoff-reference"})
    try:
        return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                for t, p in parts}
    finally:
        c.close()


def test_end_offsets_of_every_partition_of_several_topics(world: dict[str, Any]) -> None:
    names, counts = world["topics"], world["counts"]
    got = end_offsets(world["bootstrap"], [*names, "lagoff-no-such-topic"])
    assert set(got) == set(counts)  # the unknown topic is left out
    for (t, p), n in counts.items():
        low = 2 if (t, p) == (names[1], 1) else 0
        assert got[(t, p)] == (low, n), (t, p)
    assert got == _reference(world["bootstrap"], sorted(counts))
    lag = group_lag(world["bootstrap"], world["group"], names)
    # committed partitions count from the commit (even one below the log start), the others
    # from the log start
    want = {t: sum(n - (1 if t in names[:2] else 0)
                   for (tt, _), n in counts.items() if tt == t) for t in names}
    assert lag == want


def test_one_probe_sends_list_offsets_per_broker_not_per_partition(
    world: dict[str, Any],
) -> None:
    names, counts = world["topics"], world["counts"]
    stats: list[dict[str, Any]] = []
    probe = LagProbe(world["bootstrap"], timeout_s=10)
    # the probe's admin client, with librdkafka's statistics on (counters per request type)
    probe._admin = AdminClient({"bootstrap.servers": world["bootstrap"],
                                "statistics.interval.ms": 100,
                                "stats_cb": lambda s: stats.append(json.loads(s))})

    def list_offsets_sent() -> int:
        stats.clear()
        deadline = time.monotonic() + 10
        while not stats and time.monotonic() < deadline:
            probe._admin.poll(0.2)
        assert stats, "no statistics from librdkafka"
        last = stats[-1]
        return sum(int(b.get("req", {}).get("ListOffsets", 0))
                   for b in last["brokers"].values())

    try:
        before = list_offsets_sent()
        rows = probe.probe(world["group"], names)
        sent = list_offsets_sent() - before
    finally:
        probe.close()
    assert all(r.sample.error is None for r in rows), rows
    assert {(r.topic, r.partition) for r in rows} == set(counts)
    by = {(r.topic, r.partition): r for r in rows}
    assert by[(names[1], 1)].sample.low == 2 and by[(names[1], 1)].sample.committed == 1
    assert by[(names[1], 1)].lag == counts[(names[1], 1)] - 1
    assert by[(names[2], 3)].sample.committed is None
    assert by[(names[2], 3)].lag == counts[(names[2], 3)]
    assert by[(names[0], 0)].lag == counts[(names[0], 0)] - 1
    assert 1 <= sent <= 2 * len(stats[-1]["brokers"])  # earliest + latest, per broker
    assert sent < len(counts)  # 8 partitions
