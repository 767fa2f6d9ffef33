"""Shared fixtures: real Kafka and Redis for the integration tests (no mocks).

Each service is resolved once per session, in this order:

1. the environment: ``FEEDPIPE_KAFKA_BOOTSTRAP`` / ``FEEDPIPE_REDIS_URL`` already set -> used
   as is (nothing started, nothing stopped);
2. testcontainers, when a Docker engine answers a ping (``apache/kafka`` KRaft single node,
   ``redis:7``); set ``FEEDPIPE_TEST_DOCKER=0`` to skip this step;
3. local processes (:mod:`ops.infra`) under ``<repo>/.feedpipe-test/`` on ports
   29092/29093 (Kafka) and 26379 (Redis), so a running dev stack (19092, 16379) is untouched.
   Their data is wiped at session start and they are stopped at session end. The Kafka jars
   are shared with the dev state directory (fetched there once).

``FEEDPIPE_TEST_REDIS_CLUSTER=1`` runs the suite against a Redis Cluster instead: the
``redis_cluster_url`` fixture (three local masters, :class:`ops.infra.RedisClusterNodes`, on
ports 26382-26384 shifted like the others) stands in for ``redis_url``, and
``FEEDPIPE_REDIS_CLUSTER=1`` is exported, so every client feedpipe builds is a ``RedisCluster``.

The chosen addresses are exported to ``os.environ`` (so subprocesses such as a Faust worker
or the API inherit them) and ``feedpipe.settings.settings`` is re-read. ``FEEDPIPE_STATE_DIR``
is pointed at ``.feedpipe-test/`` too unless already set, so test workers never share Faust
state with a dev worker. Everything is restored at session end.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feedpipe import settings as settings_module
from feedpipe.kafka.topics import TopicChange, admin_client, apply, format_changes
from feedpipe.settings import Settings
from feedpipe.store.client import sync_client
from feedpipe.topology import topology
from ops.infra import (
    KafkaBroker,
    KafkaCluster,
    RedisClusterNodes,
    RedisServer,
    ensure_jars,
    pinned_version,
)
from ops.infra.kafka import broker_answers

REPO = Path(__file__).resolve().parent.parent
TEST_STATE_DIR = REPO / ".feedpipe-test"
# FEEDPIPE_TEST_PORT_OFFSET shifts all three, so two checkouts can run their suites side by side.
_OFFSET = int(os.environ.get("FEEDPIPE_TEST_PORT_OFFSET", "0"))
TEST_KAFKA_PORT = 29092 + _OFFSET
TEST_KAFKA_CONTROLLER_PORT = 29093 + _OFFSET
TEST_REDIS_PORT = 26379 + _OFFSET
TEST_CLUSTER_PORT = 29400 + _OFFSET  # 3-node cluster: 29400..29405 (client, controller pairs)
TEST_REDIS_CLUSTER_PORT = 26382 + _OFFSET  # three nodes: 26382-26384 (bus ports + 20)
KAFKA_IMAGE = f"apache/kafka:{pinned_version()}"  # the same release as the local broker
REDIS_IMAGE = "redis:7"
# Where `make setup` / `python -m ops.infra jars` put the jars (read before any override).
DEV_STATE_DIR = Settings().state_dir


def _docker_available() -> bool:
    """True when a Docker engine answers a ping within ~3 s (fast False without a socket)."""
    if os.environ.get("FEEDPIPE_TEST_DOCKER", "1") == "0":
        return False
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _export(mp: pytest.MonkeyPatch, name: str, value: str) -> None:
    mp.setenv(name, value)
    settings_module.settings.cache_clear()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker (env, testcontainers or local process)."""
    mp = pytest.MonkeyPatch()
    if "FEEDPIPE_STATE_DIR" not in os.environ:
        _export(mp, "FEEDPIPE_STATE_DIR", str(TEST_STATE_DIR))
    try:
        env = os.environ.get("FEEDPIPE_KAFKA_BOOTSTRAP")
        if env:
            if not broker_answers(env, timeout_s=10):
                pytest.fail(f"FEEDPIPE_KAFKA_BOOTSTRAP={env} does not answer")
            yield env
        elif _docker_available():
            yield from _kafka_container(mp)
        else:
            broker = KafkaBroker(
                TEST_STATE_DIR,
                port=TEST_KAFKA_PORT,
                controller_port=TEST_KAFKA_CONTROLLER_PORT,
                lib=ensure_jars(DEV_STATE_DIR),
            )
            broker.stop()  # leftover from an interrupted session
            broker.wipe_data()
            bootstrap = broker.start(timeout_s=90)
            _export(mp, "FEEDPIPE_KAFKA_BOOTSTRAP", bootstrap)
            try:
                yield bootstrap
            finally:
                broker.stop()
    finally:
        mp.undo()
        settings_module.settings.cache_clear()


