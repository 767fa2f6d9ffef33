"""The faults the suite injects, one function per scenario (see :mod:`ops.faults`).

Each takes the running suite (:class:`Harness`), its workers (the list may be changed: a killed
worker is replaced), the workers' environment and app id, and returns the poison records it
produced per topic (empty for every scenario but ``poison``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol

import orjson

from feedpipe.settings import ROOT
from feedpipe.topology import topology
from ops.faults.drivers import FaultConfig, Worker
from ops.faults.inputs import WP_DELAY_S, WP_POSTS, poison_records, poison_topics, wp_posts
from ops.faults.reads import consume, raw_cms_of
from ops.infra import LocalStack

REDIS_OUTAGE_S = 30.0  # how long the redis-outage scenario keeps Redis stopped


class Harness(Protocol):
    """What a fault needs of the suite (:class:`ops.faults.suite.Suite`)."""

    config: FaultConfig
    stack: LocalStack
    bootstrap: str
    redis_url: str
    data_dir: Path
    post_checks: list[Callable[[], tuple[int, int, str]]]

    def log(self, line: str) -> None:
        """Print a progress line."""

    def worker(self, env: Mapping[str, str], app_id: str, name: str) -> Worker:
        """Start a worker and return it once it answers."""

    def alive(self, workers: Sequence[Worker]) -> None:
        """Raise when a worker the scenario did not kill has exited."""


Fault = Callable[[Harness, list[Worker], Mapping[str, str], str], dict[str, int]]


def worker_kill(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """SIGKILL the worker mid-batch, start a new one at once."""
    workers[0].kill9()
    workers[0] = h.worker(env, app_id, "w0")
    return {}


def rebalance(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """Second worker joins (rebalance); wait 10 s; SIGKILL the first: the survivor takes
    all partitions after the session timeout; then the first is restarted."""
    workers.append(h.worker(env, app_id, "w1"))
    time.sleep(10)
    workers[0].kill9()
    time.sleep(15)  # > session timeouts (10 s): the survivor owns everything
    workers[0] = h.worker(env, app_id, "w0")
    return {}


def broker_restart(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """SIGTERM the Kafka broker, wait 5 s, start it again on the same data.

    Raises:
        RuntimeError: a worker died with the broker (with its log tail).
    """
    h.stack.kafka.stop(timeout_s=30)
    time.sleep(5)
    h.stack.kafka.start(timeout_s=90)
    for w in workers:
        if w.proc is not None and w.proc.poll() is not None:
            raise RuntimeError(f"worker {w.name} died with the broker:\n{w.tail()}")
    return {}


def redis_outage(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """SIGTERM redis-server, keep it down :data:`REDIS_OUTAGE_S` s, start it again (its
    append-only file keeps the data, as a production Redis with AOF would)."""
    h.stack.redis.stop(timeout_s=30)
    time.sleep(REDIS_OUTAGE_S)
    h.stack.redis.start()
    h.alive(workers)
    return {}


def redis_flush(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """The redis-outage fault, then ``FLUSHALL``, then ``feedpipe rebuild`` (a process).

    Raises:
        RuntimeError: the rebuild process failed (its log path given).
    """
    from feedpipe.store.client import sync_client

    redis_outage(h, workers, env, app_id)
    sync_client(h.redis_url).flushall()
    h.log("  FLUSHALL done; feedpipe rebuild")
    log = h.config.state_dir / "logs" / f"rebuild-{app_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "ops.cli", "rebuild"], cwd=ROOT,
            env={**os.environ, **env, "COLUMNS": "120"}, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, timeout=h.config.drain_timeout_s,
        )
    if done.returncode != 0:
        raise RuntimeError(f"feedpipe rebuild failed ({done.returncode}); log: {log}")
    h.alive(workers)
    return {}


def connector_kill(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """A ``feedpipe connect`` process paginates the simulated WordPress API; SIGKILL it after
    a third of the pages, restart it; wait until every post is in the CMS ingest topic, then
    stop it. The check after the drain (``cms_lost`` / ``cms_doubled``) reads Redis and the
    enrich stage's content output.

    Raises:
        RuntimeError: the connector did not paginate, or posts never reached the ingest topic.
    """
    from connectors.simulator import FixtureServer

    name = f"faults-wp-{app_id[-8:]}"
    posts = wp_posts(h.data_dir, WP_POSTS)
    server = FixtureServer().__enter__()
    server.wp_posts = posts
    cfg = {"sources": [{
        "name": name, "kind": "wordpress", "brand": "frontity", "url": f"{server.base}/wp-json",
        "schedule_s": 1.0, "page_size": 5, "per_host_rps": 50.0,
        "cursor_dir": str(h.config.state_dir / "cursors" / app_id),
    }]}
    path = h.config.state_dir / f"connectors-{app_id}.yaml"
    path.write_bytes(orjson.dumps(cfg))  # JSON is YAML
    from connectors.simulator import Fault

    server.fault("/wp-json/wp/v2/posts", Fault("sleep", sleep_s=WP_DELAY_S,
                                                when=lambda q: True, times=10**6))
    log = h.config.state_dir / "logs" / f"connect-{app_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)

    def spawn() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "ops.cli", "connect", name, "--config", str(path)],
                cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    first = spawn()
    pages = -(-WP_POSTS // 5)
    deadline = time.monotonic() + 60
    while len(server.requests_to("/wp-json/wp/v2/posts")) < pages // 3:
        if time.monotonic() > deadline or first.poll() is not None:
            raise RuntimeError(f"the connector did not paginate; log: {log}")
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    killed_at = len(server.requests_to("/wp-json/wp/v2/posts"))
    second = spawn()
    try:
        want = {str(p["id"]) for p in posts}
        deadline = time.monotonic() + 120
        while True:
            got = {r.get("source_id") for r in raw_cms_of(h.bootstrap, name)}
            if want <= got:
                break
            if time.monotonic() > deadline or second.poll() is not None:
                raise RuntimeError(
                f"{len(want - got)} posts never reached {topology().ingest.cms}; log: {log}"
            )
            time.sleep(1.0)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(second.pid, signal.SIGTERM)
        second.wait(30)
        server.__exit__(None, None, None)
    h.post_checks.append(lambda: _check_cms(h, name, posts, killed_at))
    return {}


def _check_cms(
    h: Harness, source: str, posts: Sequence[Mapping[str, Any]], killed_at: int
) -> tuple[int, int, str]:
    """(posts missing from Redis, extra records on the enrich stage's content output, detail)
    of the connector-kill scenario."""
    from feedpipe.ids import content_id
    from feedpipe.store.client import sync_client
    from feedpipe.store.keys import keys

    enriched = topology().stages["enrich"].output("content")
    r = sync_client(h.redis_url)
    k = keys()
    ids = [content_id(source, str(p["id"])) for p in posts]
    present = sum(1 for raw in r.mget([k.content(c) for c in ids]) if raw)
    wanted = set(ids)
    per_item: Counter[str] = Counter()
    for key, value in consume(h.bootstrap, enriched):
        if value is not None and key is not None and key.decode() in wanted:
            per_item[key.decode()] += 1
    raw = raw_cms_of(h.bootstrap, source)
    dup_raw = len(raw) - len({x["event_id"] for x in raw})
    return (
        len(ids) - present,
        sum(n - 1 for n in per_item.values() if n > 1),
        f"connector killed after {killed_at} requests; {topology().ingest.cms} {len(raw)} "
        f"records "
        f"({dup_raw} re-sent after the kill, absorbed downstream), "
        f"{len(per_item)} posts in {enriched}, {present} in Redis",
    )


def poison(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """Produce the poison records (:func:`poison_records`) to every consumed topic.

    Raises:
        RuntimeError: a consumed topic has no record to build poison from.
    """
    from feedpipe.kafka.producer import IdempotentProducer

    p = IdempotentProducer(h.bootstrap, client_id="feedpipe-faults-poison",
                           config={"message.max.bytes": 1_000_000})
    sent: dict[str, int] = Counter()
    for topic_name in poison_topics():
        sample = next((v for _, v in consume(h.bootstrap, topic_name, limit=1) if v), None)
        if sample is None:
            raise RuntimeError(f"no record in {topic_name} to build poison from")
        for key, value in poison_records(sample):
            p.produce(topic_name, key, value)
            sent[topic_name] += 1
    try:
        p.flush(60)  # DeliveryError: a poison record was not acknowledged
    finally:
        p.close()
    return dict(sent)


def two_worker_kill(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """Two workers share the partitions from the start (:data:`START_WORKERS`); SIGKILL the
    second mid-stream and do not restart it: the survivor takes its partitions over once the
    group notices (session timeout) and resumes from the last committed offsets."""
    h.alive(workers)
    victim = workers.pop()
    victim.kill9()
    h.log(f"  SIGKILLed worker {victim.name}; {len(workers)} left")
    took = _wait_members(h.bootstrap, app_id, len(workers), timeout_s=60.0)
    h.log(f"  the survivor owns every partition after {took:.1f} s")
    return {}


def _wait_members(bootstrap: str, app_id: str, members: int, timeout_s: float) -> float:
    """Wait until every consumer group of the pipeline is stable with ``members`` members (the
    group noticed a killed one and reassigned its partitions); return the seconds waited.

    Raises:
        RuntimeError: not so within ``timeout_s`` seconds.
    """
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    from feedpipe.kafka.lag import pipeline_groups

    admin = AdminClient({"bootstrap.servers": bootstrap})
    groups = list(pipeline_groups(app_id))
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        with suppress(Exception):  # a group mid-rebalance may not describe
            found = admin.describe_consumer_groups(groups)
            descs = [f.result(timeout=5) for f in found.values()]
            if all(len(d.members) == members and d.state == ConsumerGroupState.STABLE
                   for d in descs):
                return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"groups {groups} not down to {members} member(s) in {timeout_s:.0f} s")


def broker_kill(
    h: Harness, workers: list[Worker], env: Mapping[str, str], app_id: str
) -> dict[str, int]:
    """SIGKILL one node of the 3-broker cluster: the one leading most partitions of the click
    path's input (it holds acknowledged records as leader; with ``min.insync.replicas`` 2 a
    follower has them too). It stays down until the stream has drained; a post-check then
    restarts it and waits until every replica of the pipeline's topics is in sync again.

    Raises:
        RuntimeError: the stack is not the 3-broker cluster, or the chosen node is not running.
    """
    from ops.infra import KafkaCluster

    cluster = h.stack.kafka
    if not isinstance(cluster, KafkaCluster):
        raise RuntimeError("broker-kill needs the 3-broker cluster (--brokers 3)")
    leaders = _leaders(h.bootstrap, topology().stages["clickpath"].input)
    node_id = max(sorted(leaders), key=lambda n: leaders[n]) if leaders else 1
    node = cluster.nodes[node_id - 1]
    pid = node.pid()
    if pid is None:
        raise RuntimeError(f"cluster node {node_id} is not running")
    os.killpg(pid, signal.SIGKILL)
    node.stop(timeout_s=10)  # reaps the JVM and removes its pid file
    h.log(f"  SIGKILLed broker node {node_id} (leader of {leaders.get(node_id, 0)} partitions)")
    h.post_checks.append(lambda: _rejoin(h, node_id, leaders.get(node_id, 0)))
    return {}


def _leaders(bootstrap: str, topic_name: str) -> Counter[int]:
    """Partitions of ``topic_name`` led by each broker id."""
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic_name, timeout=10)
    return Counter(p.leader for p in md.topics[topic_name].partitions.values())


def _rejoin(h: Harness, node_id: int, led: int) -> tuple[int, int, str]:
    """Restart killed node ``node_id`` and wait until every partition of topology.yaml's
    topics has all its replicas in sync; (0, 0, detail) -- the counts are judged elsewhere.

    Raises:
        RuntimeError: the replicas were not back in sync within 120 s.
    """
    from confluent_kafka.admin import AdminClient

    from ops.infra import KafkaCluster

    cluster = h.stack.kafka
    assert isinstance(cluster, KafkaCluster)
    t0 = time.monotonic()
    cluster.nodes[node_id - 1].start(timeout_s=120)
    admin = AdminClient({"bootstrap.servers": h.bootstrap})
    names = list(topology().topics)
    while True:
        md = admin.list_topics(timeout=10)
        short = [
            f"{t}[{pid}]" for t in names for pid, p in md.topics[t].partitions.items()
            if len(p.isrs) < len(p.replicas)
        ]
        if not short:
            break
        if time.monotonic() - t0 > 120:
            raise RuntimeError(f"replicas not in sync 120 s after the restart: {short[:5]}")
        time.sleep(1.0)
    return 0, 0, (
        f"killed node {node_id} (leader of {led} {topology().stages['clickpath'].input} "
        f"partitions) ran 2 of 3 brokers until the drain; restarted, all replicas in sync "
        f"after {time.monotonic() - t0:.1f} s"
    )


START_WORKERS: dict[str, int] = {"two-worker-kill": 2}
"""Workers started before the stream, per scenario (1 when not named)."""

CLUSTER_SCENARIOS = ("broker-kill",)
"""Scenarios that need the 3-broker cluster (``feedpipe faults --brokers 3``)."""

FAULTS: dict[str, Fault] = {
    "worker-kill": worker_kill,
    "two-worker-kill": two_worker_kill,
    "broker-kill": broker_kill,
    "rebalance": rebalance,
    "broker-restart": broker_restart,
    "redis-outage": redis_outage,
    "redis-flush": redis_flush,
    "connector-kill": connector_kill,
    "poison": poison,
}
SCENARIOS = tuple(name for name in FAULTS if name not in CLUSTER_SCENARIOS)
"""The scenarios ``feedpipe faults`` runs by default (on a single broker)."""
