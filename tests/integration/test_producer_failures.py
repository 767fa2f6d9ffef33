"""Delivery failures on a real broker: each failure is raised once, by the connector whose
record failed, and the producer keeps working afterwards (no permanently failed state)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from pipeline import high_watermarks

from connectors.base import Connector, ConnectorMetrics
from feedpipe.kafka.producer import DeliveryError, IdempotentProducer

pytestmark = pytest.mark.integration


class _Sender(Connector):
    """A connector that publishes what the test hands it."""

    def run(self) -> ConnectorMetrics:
        return self.metrics

    def send(self, topic: str, n: int) -> None:
        for i in range(n):
            self.produce(topic, f"k{i}".encode(), b"v")


def _create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait for the partition leader
        parts = admin.list_topics(name, timeout=10).topics[name].partitions
        if parts and all(p.leader >= 0 for p in parts.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {name} has no leader after 30 s")


def test_a_failed_record_is_raised_once_by_its_own_connector(kafka_bootstrap: str) -> None:
    good = f"test.producer.ok.{uuid.uuid4().hex[:8]}"
    missing = f"test.producer.missing.{uuid.uuid4().hex[:8]}"  # never created (auto-create off)
    _create_topic(kafka_bootstrap, good)
    producer = IdempotentProducer(kafka_bootstrap, config={"message.timeout.ms": 3000})
    a = _Sender("a", producer=producer)
    b = _Sender("b", producer=producer)
    a.setup()
    b.setup()
    a.send(missing, 3)
    b.send(good, 5)
    b.flush(30)  # b's records were acknowledged; a's failure is not b's
    with pytest.raises(DeliveryError, match="connector a: 3 records failed"):
        a.flush(30)
    assert a.metrics.last_success_at is None
    # the producer is not stuck: the same connector publishes and flushes again
    a.send(good, 4)
    a.flush(30)
    assert a.metrics.last_success_at is not None
    assert producer.failed == 3 and producer.acked == 9
    with pytest.raises(DeliveryError, match="3 of 12 messages failed"):
        producer.raise_for_failures()
    producer.flush(10)  # already raised once: a later flush does not raise it again
    assert sum(high_watermarks(kafka_bootstrap, good).values()) == 9