def _kafka_container(mp: pytest.MonkeyPatch) -> Iterator[str]:
    """apache/kafka in KRaft combined mode; advertised on a host port chosen up front
    (testcontainers' KafkaContainer targets the Confluent image's start scripts)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient

    host = DockerClient().host()
    port = _free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:29092",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://localhost:9092,EXTERNAL://{host}:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT"
        ),
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(29092, port)
    for k, v in env.items():
        container = container.with_env(k, v)
    container.start()
    try:
        bootstrap = f"{host}:{port}"
        deadline = time.monotonic() + 90
        while not broker_answers(bootstrap, timeout_s=2):
            if time.monotonic() > deadline:
                logs = container.get_wrapped_container().logs(tail=40).decode(errors="replace")
                pytest.fail(f"Kafka container on {bootstrap} did not answer in 90 s:\n{logs}")
            time.sleep(0.5)
        _export(mp, "FEEDPIPE_KAFKA_BOOTSTRAP", bootstrap)
        yield bootstrap
    finally:
        container.stop()


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """A local 3-node KRaft cluster (:class:`ops.infra.KafkaCluster`: replication factor 3,
    ``min.insync.replicas`` 2, 256 MB heaps) on ports ``29400..29405`` + the offset, state under
    ``.feedpipe-test/kafka-cluster``, wiped at start, stopped at session end. Beside the
    single-broker fixture; nothing is exported to the environment (tests pass
    ``cluster.bootstrap`` themselves). Tests may kill and restart its nodes."""
    cluster = KafkaCluster(TEST_STATE_DIR, port=TEST_CLUSTER_PORT, lib=ensure_jars(DEV_STATE_DIR))
    cluster.stop()  # leftover from an interrupted session
    cluster.wipe_data()
    cluster.start(timeout_s=180)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """URL of a node of a local Redis Cluster (three masters, no replicas, local processes from
    TEST_REDIS_CLUSTER_PORT on, wiped first), e.g. redis://127.0.0.1:26382/0; stopped at
    session end. Nothing is exported (``redis_url`` does that in cluster mode): a test builds
    its clients with ``cluster=True`` (feedpipe.store.client)."""
    nodes = RedisClusterNodes(TEST_STATE_DIR, port=TEST_REDIS_CLUSTER_PORT)
    nodes.stop()
    nodes.wipe_data()
    url = nodes.start()
    try:
        yield url
    finally:
        nodes.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a real Redis (env, testcontainers or local process), e.g. redis://127.0.0.1:26379/0;
    the ``redis_cluster_url`` when FEEDPIPE_TEST_REDIS_CLUSTER=1 (module docstring)."""
    mp = pytest.MonkeyPatch()
    if "FEEDPIPE_STATE_DIR" not in os.environ:
        _export(mp, "FEEDPIPE_STATE_DIR", str(TEST_STATE_DIR))
    try:
        env = os.environ.get("FEEDPIPE_REDIS_URL")
        if os.environ.get("FEEDPIPE_TEST_REDIS_CLUSTER") == "1":
            url = request.getfixturevalue("redis_cluster_url")
            _export(mp, "FEEDPIPE_REDIS_URL", url)
            _export(mp, "FEEDPIPE_REDIS_CLUSTER", "1")
            yield url
        elif env:
            yield env
        elif _docker_available():
            from testcontainers.community.redis import RedisContainer

            with RedisContainer(REDIS_IMAGE) as container:
                url = (
                    f"redis://{container.get_container_host_ip()}:"
                    f"{container.get_exposed_port(6379)}/0"
                )
                _export(mp, "FEEDPIPE_REDIS_URL", url)
                yield url
        else:
            server = RedisServer(TEST_STATE_DIR, port=TEST_REDIS_PORT)
            server.stop()
            server.wipe_data()
            url = server.start()
            _export(mp, "FEEDPIPE_REDIS_URL", url)
            try:
                yield url
            finally:
                server.stop()
    finally:
        mp.undo()
        settings_module.settings.cache_clear()


@pytest.fixture(scope="session")
def topics_applied(kafka_bootstrap: str) -> list[TopicChange]:
    """Creates/aligns every topology.yaml topic on the session broker; returns the applied plan.
    Fails the session's users when a topic cannot be aligned (an ``error`` change)."""
    changes = apply(topology(), admin_client(kafka_bootstrap), timeout_s=60)
    errors = [c for c in changes if c.is_error]
    if errors:
        pytest.fail(f"topics cannot match topology.yaml:\n{format_changes(errors)}")
    return changes


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the session Redis, database flushed (FLUSHDB) before the test."""
    client: redis.Redis = sync_client(redis_url)  # a RedisCluster on a cluster
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``settings().data_dir`` (the shared real data, read in place); fails when missing."""
    path = settings_module.settings().data_dir
    if not path.is_dir():
        pytest.fail(
            f"data directory {path} does not exist: set FEEDPIPE_DATA_DIR to the shared data "
            "(../shared/data beside the checkout; see its README.md)"
        )
    return path
