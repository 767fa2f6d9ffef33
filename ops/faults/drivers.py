"""The processes a fault scenario drives: Faust workers of the suite's app id and the steady
replay of reader events; :class:`FaultConfig` holds the suite's knobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from feedpipe.settings import ROOT
from feedpipe.topology import SourceSpec, topology
from ops.infra._proc import http_answers, wait_ready


@dataclass(frozen=True)
class FaultConfig:
    """Knobs of a suite run.

    Attributes:
        kafka_port / redis_port: the suite's own broker (controller = kafka_port + 1) and Redis.
        state_dir: where their data, the workers' logs and the input subset live.
        rows: MIND behaviours rows streamed per scenario (1,000 rows ~ 70,000 reader events).
        rate: reader events/s of the steady replay.
        fault_at: fraction of the stream after which the fault hits.
        drain_timeout_s: seconds allowed for the pipeline to drain after the stream ends.
        brokers: 1 (a single KRaft node) or 3 (:class:`ops.infra.KafkaCluster`, replication
            factor 3, ``min.insync.replicas`` 2, ports kafka_port .. kafka_port + 5); the
            scenarios of :data:`ops.faults.scenarios.CLUSTER_SCENARIOS` need 3.
    """

    kafka_port: int = 29192
    redis_port: int = 26479
    state_dir: Path = ROOT / ".feedpipe-test" / "faults"
    rows: int = 1000
    rate: float = 4000.0
    fault_at: float = 0.4
    drain_timeout_s: float = 300.0
    brokers: int = 1



def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """One ``python -m streams worker`` process of the suite's app id (own state dir and web
    port), started in its own process group so SIGKILL reaches nothing else."""

    def __init__(self, name: str, env: Mapping[str, str], state_dir: Path) -> None:
        self.name = name
        self.state_dir = state_dir
        self.port = _free_port()
        self.env = {
            **os.environ,
            **env,
            "FEEDPIPE_STATE_DIR": str(state_dir),
            "FEEDPIPE_WORKER_WEB_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state_dir / "logs" / f"{name}.log"

    def start(self, timeout_s: float = 90.0) -> None:
        """Spawn the worker and wait until its web server answers.

        Raises:
            InfraError: it exited or did not answer within ``timeout_s`` s (with its log tail).
        """
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "-l", "info",
                 "--web-port", str(self.port), "--web-host", "127.0.0.1"],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        proc = self.proc

        def failed(why: str) -> str:
            what = "exited" if why == "exited" else f"not ready in {timeout_s:.0f} s"
            return f"worker {self.name} {what}:\n{self.tail()}"

        wait_ready(
            lambda: http_answers(f"http://127.0.0.1:{self.port}/"),
            timeout_s,
            exited=lambda: proc.poll() is not None,
            failed=failed,
        )

    def kill9(self) -> None:
        """SIGKILL the worker's process group (no shutdown, no commit) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (SIGKILL after ``timeout_s`` s) and reap."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()

    def tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the worker's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class Stream(threading.Thread):
    """The steady replay: publishes ``source`` at about ``rate`` events/s (throttled in the
    connector's progress callback every 100 records) and sets ``passed`` after ``fault_at`` of
    ``total`` records. Exceptions are kept in ``error`` (the suite re-raises them)."""

    def __init__(
        self, source: SourceSpec, data_dir: Path, bootstrap: str, rate: float,
        total: int, fault_at: float,
    ) -> None:
        super().__init__(daemon=True, name="faults-stream")
        self.source, self.data_dir, self.bootstrap = source, data_dir, bootstrap
        self.rate, self.total, self.fault_at = rate, total, fault_at
        self.passed = threading.Event()
        self.published = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        """Publish the source once (see the class docstring)."""
        from connectors.replay import ReplayConnector

        t0 = time.monotonic()

        def progress(n: int) -> None:
            if n >= self.total * self.fault_at:
                self.passed.set()
            ahead = n / self.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)

        try:
            conn = ReplayConnector(
                self.source, self.data_dir, topology().topics, progress=progress,
                progress_every=100, bootstrap=self.bootstrap, flush_timeout_s=300,
            )
            try:
                self.published = conn.run().published
            finally:
                conn.stop()
        except BaseException as exc:  # handed to the suite's thread
            self.error = exc
        finally:
            self.passed.set()
