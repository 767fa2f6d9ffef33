"""A local single-node Apache Kafka broker (KRaft, combined broker+controller) run from jars.

No Docker and no Kafka distribution: ``infra/kafka/pom.xml`` pins ``org.apache.kafka:kafka_2.13``
and Maven copies it and its runtime dependencies into ``<state_dir>/kafka/lib``. The broker runs
``java ... kafka.Kafka server.properties`` (what ``kafka-server-start.sh`` does) after a one-time
``kafka.tools.StorageTool format --standalone`` (what ``kafka-storage.sh format`` does).
The same class runs each node of the 3-node cluster (:mod:`ops.infra.kafka_cluster`), given a
:class:`ClusterNode`: a static controller quorum, formatted without ``--standalone``.

Layout under ``<state_dir>/kafka/``::

    lib/                 jars + .kafka-version marker (kept by LocalStack.wipe)
    data/                log.dirs (topics, KRaft metadata); formatted on the first start only
    logs/server.log      broker log (Log4j 2)
    logs/stdout.log      JVM stdout/stderr
    server.properties    written on every start
    log4j2.properties    written on every start
    kafka.pid            pid of the running JVM (its own session / process group)

Needs Java 17+ (Kafka 4.x broker requirement) and, for the first fetch, Maven.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from ops.infra._proc import (
    InfraError,
    ManagedProcess,
    port_open,
    read_pid,
    spawn,
    tail,
)

POM_PATH = Path(__file__).resolve().parent.parent.parent / "infra" / "kafka" / "pom.xml"
HEAP = "1G"  # -Xmx/-Xms; field notes: 1 GB is plenty for a single dev/test node
_MARKER = ".kafka-version"


def pinned_version(pom: Path = POM_PATH) -> str:
    """The ``<kafka.version>`` pinned in ``pom`` (e.g. '4.4.0').

    Raises:
        InfraError: the pom is missing or has no ``kafka.version`` property.
    """
    try:
        text = pom.read_text(encoding="utf-8")
    except OSError as exc:
        raise InfraError(f"cannot read {pom}: {exc}") from exc
    m = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", text)
    if not m:
        raise InfraError(f"{pom}: no <kafka.version> property")
    return m.group(1)


def _marker_text(pom: Path) -> str:
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    return f"kafka.version={pinned_version(pom)}\npom.sha256={digest}\n"


def lib_dir(state_dir: Path) -> Path:
    """Where :func:`ensure_jars` puts the jars for ``state_dir``: ``<state_dir>/kafka/lib``."""
    return Path(state_dir) / "kafka" / "lib"


def ensure_jars(state_dir: Path, pom: Path = POM_PATH) -> Path:
    """Fetch the pinned broker jars into ``<state_dir>/kafka/lib`` unless already there.

    Skips Maven when the marker file ``lib/.kafka-version`` matches the pom (version and
    sha256) and ``kafka_2.13-<version>.jar`` is present. Otherwise runs
    ``mvn -q -B -f <pom> dependency:copy-dependencies -DincludeScope=runtime`` into a temporary
    directory and swaps it in (about 7 s with a warm network; ~45 jars, ~43 MB).

    Returns:
        The lib directory (use ``<lib>/*`` as the Java class path).

    Raises:
        InfraError: Maven is missing or failed (its output is in the message).
    """
    lib = lib_dir(state_dir)
    version = pinned_version(pom)
    marker = lib / _MARKER
    want = _marker_text(pom)
    if (
        marker.is_file()
        and marker.read_text() == want
        and (lib / f"kafka_2.13-{version}.jar").is_file()
    ):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(
            "Maven (mvn) is needed once to fetch the Kafka broker jars: "
            "install with apt-get install -y maven openjdk-17-jre-headless"
        )
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.parent / "lib.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or not (tmp / f"kafka_2.13-{version}.jar").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise InfraError(
            f"fetching Kafka {version} jars failed (exit {res.returncode}): {' '.join(cmd)}\n"
            f"{res.stdout[-2000:]}{res.stderr[-2000:]}"
        )
    (tmp / _MARKER).write_text(want)
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    return lib


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise InfraError(
            "Java 17+ is needed for the local Kafka broker: "
            "install with apt-get install -y openjdk-17-jre-headless"
        )
    return java


def _cluster_id() -> str:
    """A random KRaft cluster id: a UUID as 22 base64url characters (as Kafka's Uuid does,
    re-drawn when it would start with '-', which command lines mistake for an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a Kafka broker at ``bootstrap`` returns cluster metadata within ``timeout_s``."""
    host, _, port = bootstrap.rpartition(":")
    if not port_open(host or "127.0.0.1", int(port), timeout_s=min(timeout_s, 1.0)):
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    try:
        md = admin.list_topics(timeout=timeout_s)
    except Exception:  # KafkaException while the broker is still coming up
        return False
    return bool(md.brokers)


@dataclass(frozen=True)
class ClusterNode:
    """A broker's place in a KRaft cluster of combined broker+controller nodes.

    Attributes:
        node_id: ``node.id`` (1..n).
        voters: ``controller.quorum.voters``, e.g. ``1@127.0.0.1:19093,2@127.0.0.1:19095``
            (a static quorum: every node formats its storage with the same cluster id and no
            ``--standalone``).
        cluster_id: the KRaft cluster id shared by every node.
        home: the node's directory (data, logs, properties, pid file).
        replication: replication factor of the internal topics (offsets, transactions).
        min_isr: ``min.insync.replicas`` (broker default for every topic) and the transaction
            log's min ISR.
        heap: JVM ``-Xmx``/``-Xms``.
    """

    node_id: int
    voters: str
    cluster_id: str
    home: Path
    replication: int
    min_isr: int
    heap: str = "256M"


class KafkaBroker(ManagedProcess):
    """A single-node KRaft broker on 127.0.0.1 with its state under ``<state_dir>/kafka``.

    Args:
        state_dir: feedpipe state directory (``settings().state_dir`` or a test directory).
        port: PLAINTEXT client port (bootstrap is ``127.0.0.1:<port>``).
        controller_port: KRaft CONTROLLER listener port.
        lib: jar directory; default ``<state_dir>/kafka/lib`` (fetched by :func:`ensure_jars`
            on start when it is the default and missing). Pass another state dir's lib to share
            jars (the tests do).
        node: this broker's place in a multi-node cluster (:class:`ClusterNode`, used by
            :class:`ops.infra.kafka_cluster.KafkaCluster`); None for the single combined node.

    Topic auto-creation is off: topics come from topology.yaml (``feedpipe topics apply``).
    """

    def __init__(
        self,
        state_dir: Path,
        port: int = 19092,
        controller_port: int = 19093,
        lib: Path | None = None,
        node: ClusterNode | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.controller_port = controller_port
        self.node = node
        self.home = self.state_dir / "kafka" if node is None else node.home
        self.lib = Path(lib) if lib is not None else lib_dir(self.state_dir)
        self.data_dir = self.home / "data"
        self.log_dir = self.home / "logs"
        self.pid_file = self.home / "kafka.pid"
        self.properties_file = self.home / "server.properties"
        self.log4j_file = self.home / "log4j2.properties"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Client bootstrap servers, ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        """Pid of this broker's running JVM (from the pid file), or None."""
        return read_pid(self.pid_file, str(self.properties_file))

    def is_running(self) -> bool:
        """True when the JVM from the pid file is alive and the client port accepts connections."""
        return self.pid() is not None and port_open("127.0.0.1", self.port)

    def _server_properties(self) -> str:
        n = self.node
        rf, isr = (str(n.replication), str(n.min_isr)) if n is not None else ("1", "1")
        quorum = (
            {"controller.quorum.voters": n.voters}
            if n is not None
            else {"controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}"}
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": str(n.node_id) if n is not None else "1",
            **quorum,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        lines = ["# written by ops.infra.kafka on every start; edits are overwritten"]
        lines += [f"{k}={v}" for k, v in props.items()]
        return "\n".join(lines) + "\n"

    def _log4j_properties(self) -> str:
        log = self.log_dir / "server.log"
        return (
            "status = warn\n"
            "appender.file.type = RollingFile\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {log}\n"
            f"appender.file.filePattern = {log}.%i\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "appender.file.policies.type = Policies\n"
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
            "appender.file.policies.size.size = 50MB\n"
            "appender.file.strategy.type = DefaultRolloverStrategy\n"
            "appender.file.strategy.max = 3\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.kafka.name = kafka\n"
            "logger.kafka.level = INFO\n"
            "logger.statechange.name = state.change.logger\n"
            "logger.statechange.level = WARN\n"
        )

    def _formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    def _format(self, java: str) -> None:
        cmd = [
            java,
            "-Xmx256M",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp",
            f"{self.lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id() if self.node is None else self.node.cluster_id,
            "-c",
            str(self.properties_file),
        ]
        if self.node is None:
            cmd.append("--standalone")
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.home)
        if res.returncode != 0:
            raise InfraError(
                f"formatting Kafka storage in {self.data_dir} failed (exit {res.returncode}):\n"
                f"{res.stdout[-2000:]}{res.stderr[-2000:]}"
            )

    def start(self, timeout_s: float = 60) -> str:
        """Start the broker (or find it running) and wait until it serves metadata.

        Formats storage on the first start only; later starts reuse ``data/`` (topics and
        offsets survive a stop). Returns immediately when this broker already runs.

        Returns:
            The bootstrap servers string, ``127.0.0.1:<port>``.

        Raises:
            InfraError: Java or jars missing, the port is taken by another process, formatting
                failed, the JVM exited, or it did not answer within ``timeout_s`` seconds (the
                message carries the tail of ``logs/server.log``).
        """
        self.launch()
        return self.wait_ready(timeout_s)

    def launch(self) -> int:
        """Spawn the broker's JVM unless it runs (formatting storage on the first start) and
        return its pid without waiting for it to serve: the nodes of a cluster are launched
        together, since none answers before a quorum of controllers runs.

        Raises:
            InfraError: Java or jars missing, the port is taken, or formatting failed.
        """
        pid = self.pid()
        if pid is None:
            if port_open("127.0.0.1", self.port) or port_open("127.0.0.1", self.controller_port):
                raise InfraError(
                    f"port {self.port} or {self.controller_port} on 127.0.0.1 is in use by a "
                    f"process that is not this broker ({self.home}); stop it or choose other "
                    "ports (FEEDPIPE_KAFKA_BOOTSTRAP)"
                )
            java = _java()
            if self.lib == lib_dir(self.state_dir):
                ensure_jars(self.state_dir)
            elif not any(self.lib.glob("kafka_2.13-*.jar")):
                raise InfraError(
                    f"no Kafka jars in {self.lib}; run `python -m ops.infra jars`"
                )
            for d in (self.home, self.data_dir, self.log_dir):
                d.mkdir(parents=True, exist_ok=True)
            self.properties_file.write_text(self._server_properties())
            self.log4j_file.write_text(self._log4j_properties())
            if not self._formatted():
                self._format(java)
            heap = HEAP if self.node is None else self.node.heap
            args = [
                java,
                f"-Xmx{heap}",
                f"-Xms{heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.log4j_file}",
                f"-Dkafka.logs.dir={self.log_dir}",
                "-cp",
                f"{self.lib}/*",
                "kafka.Kafka",
                str(self.properties_file),
            ]
            self._proc = spawn(args, self.home, self.log_dir / "stdout.log", self.pid_file)
            pid = self._proc.pid
        return pid

    def wait_ready(self, timeout_s: float = 60) -> str:
        """Wait until the launched broker serves metadata; return its bootstrap address.

        Raises:
            InfraError: the JVM exited, or it did not answer within ``timeout_s`` seconds
                (the message carries the tail of ``logs/server.log``).
        """
        pid = self.pid()
        if pid is None:
            raise InfraError(
                f"Kafka broker in {self.home} is not running; last log lines:\n"
                f"{tail(self.log_dir / 'server.log')}\n{tail(self.log_dir / 'stdout.log', 10)}"
            )
        self.await_serving(
            pid,
            lambda: broker_answers(self.bootstrap, timeout_s=2.0),
            timeout_s,
            f"Kafka broker on {self.bootstrap}",
            [self.log_dir / "server.log", self.log_dir / "stdout.log"],
            interval_s=0.3,
        )
        return self.bootstrap

    def wipe_data(self) -> None:
        """Delete the broker's data and logs (keeps the jars). Stop the broker first.

        Raises:
            InfraError: the broker is still running.
        """
        if self.pid() is not None:
            raise InfraError(f"Kafka broker in {self.home} is running; stop it before wiping")
        for d in (self.data_dir, self.log_dir):
            shutil.rmtree(d, ignore_errors=True)
        for f in (self.properties_file, self.log4j_file):
            f.unlink(missing_ok=True)
