"""feedpipe.kafka.topics plan/apply against the session broker. Uses the real topology.yaml topics
under a unique prefix, so the broker is "empty" for them whatever other tests created."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from feedpipe.kafka.topics import TopicChange, admin_client, apply, format_changes, plan
from feedpipe.topology import Topology, topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _prefixed() -> Topology:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    real = topology()
    topics = {
        prefix + name: spec.model_copy(update={"dlq": prefix + spec.dlq if spec.dlq else None})
        for name, spec in real.topics.items()
    }
    return real.model_copy(update={"topics": topics, "agents": {}})


def _configs(admin: AdminClient, topic: str) -> dict[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([res])[res].result(30)
    return {k: e.value for k, e in entries.items()}


def _set_config(admin: AdminClient, topic: str, name: str, value: str) -> None:
    """Set one topic config and wait until describe_configs shows it (KRaft propagates the
    change to the broker's metadata cache asynchronously)."""
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([res])[res].result(30)
    deadline = time.monotonic() + 30
    while _configs(admin, topic)[name] != value:
        assert time.monotonic() < deadline, f"{topic}: {name}={value} not visible after 30 s"
        time.sleep(0.2)


def test_plan_on_empty_broker_lists_creates_then_apply_converges(kafka_bootstrap: str) -> None:
    topo = _prefixed()
    admin = admin_client(kafka_bootstrap)
    first = plan(topo, admin)
    assert [c.topic for c in first] == list(topo.topics)
    assert {c.action for c in first} == {"create"}
    assert "4 partitions" in str(first[0]) and "create" in format_changes(first)

    applied = apply(topo, admin)
    assert [c.action for c in applied] == ["create"] * len(topo.topics)
    md = admin.list_topics(timeout=10)
    for name, spec in topo.topics.items():
        assert len(md.topics[name].partitions) == spec.partitions
        cfg = _configs(admin, name)
        assert cfg["cleanup.policy"] == spec.cleanup_policy
        assert cfg["retention.ms"] == str(spec.retention_ms)

    again = plan(topo, admin)
    assert all(c.is_noop for c in again), format_changes(again)
    assert all(c.action == "ok" for c in apply(topo, admin))


def test_altered_retention_is_detected_and_fixed(kafka_bootstrap: str) -> None:
    topo = _prefixed()
    admin = admin_client(kafka_bootstrap)
    apply(topo, admin)
    victim = next(n for n, s in topo.topics.items() if s.cleanup_policy == "delete")
    other = next(n for n, s in topo.topics.items() if s.cleanup_policy == "compact")
    _set_config(admin, victim, "retention.ms", "1000")
    _set_config(admin, other, "cleanup.policy", "delete")

    changes = {c.topic: c for c in plan(topo, admin)}
    assert changes[victim].action == "alter-config"
    assert "retention.ms 1000 -> " in changes[victim].detail
    assert changes[other].action == "alter-config"
    assert "cleanup.policy delete -> compact" in changes[other].detail
    assert sum(not c.is_noop for c in changes.values()) == 2

    apply(topo, admin)
    assert _configs(admin, victim)["retention.ms"] == str(topo.topics[victim].retention_ms)
    assert _configs(admin, other)["cleanup.policy"] == "compact"
    assert all(c.is_noop for c in plan(topo, admin))


def test_partitions_grow_but_never_shrink(kafka_bootstrap: str) -> None:
    topo = _prefixed()
    admin = admin_client(kafka_bootstrap)
    name = next(iter(topo.topics))
    small = topo.model_copy(update={"topics": {name: topo.topics[name]}})
    apply(small, admin)
    spec = topo.topics[name]
    bigger = small.model_copy(
        update={"topics": {name: spec.model_copy(update={"partitions": spec.partitions + 2})}}
    )
    [grow] = plan(bigger, admin)
    assert grow.action == "add-partitions"
    assert f"partitions {spec.partitions} -> {spec.partitions + 2}" in grow.detail
    apply(bigger, admin)
    assert len(admin.list_topics(timeout=10).topics[name].partitions) == spec.partitions + 2

    [shrink] = apply(small, admin)  # declared fewer than the broker has
    assert shrink.action == "error" and shrink.is_error
    assert "cannot remove partitions" in shrink.detail
    assert len(admin.list_topics(timeout=10).topics[name].partitions) == spec.partitions + 2


def test_topics_applied_fixture_aligns_the_real_topology(
    kafka_bootstrap: str, topics_applied: list[TopicChange]
) -> None:
    assert {c.topic for c in topics_applied} == set(topology().topics)
    changes = plan(topology(), admin_client(kafka_bootstrap))
    assert all(c.is_noop for c in changes), format_changes(changes)
