"""Configuration of the scaled-out local stack, without starting anything: the 3-node cluster's
ports and broker properties, the replication factor topics are created with, and the worker
services of ``feedpipe up --workers N``."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedpipe import settings as settings_module
from feedpipe.kafka.topics import replicas
from feedpipe.settings import Settings
from feedpipe.topology import TopicSpec
from ops.infra import InfraError, KafkaBroker, KafkaCluster, LocalStack


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_cluster_nodes_ports_quorum_and_replication(tmp_path: Path) -> None:
    c = KafkaCluster(tmp_path, port=45100, lib=tmp_path / "lib")
    assert c.bootstrap == "127.0.0.1:45100,127.0.0.1:45102,127.0.0.1:45104"
    props = [_props(n._server_properties()) for n in c.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    voters = "1@127.0.0.1:45101,2@127.0.0.1:45103,3@127.0.0.1:45105"
    assert all(p["controller.quorum.voters"] == voters for p in props)
    assert all("controller.quorum.bootstrap.servers" not in p for p in props)
    for p in props:
        assert p["min.insync.replicas"] == "2"
        assert p["default.replication.factor"] == "3"
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
    assert len({n.node.cluster_id for n in c.nodes if n.node}) == 1
    assert len({n.home for n in c.nodes}) == 3
    assert not (tmp_path / "kafka-cluster").exists()  # nothing written before a start


def test_cluster_refuses_impossible_replication(tmp_path: Path) -> None:
    with pytest.raises(InfraError):
        KafkaCluster(tmp_path, brokers=3, replication=3, min_isr=4)
    with pytest.raises(InfraError):
        KafkaCluster(tmp_path, brokers=2, replication=3, min_isr=2)


def test_single_node_keeps_replication_one(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, kafka_bootstrap="127.0.0.1:45110")
    stack = LocalStack(s)  # no cluster running: the single node
    assert isinstance(stack.kafka, KafkaBroker)
    props = _props(stack.kafka._server_properties())
    assert props["node.id"] == "1" and props["min.insync.replicas"] == "1"
    assert "controller.quorum.bootstrap.servers" in props
    assert isinstance(LocalStack(s, brokers=3).kafka, KafkaCluster)


def test_topics_take_the_deployment_replication_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TopicSpec.model_validate({"partitions": 4, "key": "k", "schema": "feedpipe.X",
                                     "cleanup_policy": "delete", "retention_ms": 1})
    pinned = spec.model_copy(update={"replication_factor": 2})
    monkeypatch.setenv("FEEDPIPE_KAFKA_REPLICATION_FACTOR", "3")
    settings_module.settings.cache_clear()
    try:
        assert replicas(spec) == 3
        assert replicas(pinned) == 2
    finally:
        monkeypatch.delenv("FEEDPIPE_KAFKA_REPLICATION_FACTOR")
        settings_module.settings.cache_clear()
    assert replicas(spec) == 1


def test_worker_services_share_an_app_id_on_their_own_ports(tmp_path: Path) -> None:
    from ops.stack import started_workers, worker_services

    s = Settings(state_dir=tmp_path, worker_web_port=45120)
    ws = worker_services(s, 3)
    assert [w.name for w in ws] == ["worker", "worker-2", "worker-3"]
    ports = [w.args[w.args.index("--web-port") + 1] for w in ws]
    assert ports == ["45120", "45121", "45122"]
    assert [w.ready_url for w in ws][1:] == ["http://127.0.0.1:45121/", "http://127.0.0.1:45122/"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "worker-3.pid").write_text("1\n")
    assert [w.name for w in started_workers(s)] == ["worker", "worker-2", "worker-3"]
