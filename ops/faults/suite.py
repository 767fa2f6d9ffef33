"""The fault suite's driver: a Kafka broker and Redis of its own, one scenario after another
from a clean slate, each judged on what reached Redis and the topics (see :mod:`ops.faults`)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from feedpipe.settings import ROOT, Settings, settings
from feedpipe.topology import topology
from ops.faults import reads
from ops.faults.drivers import FaultConfig, Stream, Worker
from ops.faults.inputs import behaviors_subset
from ops.faults.reads import dead_letters, topic_mismatches, wait_feeds_converged
from ops.faults.report import Outcome, compare, reference_counts
from ops.faults.scenarios import CLUSTER_SCENARIOS, FAULTS, START_WORKERS


class Suite:
    """Runs scenarios on a stack of its own (see the module docstring).

    Args:
        config: ports, state dir and stream size.
        data_dir: the shared data directory (default ``settings().data_dir``).
        log: progress lines (default: print to stderr).
    """

    def __init__(
        self, config: FaultConfig, data_dir: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from ops.infra import LocalStack

        self.config = config
        self.data_dir = data_dir or settings().data_dir
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.redis_url = f"redis://127.0.0.1:{config.redis_port}/0"
        self.settings = Settings(
            state_dir=config.state_dir, kafka_bootstrap=f"127.0.0.1:{config.kafka_port}",
            redis_url=self.redis_url, kafka_replication_factor=min(3, config.brokers),
        )
        self.stack = LocalStack(self.settings, brokers=config.brokers)
        self.bootstrap = self.stack.kafka.bootstrap
        self.source = behaviors_subset(self.data_dir, config.rows, config.state_dir / "input")
        self.input_dir = config.state_dir / "input"
        self.post_checks: list[Callable[[], tuple[int, int, str]]] = []
        self._probe: Any = None  # feedpipe.monitoring.exporter.ProbeProcess, started on first use

    # stack ---------------------------------------------------------------------------------

    def start_stack(self) -> None:
        """Start the suite's broker and Redis (the jars shared with the development stack,
        ``.feedpipe/kafka/lib``, fetched on first use), wiping their old data first.

        Raises:
            ops.infra.InfraError: a service did not start.
        """
        from ops.infra.kafka import ensure_jars

        self.stack.kafka.lib = ensure_jars(ROOT / ".feedpipe")
        self.stack.stop()
        self.stack.kafka.wipe_data()
        self.stack.redis.wipe_data()
        self.stack.redis.start()
        self.stack.kafka.start(timeout_s=90)

    def stop_stack(self) -> None:
        """Stop the lag probe's child process, the suite's broker and Redis."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self.stack.stop()

    # one scenario -----------------------------------------------------------------------------

    def run(self, scenario: str) -> Outcome:
        """Run one scenario from a clean slate and return its outcome.

        Raises:
            ValueError: an unknown scenario name.
            RuntimeError: a process did not start, the stream failed, or the pipeline did not
                drain in ``drain_timeout_s``.
        """
        if scenario not in FAULTS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(FAULTS)}")
        if scenario in CLUSTER_SCENARIOS and self.config.brokers < 3:
            raise ValueError(f"scenario {scenario!r} needs a 3-broker cluster (--brokers 3)")
        fault = FAULTS[scenario]
        out = Outcome(scenario)
        t_start = time.monotonic()
        app_id = f"feedpipe-faults-{uuid.uuid4().hex[:8]}"
        env = {
            "FEEDPIPE_KAFKA_BOOTSTRAP": self.bootstrap,
            "FEEDPIPE_REDIS_URL": self.redis_url,
            "FEEDPIPE_APP_ID": app_id,
            "FEEDPIPE_KAFKA_REPLICATION_FACTOR": str(self.settings.kafka_replication_factor),
        }
        self._fresh()
        with self._workers(env, app_id) as workers:
            for i in range(START_WORKERS.get(scenario, 1)):
                workers.append(self.worker(env, app_id, f"w{i}"))
            self.log(f"[{scenario}] catalogue replay")
            self._replay_catalogue()
            self._drain(app_id, workers)
            from connectors.replay import ReplayConnector

            items = list(ReplayConnector(self.source, self.input_dir, topology().topics).items())
            reference = reference_counts(iter(items))
            total = sum(sum(c.values()) for c in reference.values())
            out.events, out.users = total, len(reference)
            stream = Stream(
                self.source, self.input_dir, self.bootstrap, self.config.rate,
                len(items), self.config.fault_at,
            )
            self.log(f"[{scenario}] streaming {total:,} reader events at {self.config.rate:,.0f}/s")
            stream.start()
            stream.passed.wait()
            before = self._lag(app_id)
            t_fault = time.monotonic()
            self.log(f"[{scenario}] fault (lag before {before:,})")
            sent = fault(self, workers, env, app_id)
            out.poison_sent = sum(sent.values())
            out.recover_s = self._recovered(app_id, before, t_fault, stream, workers)
            stream.join()
            if stream.error is not None:
                raise RuntimeError(f"the steady replay failed: {stream.error!r}")
            self._drain(app_id, workers)
            wait_feeds_converged(self.redis_url)
            dlq_users, poison_found, reasons = dead_letters(self.bootstrap)
            out.poison_dlq, out.dlq_reasons = poison_found, reasons
            profiles = reads.profiles(self.redis_url, sorted(reference))
            out.lost, out.doubled = compare(reference, profiles, dlq_users)
            out.topic_mismatches = topic_mismatches(self.bootstrap, self.redis_url, profiles)
            for check in self.post_checks:
                lost, doubled, detail = check()
                out.cms_lost += lost
                out.cms_doubled += doubled
                out.detail = "; ".join(x for x in (out.detail, detail) if x)
            self.post_checks.clear()
        out.seconds = time.monotonic() - t_start
        self.log(f"[{scenario}] done: lost {out.lost}, doubled {out.doubled}, "
                 f"topics {out.topic_mismatches}, poison {out.poison_dlq}/{out.poison_sent}, "
                 f"recover {out.recover_s}")
        return out

    # helpers ------------------------------------------------------------------------------------

    @contextmanager
    def _workers(self, env: Mapping[str, str], app_id: str) -> Iterator[list[Worker]]:
        workers: list[Worker] = []
        try:
            yield workers
        finally:
            for w in workers:
                w.stop()

    def worker(self, env: Mapping[str, str], app_id: str, name: str) -> Worker:
        """Start worker ``name`` of ``app_id`` with ``env`` over the process's environment, its
        state under ``<state_dir>/workers/<app_id>/<name>`` (Faust's data directory too), and
        return it once its web server answers.

        Raises:
            InfraError: it exited or did not answer in time (:meth:`Worker.start`).
        """
        w = Worker(name, env, self.config.state_dir / "workers" / app_id / name)
        w.start()
        return w

    def _fresh(self) -> None:
        from confluent_kafka.admin import AdminClient

        from feedpipe import settings as settings_module
        from feedpipe.kafka.topics import recreate
        from feedpipe.store.client import sync_client

        with _replication(self.settings.kafka_replication_factor):
            settings_module.settings.cache_clear()
            recreate(topology(), AdminClient({"bootstrap.servers": self.bootstrap}))
        settings_module.settings.cache_clear()
        sync_client(self.redis_url).flushall()

    def _replay_catalogue(self) -> None:
        from connectors.replay import replay_all

        replay_all(topology(), self.data_dir, ["mind"], bootstrap=self.bootstrap)

    def _lag(self, app_id: str) -> int:
        """Total lag of the app's consumer groups, probed in a child process (librdkafka can
        abort the process that runs admin requests while the broker restarts: the suite's
        own process must survive the faults it injects).

        Raises:
            RuntimeError: the probe failed (broker unreachable, child died).
        """
        from feedpipe.kafka.lag import pipeline_groups
        from feedpipe.monitoring.exporter import ProbeProcess

        if self._probe is None:
            self._probe = ProbeProcess(self.bootstrap, timeout_s=5.0, deadline_s=30.0)
        rows = self._probe.probe(pipeline_groups(app_id))
        errors = [r.sample.error for r in rows if r.sample.error]
        if errors:
            raise RuntimeError(f"lag probe: {errors[0]}")
        return sum(r.lag for r in rows)

    @staticmethod
    def alive(workers: Sequence[Worker]) -> None:
        """Raise when a worker the scenario did not kill has exited (with its log tail)."""
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise RuntimeError(
                    f"worker {w.name} exited with code {w.proc.returncode}:\n{w.tail()}"
                )

    def _recovered(
        self, app_id: str, before: int, t_fault: float, stream: Stream, workers: Sequence[Worker]
    ) -> float | None:
        """Seconds from the fault until lag <= max(before, rate * 1 s); None if it never is
        within ``drain_timeout_s``.

        Raises:
            RuntimeError: a worker exited on its own.
        """
        bound = max(before, int(self.config.rate))
        deadline = t_fault + self.config.drain_timeout_s
        while time.monotonic() < deadline:
            self.alive(workers)
            try:
                lag = self._lag(app_id)
            except Exception:  # the broker may still be down: not recovered
                lag = None
            if lag is not None and (lag <= bound or (not stream.is_alive() and lag == 0)):
                return time.monotonic() - t_fault
            time.sleep(0.5)
        return None

    def _drain(self, app_id: str, workers: Sequence[Worker]) -> None:
        """Wait for lag 0 on every group, three polls in a row.

        Raises:
            RuntimeError: not drained in ``drain_timeout_s``, or a worker exited on its own.
        """
        deadline = time.monotonic() + self.config.drain_timeout_s
        quiet = 0
        lag = -1
        while time.monotonic() < deadline:
            self.alive(workers)
            try:
                lag = self._lag(app_id)
            except Exception:  # the broker may be restarting
                lag = -1
            quiet = quiet + 1 if lag == 0 else 0
            if quiet >= 3:
                return
            time.sleep(1.0)
        raise RuntimeError(f"pipeline did not drain in {self.config.drain_timeout_s:.0f} s "
                           f"(lag {lag})")


@contextmanager
def _replication(factor: int) -> Iterator[None]:
    """``FEEDPIPE_KAFKA_REPLICATION_FACTOR`` = ``factor`` in this process for the block: the
    topics the suite creates get the replication factor of its own stack."""
    import os

    old = os.environ.get("FEEDPIPE_KAFKA_REPLICATION_FACTOR")
    os.environ["FEEDPIPE_KAFKA_REPLICATION_FACTOR"] = str(factor)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FEEDPIPE_KAFKA_REPLICATION_FACTOR", None)
        else:
            os.environ["FEEDPIPE_KAFKA_REPLICATION_FACTOR"] = old
