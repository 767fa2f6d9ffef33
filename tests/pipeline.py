"""Test harness for tests that run the whole pipeline: a worker and the read endpoint as real
processes on real Kafka and Redis, fresh topics, and waits on consumer lag."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from feedpipe.kafka.topics import recreate
from feedpipe.settings import Settings, settings
from feedpipe.topology import topology
from ops import services

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
PORT_OFFSET = int(os.environ.get("FEEDPIPE_TEST_PORT_OFFSET", "0"))
"""Shift of every test port (tests/conftest.py), so checkouts can run their suites side by side."""
ENV_KEYS = (
    "FEEDPIPE_STATE_DIR",
    "FEEDPIPE_APP_ID",
    "FEEDPIPE_API_PORT",
    "FEEDPIPE_WORKER_WEB_PORT",
)


def recreate_topics(bootstrap: str) -> None:
    """Empty topics of topology.yaml on ``bootstrap`` (:func:`feedpipe.kafka.topics.recreate`)."""
    recreate(topology(), AdminClient({"bootstrap.servers": bootstrap}))


@contextmanager
def running_pipeline(kafka_bootstrap: str, redis_url: str, state: Path) -> Iterator[Settings]:
    """Fresh topics, an empty Redis, then a worker and the read endpoint (unique consumer group,
    free ports) for the duration of the block; yields the settings they run with."""
    from feedpipe.store.client import sync_client

    recreate_topics(kafka_bootstrap)
    sync_client(redis_url).flushdb()  # every primary's, on a cluster
    os.environ["FEEDPIPE_STATE_DIR"] = str(state)
    os.environ["FEEDPIPE_APP_ID"] = f"feedpipe-test-{uuid.uuid4().hex[:8]}"
    os.environ["FEEDPIPE_API_PORT"] = str(free_port())
    os.environ["FEEDPIPE_WORKER_WEB_PORT"] = str(free_port())
    settings.cache_clear()
    s = settings()
    api_headers(s)  # the read endpoint's key, created before the API starts
    worker, api = services.worker_service(s), services.api_service(s)
    try:
        services.start(worker, s)
        services.start(api, s)
        yield s
    finally:
        services.stop(api, s)
        services.stop(worker, s)
        for k in ENV_KEYS:
            os.environ.pop(k, None)
        settings.cache_clear()


def api_headers(s: Settings) -> dict[str, str]:
    """Headers with the development API key of ``s.state_dir`` (created on first use, all
    scopes; see feedpipe/apikeys.py), for HTTP calls to the read endpoint."""
    from feedpipe.apikeys import ensure_dev_key, keys_file

    return {"X-API-Key": ensure_dev_key(s.state_dir, keys_file(s.state_dir, s.api_keys_file))}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drain(bootstrap: str, app_id: str, timeout_s: float = 600) -> None:
    """Wait until the worker's consumer groups (topology.yaml ``stages``: the Faust group
    ``app_id`` on the CMS topics, the click path's group on reader.events) have no lag three
    probes in a row; AssertionError after ``timeout_s`` seconds.

    The probes run in a child process (:class:`feedpipe.monitoring.exporter.ProbeProcess`, as
    the worker's exporter and the fault suite's): one long-lived
    :class:`feedpipe.kafka.lag.LagProbe` (one AdminClient for the committed offsets, one
    assign-only Consumer for the watermarks) serves every probe of the wait and is closed at
    the end. Why: librdkafka 2.16.1 can segfault (``rd_kafka_cgrp_op``) under load when
    clients are created and destroyed every second, and in the test process that takes pytest
    down. Here no Kafka client is created per probe, and a crash kills only the child: that
    probe counts as not drained and the next one starts a new child.
    """
    from feedpipe.kafka.lag import pipeline_groups
    from feedpipe.monitoring.exporter import ProbeProcess

    groups = pipeline_groups(app_id)
    probe = ProbeProcess(bootstrap, timeout_s=5.0, deadline_s=30.0)
    try:
        deadline, quiet, lag = time.monotonic() + timeout_s, 0, -1
        errors: list[str] = []
        while quiet < 3:
            assert time.monotonic() < deadline, (
                f"pipeline did not drain in {timeout_s} s (lag {lag}; probe errors {errors[:3]})"
            )
            rows = probe.probe(groups)
            errors = [r.sample.error for r in rows if r.sample.error]
            lag = -1 if errors else sum(r.lag for r in rows)
            quiet = quiet + 1 if lag == 0 else 0
            if quiet < 3:
                time.sleep(1.0)
    finally:
        probe.close()


def wait_feeds_converged(redis_url: str, timeout_s: float = 120) -> None:
    """Wait until every partition's feeds reflect the current catalogue and stats versions
    (:func:`ops.faults.wait_feeds_converged`); AssertionError when they do not."""
    from ops.faults import wait_feeds_converged as wait

    try:
        wait(redis_url, timeout_s)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def kafka_consumer(bootstrap: str, prefix: str = "test") -> Consumer:
    """A consumer in a fresh group (``<prefix>-<uuid>``), no auto-commit, from the earliest."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )


