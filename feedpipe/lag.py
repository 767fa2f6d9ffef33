"""Consumer lag: how far a consumer group is behind the end of its topics.

lag(partition) = high watermark (log end offset) - committed offset of the group; a partition
the group never committed counts from the log start offset. Used by ``feedpipe status``, the
``up`` command's progress display and the end-to-end tests to know when the pipeline drained.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient


def end_offsets(
    bootstrap: str, topics: Iterable[str], timeout_s: float = 10.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (low, high) watermark offsets of every partition of ``topics``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "feedpipe-lag-probe",
            "enable.auto.commit": False,
        }
    )
    try:
        md = consumer.list_topics(timeout=timeout_s)
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for t in topics:
            tmd = md.topics.get(t)
            if tmd is None or tmd.error is not None:
                continue
            for p in tmd.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=timeout_s)
                out[(t, p)] = (low, high)
        return out
    finally:
        consumer.close()


def group_lag(
    bootstrap: str, group: str, topics: Iterable[str], timeout_s: float = 10.0
) -> dict[str, int]:
    """Total lag of consumer group ``group`` per topic (messages not yet committed)."""
    topics = list(topics)
    ends = end_offsets(bootstrap, topics, timeout_s)
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    req = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for (t, p) in ends])]
    committed: dict[tuple[str, int], int] = {}
    try:
        res = admin.list_consumer_group_offsets(req, request_timeout=timeout_s)[group].result()
        for tp in res.topic_partitions:
            committed[(tp.topic, tp.partition)] = tp.offset
    except Exception:
        committed = {}
    lag: dict[str, int] = dict.fromkeys(topics, 0)
    for (t, p), (low, high) in ends.items():
        off = committed.get((t, p), -1)
        lag[t] += high - (off if off >= 0 else low)
    return lag
