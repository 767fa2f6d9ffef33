"""A local Redis server (the system ``redis-server`` binary) with its state under
``<state_dir>/redis``.

Persistence: append-only file on (``appendonly yes``, fsync every second, Redis' default), RDB
snapshots off (``save ""``). A stop (SIGTERM: Redis flushes the AOF and exits) and a start keep
the data, like the Kafka broker keeps its topics, so ``feedpipe down`` then ``feedpipe up``
serves the same feeds; ``feedpipe down --wipe`` deletes it.

Layout under ``<state_dir>/redis/``: ``appendonlydir/`` (data), ``redis.log``, ``redis.pid``.

:class:`RedisClusterNodes`: a local Redis Cluster of three masters (``--cluster-enabled yes``,
no replicas) from the same binary, each node a :class:`RedisServer` under
``<state_dir>/redis-cluster/<port>/`` (with its ``nodes.conf``), the slots assigned once with
``redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import redis

from ops.infra._proc import (
    InfraError,
    ManagedProcess,
    port_open,
    read_pid,
    spawn,
    stop_all,
    wait_ready,
)

_FALLBACK = Path("/usr/bin/redis-server")
BUS_PORT_SHIFT = 20
"""A cluster node's bus port is its port + this (Redis' default, + 10000, would leave the
port range the node's owner chose)."""


