"""Worker-side ops exporter: consumer-lag gauges and the Redis ops snapshot.

The Faust worker calls :meth:`OpsExporter.probe_lag` (blocking, run it in a thread) and then
:meth:`OpsExporter.publish` every :data:`feedpipe.ops_snapshot.OPS_INTERVAL_S` seconds
(streams/app.py). The lag probe reads committed offsets, end offsets and record timestamps with
confluent-kafka (:class:`feedpipe.lag.LagProbe`), sets the kafka_consumergroup_* gauges and
evaluates each partition over a sliding window (:func:`feedpipe.lag.evaluate`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from feedpipe import metrics
from feedpipe.lag import Evaluation, LagProbe, PartitionProbe, Tracker
from feedpipe.ops_snapshot import LAG_WINDOW, OPS_HISTORY_LEN, SnapshotBuilder, compact
from feedpipe.redis_keys import keys

PROBE_TIMEOUT_S = 5.0
"""Per-request timeout of the lag probe's Kafka calls (s)."""


class OpsExporter:
    """Lag probe + snapshot builder for the worker's consumer groups and their input topics.

    Args:
        bootstrap: Kafka bootstrap servers.
        groups: consumer group -> the topics it consumes (e.g.
            :func:`feedpipe.lag.pipeline_groups`: the Faust group and the click path's group).
        app_id: the Faust app id (shown in the snapshot).
    """

    def __init__(self, bootstrap: str, groups: Mapping[str, Sequence[str]], app_id: str) -> None:
        self.bootstrap = bootstrap
        self.groups = {g: list(t) for g, t in groups.items()}
        self.group = ", ".join(self.groups)
        self.tracker = Tracker(LAG_WINDOW)
        self.builder = SnapshotBuilder(app_id)
        self._probe: LagProbe | None = None

    def probe_lag(self) -> tuple[list[PartitionProbe], list[Evaluation]]:
        """Probe every partition once, update the gauges, evaluate the windows (blocking).

        Never raises for Kafka errors: they come back as rows with ``sample.error`` (status ERR)
        and count in feedpipe_lag_probe_errors_total.
        """
        if self._probe is None:
            self._probe = LagProbe(self.bootstrap, timeout_s=PROBE_TIMEOUT_S)
        rows = [r for g, topics in self.groups.items() for r in self._probe.probe(g, topics)]
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
        """The ops snapshot now (see :mod:`feedpipe.ops_snapshot`)."""
        return self.builder.build(time.time(), self.group, rows, evaluations)

    async def publish(self, redis: Any, snapshot: dict[str, Any]) -> None:
        """Write the snapshot and push its compact point on the ring (one MULTI/EXEC).

        Raises:
            redis.exceptions.RedisError: Redis failed (the caller logs and retries next tick).
        """
        k = keys()
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set(k.ops_snapshot(), orjson.dumps(snapshot))
            pipe.lpush(k.ops_history(), orjson.dumps(compact(snapshot)))
            pipe.ltrim(k.ops_history(), 0, OPS_HISTORY_LEN - 1)
            await pipe.execute()

    def close(self) -> None:
        """Close the Kafka clients of the probe."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None
