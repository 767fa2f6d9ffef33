"""The local 3-broker KRaft cluster (:class:`ops.infra.KafkaCluster`, the ``kafka_cluster``
fixture): topics from topology.yaml get replication factor 3 and ``min.insync.replicas`` 2, and
records acknowledged while one broker is SIGKILLed are all there, once, afterwards."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from feedpipe import settings as settings_module
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.kafka.topics import apply, plan
from feedpipe.topology import topology
from ops.faults.reads import consume
from ops.infra import KafkaCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture()
def replication_3() -> Iterator[None]:
    """``FEEDPIPE_KAFKA_REPLICATION_FACTOR=3`` for the test (what ``feedpipe up --brokers 3``
    sets)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FEEDPIPE_KAFKA_REPLICATION_FACTOR", "3")
    settings_module.settings.cache_clear()
    try:
        yield
    finally:
        mp.undo()
        settings_module.settings.cache_clear()


def _in_sync(admin: AdminClient, topics: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        md = admin.list_topics(timeout=10)
        # a topic just created can be missing from a broker's metadata for a moment
        short = [t for t in topics if t not in md.topics] + [
            f"{t}[{i}]" for t in topics if t in md.topics
            for i, p in md.topics[t].partitions.items() if len(p.isrs) < 3
        ]
        if not short:
            return
        assert time.monotonic() < deadline, f"replicas not in sync: {short[:5]}"
        time.sleep(0.5)


def test_cluster_has_three_brokers(kafka_cluster: KafkaCluster) -> None:
    md = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap}).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    assert all(p is not None for p in kafka_cluster.pids())


def test_topics_get_replication_3_and_min_insync_2(
    kafka_cluster: KafkaCluster, replication_3: None
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    apply(topology(), admin, timeout_s=60)
    _in_sync(admin, list(topology().topics))
    md = admin.list_topics(timeout=10)
    for name in topology().topics:
        assert all(len(p.replicas) == 3 for p in md.topics[name].partitions.values()), name
    assert all(c.is_noop for c in plan(topology(), admin)), "plan not clean after apply"
    res = ConfigResource(ResourceType.TOPIC, topology().ingest.reader_events)
    configs = admin.describe_configs([res])[res].result(timeout=10)
    assert configs["min.insync.replicas"].value == "2"


def test_acknowledged_records_survive_a_broker_kill(
    kafka_cluster: KafkaCluster, replication_3: None
) -> None:
    """SIGKILL the leader of partition 0 while an idempotent acks=all producer writes: every
    record is delivered, none twice; the node then rejoins every ISR."""
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    apply(topology(), admin, timeout_s=60)
    topic = topology().ingest.reader_events
    _in_sync(admin, [topic])
    leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
    node = kafka_cluster.nodes[leader - 1]
    run = uuid.uuid4().hex[:8]
    producer = IdempotentProducer(kafka_cluster.bootstrap, client_id=f"test-cluster-{run}")
    total, killed_at = 20_000, 5_000
    try:
        for i in range(total):
            producer.produce(topic, f"{run}-{i % 97}".encode(), f"{run}:{i}".encode())
            if i == killed_at:
                producer.flush(30)
                pid = node.pid()
                assert pid is not None
                os.killpg(pid, signal.SIGKILL)
                node.stop(timeout_s=10)
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(120)
    finally:
        producer.close()
    values = [v for _, v in consume(kafka_cluster.bootstrap, topic)
              if v is not None and v.startswith(run.encode())]
    assert len(values) == total and len(set(values)) == total
    node.start(timeout_s=120)
    _in_sync(admin, list(topology().topics))
