"""A local 3-node Apache Kafka KRaft cluster from the same pinned jars as the single broker.

Every node is a combined broker+controller (:class:`~ops.infra.kafka.KafkaBroker` with a
:class:`~ops.infra.kafka.ClusterNode`) in a static controller quorum of all nodes, so the
cluster keeps a metadata quorum and a leader for every partition with one node down. Internal
topics (consumer offsets, transactions) have replication factor ``replication`` and every
topic's broker default is ``min.insync.replicas = min_isr``: with 3 and 2, an ``acks=all``
write is acknowledged only once two replicas have it, so killing any one broker loses no
acknowledged record and leaves producers able to write.

Node ``i`` (1-based) listens on ``port + 2 (i - 1)`` (clients) and the port after it
(controller); its state is ``<state_dir>/kafka-cluster/node-<i>/`` (same layout as the single
broker's ``<state_dir>/kafka/``) and the jars are the single broker's ``<state_dir>/kafka/lib``.
Heaps are small (:data:`NODE_HEAP`): the cluster shares a development machine.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from ops.infra._proc import InfraError, stop_all, wait_ready
from ops.infra.kafka import ClusterNode, KafkaBroker, _cluster_id, broker_answers, lib_dir

NODE_HEAP = "256M"  # -Xmx/-Xms per node; enough for test and development traffic
CLUSTER_DIR = "kafka-cluster"


class KafkaCluster:
    """``brokers`` KRaft nodes on 127.0.0.1 (see the module docstring).

    Args:
        state_dir: feedpipe state directory; nodes live under ``<state_dir>/kafka-cluster``.
        port: client port of node 1 (node i: ``port + 2 (i - 1)``, controller one above).
        brokers: number of nodes (3 for a quorum that survives one loss).
        replication: replication factor of internal topics and the brokers' default.
        min_isr: ``min.insync.replicas`` default of every topic.
        lib: jar directory (default ``<state_dir>/kafka/lib``).

    Raises:
        InfraError: (from the constructor) ``min_isr`` > ``replication`` or ``replication`` >
            ``brokers``.
    """

    def __init__(
        self,
        state_dir: Path,
        port: int = 19092,
        brokers: int = 3,
        replication: int = 3,
        min_isr: int = 2,
        lib: Path | None = None,
    ) -> None:
        if not 1 <= min_isr <= replication <= brokers:
            raise InfraError(
                f"need 1 <= min.insync.replicas ({min_isr}) <= replication ({replication}) "
                f"<= brokers ({brokers})"
            )
        self.state_dir = Path(state_dir)
        self.home = self.state_dir / CLUSTER_DIR
        self.port = port
        self.replication = replication
        self.min_isr = min_isr
        self._lib = (Path(lib) if lib is not None else lib_dir(self.state_dir)).resolve()
        ports = [(port + 2 * i, port + 2 * i + 1) for i in range(brokers)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        cid = self._cluster_id()
        self.nodes = [
            KafkaBroker(
                self.state_dir, port=p, controller_port=c, lib=self._lib,
                node=ClusterNode(
                    node_id=i + 1, voters=voters, cluster_id=cid,
                    home=self.home / f"node-{i + 1}", replication=replication,
                    min_isr=min_isr, heap=NODE_HEAP,
                ),
            )
            for i, (p, c) in enumerate(ports)
        ]

    def _cluster_id(self) -> str:
        """The id every node formats with: the one in ``cluster.id`` (written on the first
        start, so a restart reuses it), else a new one."""
        try:
            return (self.home / "cluster.id").read_text().strip()
        except OSError:
            return _cluster_id()

    @property
    def lib(self) -> Path:
        """The jar directory every node runs from."""
        return self._lib

    @lib.setter
    def lib(self, value: Path) -> None:
        self._lib = Path(value).resolve()
        for n in self.nodes:
            n.lib = self._lib

    @property
    def bootstrap(self) -> str:
        """Client bootstrap servers: every node, ``127.0.0.1:<p1>,127.0.0.1:<p2>,...``."""
        return ",".join(n.bootstrap for n in self.nodes)

    def pid(self) -> int | None:
        """Pid of the first running node, or None when no node runs."""
        return next((p for p in (n.pid() for n in self.nodes) if p is not None), None)

    def pids(self) -> list[int | None]:
        """Pid of each node (None when stopped), in node order."""
        return [n.pid() for n in self.nodes]

    def is_running(self) -> bool:
        """True when every node runs and accepts connections."""
        return all(n.is_running() for n in self.nodes)

    def start(self, timeout_s: float = 120) -> str:
        """Launch every stopped node, then wait until each serves metadata and the cluster
        lists all its brokers.

        Returns:
            :attr:`bootstrap`.

        Raises:
            InfraError: a node failed to start (see :meth:`KafkaBroker.start`), or the cluster
                did not show every broker within ``timeout_s`` seconds.
        """
        if not any(self._lib.glob("kafka_2.13-*.jar")):
            raise InfraError(f"no Kafka jars in {self._lib}; run `python -m ops.infra jars`")
        cid_file = self.home / "cluster.id"
        if not cid_file.is_file():
            cid_file.parent.mkdir(parents=True, exist_ok=True)
            cid = self.nodes[0].node.cluster_id if self.nodes[0].node else _cluster_id()
            cid_file.write_text(cid + "\n")
        for n in self.nodes:
            n.launch()
        deadline = time.monotonic() + timeout_s
        for n in self.nodes:
            n.wait_ready(max(1.0, deadline - time.monotonic()))
        wait_ready(
            self._all_registered,
            max(1.0, deadline - time.monotonic()),
            interval_s=0.5,
            failed=lambda _: (
                f"Kafka cluster on {self.bootstrap}: not every broker registered within "
                f"{timeout_s:.0f} s; see {self.home}/node-*/logs/server.log"
            ),
        )
        return self.bootstrap

    def _all_registered(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if not broker_answers(self.nodes[0].bootstrap):
            return False
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        try:
            return len(admin.list_topics(timeout=3).brokers) == len(self.nodes)
        except Exception:  # KafkaException while a node is still joining
            return False

    def stop(self, timeout_s: float = 30) -> bool:
        """Stop every node (SIGTERM, SIGKILL after ``timeout_s`` s), all at once so none waits
        on a controller that already left (:func:`~ops.infra._proc.stop_all`). True when a
        node was running."""
        return stop_all(self.nodes, timeout_s)

    def wipe_data(self) -> None:
        """Delete every node's data, logs and the cluster id (keeps the jars).

        Raises:
            InfraError: a node is still running.
        """
        if self.pid() is not None:
            raise InfraError(f"Kafka cluster in {self.home} is running; stop it before wiping")
        shutil.rmtree(self.home, ignore_errors=True)
        cid = self._cluster_id()
        for n in self.nodes:
            assert n.node is not None
            n.node = dataclasses.replace(n.node, cluster_id=cid)