NO_LEADER = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)


def high_watermarks(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """High watermark (log end offset) per partition of ``topic``; retried every 0.5 s for up to
    ``timeout_s`` while a partition has no leader (a topic just (re)created has none for a
    moment: NOT_LEADER_FOR_PARTITION); other errors are raised at once."""
    c = kafka_consumer(bootstrap, "test-watermarks")
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                parts = c.list_topics(topic, timeout=10).topics[topic].partitions
                return {
                    p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in parts
                }
            except KafkaException as exc:
                if exc.args[0].code() not in NO_LEADER or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        c.close()


def consume_all(
    bootstrap: str,
    topic: str,
    start: dict[int, int] | None = None,
    end: dict[int, int] | None = None,
    timeout_s: float = 60.0,
) -> list[Message]:
    """Every record of ``topic`` from ``start`` up to (excluding) ``end``, in offset order per
    partition.

    Args:
        start: first offset per partition; partitions not named start at 0 (None: all at 0).
        end: offset to stop at per partition; only these partitions are read (None: every
            partition, up to its current high watermark, :func:`high_watermarks`).
        timeout_s: AssertionError when the range is not read within this many seconds.

    A partition is done once the consumer's position reaches its end offset: the position also
    moves past offsets that hold no record for the application (transaction markers,
    compacted-away records), which a count of ``end - start`` records would wait for in vain.
    """
    if end is None:
        end = high_watermarks(bootstrap, topic)
    begin = start or {}
    todo = {p: e for p, e in end.items() if e > begin.get(p, 0)}
    out: list[Message] = []
    if not todo:
        return out
    c = kafka_consumer(bootstrap, "test-read")
    try:
        c.assign([TopicPartition(topic, p, begin.get(p, 0)) for p in todo])
        deadline = time.monotonic() + timeout_s
        while todo:
            assert time.monotonic() < deadline, f"{topic}: not read up to {todo} in {timeout_s} s"
            for msg in c.consume(500, timeout=0.5):
                assert msg.error() is None, msg.error()
                offset, partition = msg.offset(), msg.partition()
                assert offset is not None and partition is not None
                if partition in todo and offset < todo[partition]:
                    out.append(msg)
            for tp in c.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
    finally:
        c.close()
    return out


def run_fault_suite(
    out: Path, *args: str, kafka_port: str, redis_port: str
) -> dict[str, dict[str, Any]]:
    """Run ``feedpipe faults <args> --kafka-port --redis-port --rows --json out`` in a process
    of its own (a fault that took down the process running it would otherwise take pytest
    with it), with the test state directory; returns the JSON rows by scenario name.

    ``--rows`` is ``FEEDPIPE_FAULTS_ROWS`` (default 600 MIND behaviours rows per run).

    Raises:
        AssertionError: the suite wrote no JSON (its exit code and output tails are in the
            message). A failed scenario is not raised: its row says so.
    """
    import subprocess
    import sys

    import orjson

    env = {**os.environ, "FEEDPIPE_STATE_DIR": str(ROOT / ".feedpipe-test"), "COLUMNS": "120"}
    rows = os.environ.get("FEEDPIPE_FAULTS_ROWS", "600")
    cmd = [sys.executable, "-m", "ops.cli", "faults", *args, "--kafka-port", kafka_port,
           "--redis-port", redis_port, "--rows", rows, "--json", str(out)]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    print(proc.stdout[-6000:])
    assert out.exists(), f"feedpipe faults wrote no results (exit {proc.returncode}):\n" + (
        proc.stdout[-3000:] + proc.stderr[-6000:]
    )
    return {row["scenario"]: row for row in orjson.loads(out.read_bytes())}


def clean_fault_row(row: dict[str, Any]) -> Any:
    """The :class:`ops.faults.Outcome` of one scenario's JSON row, after the checks every
    scenario must pass: the stream really flowed (> 10,000 events of > 100 users), nothing was
    lost or applied twice (reader events and CMS items), the topics agree with Redis, and the
    pipeline recovered. AssertionError (with the row) otherwise."""
    from ops.faults import Outcome

    out = Outcome(**row)
    assert out.events > 10_000 and out.users > 100, row
    assert out.lost == 0 and out.cms_lost == 0, row
    assert out.doubled == 0 and out.cms_doubled == 0, row
    assert out.topic_mismatches == 0, row
    assert out.recover_s is not None, row
    return out


def run_store(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``fn(client, *args)`` of an async reader of feedpipe.store (e.g. the shard sums of
    :mod:`feedpipe.store.stats`) on a fresh asyncio client of the configured Redis (a
    ``RedisCluster`` with FEEDPIPE_REDIS_CLUSTER=1), from synchronous test code."""
    from feedpipe.store.client import async_client

    async def go() -> T:
        r = async_client()
        try:
            return await fn(r, *args)
        finally:
            await r.aclose()

    return asyncio.run(go())
