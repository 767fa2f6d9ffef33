"""feedpipe.kafka.producer.AsyncProducer (the click path's output producer) on the real broker:
records are delivered where aiokafka would put them, tombstones stay null, and a failed delivery
raises instead of being swallowed."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka.admin import AdminClient
from pipeline import consume_all

from feedpipe.kafka.producer import AsyncProducer, DeliveryError

pytestmark = pytest.mark.integration

TOPIC = "profiles.updated"  # compacted, keyed by user id (topology.yaml)


def read_back(bootstrap: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None]:
    """Key and value of the record at ``TOPIC[partition]@offset``."""
    (msg,) = consume_all(bootstrap, TOPIC, {partition: offset}, {partition: offset + 1})
    return msg.key(), msg.value()


def test_records_land_where_aiokafka_would_put_them(
    kafka_bootstrap: str, topics_applied: object
) -> None:
    users = [f"U{i}-{uuid.uuid4().hex[:6]}".encode() for i in range(40)]

    async def go() -> list[tuple[int, int]]:
        p = AsyncProducer(kafka_bootstrap)
        await p.start()
        try:
            futs = [await p.send(TOPIC, u, b"v:" + u) for u in users]
            futs.append(await p.send(TOPIC, users[0], None))  # tombstone
            return list(await asyncio.gather(*futs))
        finally:
            await p.stop()

    where = asyncio.run(go())
    meta = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(TOPIC, timeout=10)
    parts = sorted(meta.topics[TOPIC].partitions)
    assert len(parts) > 1
    partitioner = DefaultPartitioner()
    for user, (partition, _) in zip(users, where, strict=False):
        assert partition == partitioner(user, parts, parts)  # murmur2, as aiokafka / Java
    partition, offset = where[5]
    assert read_back(kafka_bootstrap, partition, offset) == (users[5], b"v:" + users[5])
    partition, offset = where[-1]
    assert read_back(kafka_bootstrap, partition, offset) == (users[0], None)


def test_failed_delivery_raises(kafka_bootstrap: str) -> None:
    missing = f"no-such-topic-{uuid.uuid4().hex[:8]}"  # the broker does not auto-create topics

    async def go() -> None:
        p = AsyncProducer(kafka_bootstrap, config={"message.timeout.ms": 1500})
        await p.start()
        try:
            fut = await p.send(missing, b"k", b"v")
            await fut
        finally:
            await p.stop(timeout_s=5)

    with pytest.raises(DeliveryError, match=missing):
        asyncio.run(go())
