"""Worker-side ops exporter: consumer-lag gauges and the Redis ops snapshot.

The Faust worker calls :meth:`OpsExporter.probe_lag` (blocking, run it in a thread) and then
:meth:`OpsExporter.publish` every :data:`feedpipe.monitoring.snapshot.OPS_INTERVAL_S` seconds
(streams/app.py). The lag probe reads committed offsets, end offsets and record timestamps with
confluent-kafka (:class:`feedpipe.kafka.lag.LagProbe`), sets the kafka_consumergroup_* gauges and
evaluates each partition over a sliding window (:func:`feedpipe.kafka.lag.evaluate`).

The probe runs in a child process (:class:`ProbeProcess`), not in the worker: the fault suite
(ops/faults.py, ``broker-restart``) caught librdkafka 2.16.1 aborting the whole process
(``rd_kafka_enq_once_del_source_return: Assertion `eonce->refcnt > 0' failed``, an admin
request racing the broker's disconnect) while the broker restarted. An abort in the child only
costs one tick of ERR rows; the next tick starts a new child.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any

from feedpipe.kafka.lag import Evaluation, LagProbe, PartitionProbe, Sample, Tracker
from feedpipe.monitoring import metrics
from feedpipe.monitoring.snapshot import LAG_WINDOW, OPS_HISTORY_LEN, SnapshotBuilder, compact
from feedpipe.store import ops as ops_store

PROBE_TIMEOUT_S = 5.0
"""Per-request timeout of the lag probe's Kafka calls (s)."""

PROBE_DEADLINE_S = 30.0
"""A probe answered by the child after this many seconds counts as hung: the child is killed."""


def _probe_main(conn: Connection, bootstrap: str, timeout_s: float) -> None:
    """Child process loop: receive ``{group: [topics]}``, answer the probe rows; exit on None."""
    probe = LagProbe(bootstrap, timeout_s=timeout_s)
    try:
        while True:
            groups = conn.recv()
            if groups is None:
                return
            conn.send([r for g, topics in groups.items() for r in probe.probe(g, topics)])
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        probe.close()


class ProbeProcess:
    """:class:`feedpipe.kafka.lag.LagProbe` in a child process (spawned, so no state of the worker's
    threads or event loop is inherited), restarted on the next call after it died or hung.

    Args:
        bootstrap: Kafka bootstrap servers.
        timeout_s: per-request timeout of the child's Kafka calls, seconds.
        deadline_s: seconds to wait for one probe's answer before the child is killed.
    """

    def __init__(
        self, bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S,
        deadline_s: float = PROBE_DEADLINE_S,
    ) -> None:
        self.bootstrap, self.timeout_s, self.deadline_s = bootstrap, timeout_s, deadline_s
        self._proc: Any = None
        self._conn: Connection | None = None
        self.restarts = 0
        self._started_at = float("-inf")

    def probe(self, groups: Mapping[str, Sequence[str]]) -> list[PartitionProbe]:
        """Probe rows of every group (see :meth:`feedpipe.kafka.lag.LagProbe.probe`). Never raises:
        when the child died or hung, one row per group with ``sample.error`` says so."""
        now = time.time()
        try:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            assert self._conn is not None
            self._conn.send({g: list(t) for g, t in groups.items()})
            if not self._conn.poll(self.deadline_s):
                raise TimeoutError(f"lag probe gave no answer in {self.deadline_s:g} s")
            rows: list[PartitionProbe] = self._conn.recv()
            if any(r.sample.error for r in rows) and time.monotonic() - self._started_at > 30:
                # librdkafka clients that lost the broker can keep timing out after it is back
                # (seen after a broker restart: OffsetFetch _TIMED_OUT for minutes, while new
                # clients answer at once); the next probe gets a new child with new clients
                # (at most one new child per 30 s while errors last)
                self.close()
            return rows
        except (EOFError, OSError, TimeoutError) as exc:
            code = self._proc.exitcode if self._proc is not None else None
            self.close()
            why = f"lag probe process failed ({type(exc).__name__}: {exc}; exit code {code})"
            return [PartitionProbe(g, "", -1, Sample(now, -1, None, error=why), None)
                    for g in groups]

    def _start(self) -> None:
        self.close()
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_probe_main, args=(child, self.bootstrap, self.timeout_s),
            name="feedpipe-lag-probe", daemon=True,
        )
        self._proc.start()
        child.close()
        self._conn = parent
        self.restarts += 1
        self._started_at = time.monotonic()

    def close(self) -> None:
        """Stop the child (a polite request, then SIGKILL after 2 s)."""
        if self._conn is not None:
            with suppress(OSError, ValueError):
                self._conn.send(None)
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(2.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2.0)
            self._proc = None


class OpsExporter:
    """Lag probe + snapshot builder for the worker's consumer groups and their input topics.

    Args:
        bootstrap: Kafka bootstrap servers.
        groups: consumer group -> the topics it consumes (e.g.
            :func:`feedpipe.kafka.lag.pipeline_groups`: the Faust group and the click path's group).
        app_id: the Faust app id (shown in the snapshot).
    """

    def __init__(self, bootstrap: str, groups: Mapping[str, Sequence[str]], app_id: str) -> None:
        self.bootstrap = bootstrap
        self.groups = {g: list(t) for g, t in groups.items()}
        self.group = ", ".join(self.groups)
        self.tracker = Tracker(LAG_WINDOW)
        self.builder = SnapshotBuilder(app_id)
        self._probe: ProbeProcess | None = None

    def probe_lag(self) -> tuple[list[PartitionProbe], list[Evaluation]]:
        """Probe every partition once, update the gauges, evaluate the windows (blocking).

        Never raises for Kafka errors: they come back as rows with ``sample.error`` (status ERR)
        and count in feedpipe_lag_probe_errors_total.
        """
        if self._probe is None:
            self._probe = ProbeProcess(self.bootstrap)
        rows = self._probe.probe(self.groups)
        if any(r.sample.error for r in rows):
            metrics.LAG_PROBE_ERRORS.inc()
        for r in rows:
            if r.sample.error or r.partition < 0:
                continue
            labels = (r.group, r.topic, str(r.partition))
            metrics.LAG.labels(*labels).set(r.lag)
            if r.sample.committed is not None:
                metrics.CURRENT_OFFSET.labels(*labels).set(r.sample.committed)
            metrics.END_OFFSET.labels(r.topic, str(r.partition)).set(r.sample.end)
            if r.lag_s is not None:
                metrics.LAG_SECONDS.labels(*labels).set(r.lag_s)
        self.tracker.add(rows)
        evaluations = [self.tracker.evaluate(r.group, r.topic, r.partition) for r in rows]
        return rows, evaluations

    def snapshot(
        self, rows: Sequence[PartitionProbe], evaluations: Sequence[Evaluation]
    ) -> dict[str, Any]:
        """The ops snapshot now (see :mod:`feedpipe.monitoring.snapshot`)."""
        return self.builder.build(time.time(), self.group, rows, evaluations)

    async def publish(self, redis: Any, snapshot: dict[str, Any]) -> None:
        """Write the snapshot and push its compact point on the ring (one MULTI/EXEC).

        Raises:
            redis.exceptions.RedisError: Redis failed (the caller logs and retries next tick).
        """
        await ops_store.publish(redis, snapshot, compact(snapshot), OPS_HISTORY_LEN)

    def close(self) -> None:
        """Stop the probe's child process (and its Kafka clients)."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None
