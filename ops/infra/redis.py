"""A local Redis server (the system ``redis-server`` binary) with its state under
``<state_dir>/redis``.

Persistence: append-only file on (``appendonly yes``, fsync every second, Redis' default), RDB
snapshots off (``save ""``). A stop (SIGTERM: Redis flushes the AOF and exits) and a start keep
the data, like the Kafka broker keeps its topics, so ``feedpipe down`` then ``feedpipe up``
serves the same feeds; ``feedpipe down --wipe`` deletes it.

Layout under ``<state_dir>/redis/``: ``appendonlydir/`` (data), ``redis.log``, ``redis.pid``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from ops.infra._proc import InfraError, ManagedProcess, port_open, read_pid, spawn, tail

_FALLBACK = Path("/usr/bin/redis-server")


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
    """

    def __init__(self, state_dir: Path, port: int = 16379) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.home = self.state_dir / "redis"
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
            self._proc = spawn(args, self.home, self.home / "stdout.log", self.pid_file)
            pid = self._proc.pid
        deadline = time.monotonic() + timeout_s
        while True:
            if redis_answers(self.port, timeout_s=0.5):
                return self.url
            if self.pid() is None:
                self.pid_file.unlink(missing_ok=True)
                raise InfraError(
                    f"redis-server (pid {pid}) exited during start-up; {self.log_file}:\n"
                    f"{tail(self.log_file)}\n{tail(self.home / 'stdout.log', 10)}"
                )
            if time.monotonic() > deadline:
                raise InfraError(
                    f"redis-server (pid {pid}) did not answer PING on port {self.port} within "
                    f"{timeout_s:.0f} s; {self.log_file}:\n{tail(self.log_file)}"
                )
            time.sleep(0.1)

    def wipe_data(self) -> None:
        """Delete the server's data and logs. Stop it first.

        Raises:
            InfraError: the server is still running.
        """
        if self.pid() is not None:
            raise InfraError(f"Redis in {self.home} is running; stop it before wiping")
        shutil.rmtree(self.home, ignore_errors=True)