def redis_server_binary() -> str:
    """Path of ``redis-server`` (PATH first, then /usr/bin).

    Raises:
        InfraError: not installed; the message says how to install it.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    if _FALLBACK.is_file():
        return str(_FALLBACK)
    raise InfraError(
        "redis-server not found on PATH or in /usr/bin: "
        "install with apt-get install -y redis-server"
    )


def redis_answers(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> bool:
    """True when a Redis server at host:port answers PING within ``timeout_s`` seconds."""
    client = redis.Redis(
        host=host, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer(ManagedProcess):
    """``redis-server`` on 127.0.0.1:``port`` with data in ``<state_dir>/redis``.

    Args:
        state_dir: feedpipe state directory (``settings().state_dir`` or a test directory).
        port: TCP port (URL ``redis://127.0.0.1:<port>/0``).
        cluster: start it as a Redis Cluster node (``--cluster-enabled yes``; its
            ``nodes.conf`` in its home; cluster bus on ``port +`` :data:`BUS_PORT_SHIFT`),
            for :class:`RedisClusterNodes`.
        home: its directory (default ``<state_dir>/redis``).
    """

    def __init__(
        self, state_dir: Path, port: int = 16379, cluster: bool = False, home: Path | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.cluster = cluster
        self.home = home if home is not None else self.state_dir / "redis"
        self.pid_file = self.home / "redis.pid"
        self.log_file = self.home / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _marker(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        """Pid of this server (from the pid file) when alive, else None."""
        return read_pid(self.pid_file, self._marker())

    def is_running(self) -> bool:
        """True when the process from the pid file is alive and answers PING."""
        return self.pid() is not None and redis_answers(self.port)

    def start(self, timeout_s: float = 20) -> str:
        """Start the server (or find it running) and wait for PING.

        Returns:
            The Redis URL, ``redis://127.0.0.1:<port>/0``.

        Raises:
            InfraError: redis-server missing, the port is used by another process, the server
                exited, or it did not answer within ``timeout_s`` seconds (with the log tail).
        """
        pid = self.pid()
        if pid is None:
            if port_open("127.0.0.1", self.port):
                raise InfraError(
                    f"port {self.port} on 127.0.0.1 is in use by a process that is not this "
                    f"Redis ({self.home}); stop it or choose another port (FEEDPIPE_REDIS_URL)"
                )
            binary = redis_server_binary()
            self.home.mkdir(parents=True, exist_ok=True)
            args = [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.home),
                "--daemonize",
                "no",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--logfile",
                str(self.log_file),
            ]
            if self.cluster:
                args += [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "5000",
                    "--cluster-port", str(self.port + BUS_PORT_SHIFT),
                ]
            self._proc = spawn(args, self.home, self.home / "stdout.log", self.pid_file)
            pid = self._proc.pid
        self.await_serving(
            pid,
            lambda: redis_answers(self.port, timeout_s=0.5),
            timeout_s,
            f"redis-server on port {self.port}",
            [self.log_file, self.home / "stdout.log"],
        )
        return self.url

    def wipe_data(self) -> None:
        """Delete the server's data and logs. Stop it first.

        Raises:
            InfraError: the server is still running.
        """
        if self.pid() is not None:
            raise InfraError(f"Redis in {self.home} is running; stop it before wiping")
        shutil.rmtree(self.home, ignore_errors=True)


CLUSTER_MASTERS = 3
"""Masters of the local Redis Cluster (the smallest cluster redis-cli creates)."""


def _cluster_info(port: int) -> dict[str, str]:
    client = redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        raw: Any = client.execute_command("CLUSTER INFO")
    except (redis.RedisError, OSError):
        return {}
    finally:
        client.close()
    if isinstance(raw, dict):  # redis-py parses the reply
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class RedisClusterNodes:
    """A local Redis Cluster: :data:`CLUSTER_MASTERS` masters on 127.0.0.1, ports ``port`` ..
    ``port + 2``, no replicas; data under ``<state_dir>/redis-cluster/<port>/``. Has the
    interface of :class:`RedisServer` (``start``, ``stop``, ``pid``, ``is_running``,
    ``wipe_data``, ``url``), so :class:`ops.infra.LocalStack` and the test fixtures use either.

    Args:
        state_dir: feedpipe state directory.
        port: the first node's port (the URL's; clients discover the others).
    """

    def __init__(self, state_dir: Path, port: int = 16379) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.home = self.state_dir / "redis-cluster"
        self.nodes = [
            RedisServer(state_dir, port + i, cluster=True, home=self.home / str(port + i))
            for i in range(CLUSTER_MASTERS)
        ]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (the first node; use with FEEDPIPE_REDIS_CLUSTER=1)."""
        return self.nodes[0].url

    def pid(self) -> int | None:
        """Pid of the first node when every node is alive, else None."""
        pids = [n.pid() for n in self.nodes]
        return pids[0] if all(p is not None for p in pids) else None

    def is_running(self) -> bool:
        """True when every node runs and the cluster state is ``ok``."""
        return all(n.is_running() for n in self.nodes) and self.healthy()

    def healthy(self) -> bool:
        """True when every node reports ``cluster_state:ok`` with all 16384 slots assigned."""
        for n in self.nodes:
            info = _cluster_info(n.port)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_assigned") != "16384":
                return False
        return True

    def start(self, timeout_s: float = 30) -> str:
        """Start the nodes (or find them running), assign the slots when no node has any
        (``redis-cli --cluster create``), and wait until every node reports the cluster ok.

        Returns:
            The URL of the first node.

        Raises:
            InfraError: a node did not start, redis-cli is missing or failed, or the cluster
                was not ok within ``timeout_s`` seconds.
        """
        for n in self.nodes:
            n.start()
        if _cluster_info(self.port).get("cluster_slots_assigned", "0") == "0":
            cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
            if not Path(cli).is_file():
                raise InfraError("redis-cli not found: install with apt-get install -y redis-tools")
            done = subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=60,
            )
            if done.returncode != 0:
                raise InfraError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        wait_ready(
            self.healthy,
            timeout_s,
            interval_s=0.2,
            failed=lambda _: (
                f"Redis Cluster on ports {self.port}-{self.port + CLUSTER_MASTERS - 1} not ok "
                f"within {timeout_s:.0f} s: {_cluster_info(self.port)}"
            ),
        )
        return self.url

    def stop(self, timeout_s: float = 30) -> bool:
        """Stop every node, all at once (:func:`~ops.infra._proc.stop_all`); True when one
        was running."""
        return stop_all(self.nodes, timeout_s)

    def wipe_data(self) -> None:
        """Delete every node's data and ``nodes.conf``. Stop them first.

        Raises:
            InfraError: a node is still running.
        """
        for n in self.nodes:
            n.wipe_data()
        shutil.rmtree(self.home, ignore_errors=True)
