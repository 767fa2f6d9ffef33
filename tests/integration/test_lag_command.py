"""`feedpipe lag` on real Kafka: a group that stops consuming is reported STALL, then STOP once
its consumer left, with exit code 2; a caught-up group is OK with exit code 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from feedpipe.settings import ROOT

pytestmark = pytest.mark.integration

RECORDS = 20
CONSUMED = 5


def _lag(bootstrap: str, group: str) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "FEEDPIPE_KAFKA_BOOTSTRAP": bootstrap}
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "lag", "--group", group, "--json",
         "--window", "3", "--interval", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture()
def topic(kafka_bootstrap: str) -> str:
    name = f"lagtest-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(RECORDS):
        producer.produce(name, key=str(i).encode(), value=b"x")
    assert producer.flush(30) == 0
    return name


def _consume(bootstrap: str, group: str, topic: str, n: int) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 45000,
        }
    )
    c.subscribe([topic])
    got = 0
    while got < n:
        msg = c.poll(10)
        assert msg is not None, "no record within 10 s"
        assert msg.error() is None, msg.error()
        got += 1
        if got == n:
            c.commit(message=msg, asynchronous=False)
    return c


def test_stalled_then_stopped_group_exits_non_zero(kafka_bootstrap: str, topic: str) -> None:
    group = f"lagtest-stuck-{uuid.uuid4().hex[:8]}"
    consumer = _consume(kafka_bootstrap, group, topic, CONSUMED)
    try:
        # the consumer is still a member but its committed offset does not move
        code, doc = _lag(kafka_bootstrap, group)
        (rep,) = doc["groups"]
        (part,) = rep["partitions"]
        assert (part["topic"], part["committed"], part["end"]) == (topic, CONSUMED, RECORDS)
        assert part["lag"] == RECORDS - CONSUMED
        assert part["lag_s"] is not None and part["lag_s"] >= 0
        assert part["status"] == "STALL", part
        assert code == 2
        assert doc["exit_code"] == 2
    finally:
        consumer.close()  # leaves the group: nobody will commit any more
    code, doc = _lag(kafka_bootstrap, group)
    assert doc["groups"][0]["partitions"][0]["status"] == "STOP"
    assert doc["groups"][0]["status"] == "STOP"
    assert code == 2


def test_caught_up_group_is_ok(kafka_bootstrap: str, topic: str) -> None:
    group = f"lagtest-done-{uuid.uuid4().hex[:8]}"
    _consume(kafka_bootstrap, group, topic, RECORDS).close()
    code, doc = _lag(kafka_bootstrap, group)
    part = doc["groups"][0]["partitions"][0]
    assert (part["lag"], part["lag_s"], part["status"]) == (0, 0.0, "OK")
    assert code == 0


@pytest.mark.parametrize(
    "args", [["status"], ["lag", "--json", "--window", "2", "--interval", "0.2"]]
)
def test_status_and_lag_build_no_faust_app(kafka_bootstrap: str, args: list[str]) -> None:
    """`feedpipe status` and `feedpipe lag` probe Kafka with librdkafka only: neither faust nor
    the worker's app module is imported (``-X importtime`` lists every module imported)."""
    env = {**os.environ, "FEEDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ops.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    modules = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"ops.stack", "confluent_kafka"} <= modules, proc.stderr[-2000:]
    assert proc.returncode in (0, 2, 3) and proc.stdout.strip(), proc.stderr[-2000:]  # ran through
    assert not {m for m in modules if m == "faust" or m.startswith(("faust.", "streams"))}
