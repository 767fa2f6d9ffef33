"""Local infrastructure without Docker: a single-node Kafka broker or a 3-node KRaft cluster
(jars fetched by Maven, run with Java 17+; :mod:`ops.infra.kafka_cluster`) and a Redis server
(system ``redis-server``), state under ``settings().state_dir``.

:class:`LocalStack` is what ``feedpipe up|down|status`` use; the tests use
:class:`~ops.infra.kafka.KafkaBroker` and :class:`~ops.infra.redis.RedisServer`
directly with their own state directory and ports.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from feedpipe.settings import Settings
from ops.infra._proc import InfraError
from ops.infra.kafka import KafkaBroker, ensure_jars, lib_dir, pinned_version
from ops.infra.kafka_cluster import KafkaCluster
from ops.infra.redis import RedisClusterNodes, RedisServer

__all__ = [
    "InfraError",
    "KafkaBroker",
    "KafkaCluster",
    "LocalStack",
    "RedisClusterNodes",
    "RedisServer",
    "StackStatus",
    "ensure_jars",
    "pinned_version",
]

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _kafka_port(bootstrap: str) -> int:
    first = bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or host not in _LOCAL_HOSTS or not port.isdigit():
        raise InfraError(
            f"FEEDPIPE_KAFKA_BOOTSTRAP={bootstrap!r} is not a local address (127.0.0.1:<port>); "
            "the local stack only runs on this machine"
        )
    return int(port)


def _redis_port(url: str) -> int:
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in _LOCAL_HOSTS:
        raise InfraError(
            f"FEEDPIPE_REDIS_URL={url!r} is not a local redis:// URL (redis://127.0.0.1:<port>/0); "
            "the local stack only runs on this machine"
        )
    return parts.port or 6379


@dataclass(frozen=True)
class StackStatus:
    """What :meth:`LocalStack.status` reports. Pids are None when a service is not running."""

    state_dir: Path
    kafka_bootstrap: str
    kafka_running: bool
    kafka_pid: int | None
    redis_url: str
    redis_running: bool
    redis_pid: int | None

    def __str__(self) -> str:
        def line(name: str, addr: str, up: bool, pid: int | None) -> str:
            return f"{name:<6} {addr:<28} {'running (pid ' + str(pid) + ')' if up else 'stopped'}"

        return "\n".join(
            [
                line("kafka", self.kafka_bootstrap, self.kafka_running, self.kafka_pid),
                line("redis", self.redis_url, self.redis_running, self.redis_pid),
                f"state  {self.state_dir}",
            ]
        )


class LocalStack:
    """Kafka + Redis on this machine, at the ports of ``settings.kafka_bootstrap`` (controller
    port = Kafka port + 1) and ``settings.redis_url`` (with ``settings.redis_cluster``: a
    three-master Redis Cluster from that port on, :class:`RedisClusterNodes`), state in
    ``settings.state_dir``.

    Args:
        settings: where things run.
        brokers: 1 (a single combined node) or 3 (:class:`KafkaCluster`: replication factor
            3, ``min.insync.replicas`` 2; node i on the first bootstrap port + 2 (i - 1)).
            None: the cluster when one runs under the state directory, else the single node
            (so ``feedpipe down`` and ``status`` find what ``up`` started).

    Raises:
        InfraError: (from the constructor) the bootstrap or Redis URL is not a local address.
    """

    def __init__(self, settings: Settings, brokers: int | None = None) -> None:
        self.settings = settings
        self.state_dir = Path(settings.state_dir)
        kport = _kafka_port(settings.kafka_bootstrap)
        cluster = KafkaCluster(self.state_dir, port=kport)
        if brokers is None:
            brokers = len(cluster.nodes) if cluster.pid() is not None else 1
        self.kafka: KafkaBroker | KafkaCluster = (
            KafkaBroker(self.state_dir, port=kport, controller_port=kport + 1)
            if brokers == 1
            else KafkaCluster(self.state_dir, port=kport, brokers=brokers)
        )
        self.redis: RedisServer | RedisClusterNodes = (
            RedisClusterNodes(self.state_dir, port=_redis_port(settings.redis_url))
            if settings.redis_cluster
            else RedisServer(self.state_dir, port=_redis_port(settings.redis_url))
        )

    def start(self, timeout_s: float = 90) -> tuple[str, str]:
        """Start Redis and Kafka (idempotent: running services are left alone), fetching the
        jars first if needed.

        Returns:
            ``(kafka_bootstrap, redis_url)``: the broker's (or every cluster node's) address
            and the settings' Redis URL.

        Raises:
            InfraError: see :meth:`KafkaBroker.start` and :meth:`RedisServer.start`.
        """
        ensure_jars(self.state_dir)
        self.redis.start()
        self.kafka.start(timeout_s=timeout_s)
        return self.kafka.bootstrap, self.settings.redis_url

    def stop(self, timeout_s: float = 30) -> None:
        """Stop Kafka then Redis (each SIGTERM, SIGKILL after ``timeout_s`` s); no-op if stopped."""
        self.kafka.stop(timeout_s=timeout_s)
        self.redis.stop(timeout_s=timeout_s)

    def wipe(self) -> None:
        """Stop both services and delete everything under the state directory except the
        Kafka jars (``kafka/lib``): topics, offsets, Redis data, logs and anything else placed
        there (e.g. Faust table stores)."""
        self.stop()
        if not self.state_dir.is_dir():
            return
        keep = lib_dir(self.state_dir)
        for child in self.state_dir.iterdir():
            if child == keep.parent:
                for sub in child.iterdir():
                    if sub != keep:
                        _remove(sub)
            else:
                _remove(child)

    def status(self) -> StackStatus:
        """Whether each service runs (pid file alive and port answering), with pids."""
        return StackStatus(
            state_dir=self.state_dir,
            kafka_bootstrap=self.kafka.bootstrap,
            kafka_running=self.kafka.is_running(),
            kafka_pid=self.kafka.pid(),
            redis_url=self.settings.redis_url,
            redis_running=self.redis.is_running(),
            redis_pid=self.redis.pid(),
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
