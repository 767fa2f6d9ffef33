"""The ops snapshot: what the worker publishes to Redis for the ops page (the API reads only Redis).

Every :data:`OPS_INTERVAL_S` seconds the worker (streams/app.py) probes consumer lag
(:class:`feedpipe.kafka.lag.LagProbe`), updates the lag gauges, builds a snapshot from the metrics
in
prometheus_client's registry (feedpipe.monitoring.metrics) and writes it to Redis:

* ``keys().ops_snapshot()`` -- the full snapshot (JSON, shape below);
* ``keys().ops_history()`` -- a compact point (:func:`compact`) pushed at the head of a list
  capped at :data:`OPS_HISTORY_LEN` (a ring, newest first).

Snapshot shape (times in epoch ms, durations in seconds, counters cumulative since the worker
started)::

    {"version": 1, "at_ms", "interval_s", "window_s",
     "worker": {"app_id", "pid", "host", "started_at_ms"},
     "agents": {agent: {"events_in", "events_out", "batch_s": Q, "event_s": Q}},
     "outputs": {agent: {topic: n}},
     "dlq": [{"stage", "reason", "count"}], "dlq_total",
     "freshness": {stage: Q},
     "time_to_feed": {"publish_to_candidate": Q, "click_to_feed": Q, "backfill": {path: n}},
     "redis_errors",
     "lag": {"group", "status", "total", "max_lag_s", "probe_error",
             "partitions": [{"topic", "partition", "committed", "end", "lag", "lag_s",
                             "status", "reason", "trend"}]}}

where ``Q = {"count", "p50", "p95", "p99"}`` over the last :data:`WINDOW_S` seconds
(quantiles interpolated from the histogram buckets as PromQL's histogram_quantile; None when
nothing was observed in the window).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from feedpipe.kafka.lag import Evaluation, PartitionProbe, Status, worst
from feedpipe.monitoring import metrics

OPS_INTERVAL_S = 2.0
"""Seconds between two snapshots (and lag probes)."""
OPS_HISTORY_LEN = 300
"""Compact points kept in the ring (300 x 2 s = 10 minutes of charts)."""
WINDOW_S = 60.0
"""Seconds of observations behind each percentile in a snapshot."""
LAG_WINDOW = 10
"""Lag samples per partition in the Burrow-style evaluation (10 x 2 s = 20 s)."""
STALE_AFTER_S = 5 * OPS_INTERVAL_S
"""A snapshot older than this (s) is stale: the worker is not publishing (readers say so)."""

HISTOGRAMS = {
    "batch_s": "feedpipe_batch_processing_seconds",
    "event_s": "feedpipe_event_processing_seconds",
    "freshness": "feedpipe_freshness_seconds",
    "publish_to_candidate": "feedpipe_publish_to_candidate_seconds",
    "click_to_feed": "feedpipe_click_to_feed_seconds",
}

Json = dict[str, Any]
_HistState = dict[str, dict[tuple[str, ...], metrics.Buckets]]


class SnapshotBuilder:
    """Builds snapshots from the registry; keeps the histogram states of the last ``window_s``
    seconds so that percentiles describe recent observations, not the whole process life."""

    def __init__(self, app_id: str, window_s: float = WINDOW_S) -> None:
        self.app_id = app_id
        self.window_s = window_s
        self.started_at_ms = int(time.time() * 1000)
        self._past: deque[tuple[float, _HistState]] = deque()

    def _window_buckets(self, now_s: float) -> _HistState:
        current: _HistState = {k: metrics.histogram_buckets(n) for k, n in HISTOGRAMS.items()}
        self._past.append((now_s, current))
        while len(self._past) > 1 and self._past[1][0] <= now_s - self.window_s:
            self._past.popleft()
        base = self._past[0][1] if self._past[0][0] < now_s else {}
        out: _HistState = {}
        for kind, per_label in current.items():
            before = base.get(kind, {})
            out[kind] = {
                lv: metrics.subtract_buckets(b, before.get(lv)) for lv, b in per_label.items()
            }
        return out

    def build(
        self,
        now_s: float,
        lag_group: str,
        lag_rows: Sequence[PartitionProbe],
        evaluations: Sequence[Evaluation],
    ) -> Json:
        """The snapshot at ``now_s`` (Unix s) with lag rows and their evaluations (same order)."""
        hist = self._window_buckets(now_s)
        ins = metrics.counter_values("feedpipe_events_in")
        outs = metrics.counter_values("feedpipe_events_out")
        agents: Json = {}
        for (agent,), n in sorted(ins.items()):
            agents.setdefault(agent, {})["events_in"] = int(n)
        outputs: dict[str, dict[str, int]] = {}
        for (agent, topic), n in sorted(outs.items()):
            outputs.setdefault(agent, {})[topic] = int(n)
            a = agents.setdefault(agent, {})
            a["events_out"] = a.get("events_out", 0) + int(n)
        for agent, a in agents.items():
            a.setdefault("events_in", 0)
            a.setdefault("events_out", 0)
            for kind in ("batch_s", "event_s"):
                b = hist[kind].get((agent,))
                a[kind] = metrics.quantiles(b) if b else metrics.quantiles([])
        dlq = [
            {"stage": stage, "reason": reason, "count": int(n)}
            for (stage, reason), n in sorted(metrics.counter_values("feedpipe_dlq_records").items())
        ]
        backfill = metrics.counter_values("feedpipe_time_to_feed_backfill")
        ttf: Json = {
            k: metrics.quantiles(hist[k].get((), []))
            for k in ("publish_to_candidate", "click_to_feed")
        }
        ttf["backfill"] = {path: int(n) for (path,), n in sorted(backfill.items())}
        return {
            "version": 1,
            "at_ms": int(now_s * 1000),
            "interval_s": OPS_INTERVAL_S,
            "window_s": self.window_s,
            "worker": {
                "app_id": self.app_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at_ms": self.started_at_ms,
            },
            "agents": agents,
            "outputs": outputs,
            "dlq": dlq,
            "dlq_total": sum(d["count"] for d in dlq),
            "freshness": {
                stage: metrics.quantiles(b) for (stage,), b in sorted(hist["freshness"].items())
            },
            "time_to_feed": ttf,
            "redis_errors": int(sum(metrics.counter_values("feedpipe_redis_errors").values())),
            "lag": lag_summary(lag_group, lag_rows, evaluations),
        }


def lag_summary(
    group: str, rows: Sequence[PartitionProbe], evaluations: Sequence[Evaluation]
) -> Json:
    """The snapshot's ``lag`` object: per-partition rows, group status (worst), totals."""
    parts: list[Json] = []
    probe_error = None
    for r, ev in zip(rows, evaluations, strict=True):
        if r.sample.error and r.partition < 0:
            probe_error = r.sample.error
            if not r.topic:
                continue
        parts.append(
            {
                "topic": r.topic,
                "partition": r.partition,
                "committed": r.sample.committed,
                "end": r.sample.end,
                "lag": r.lag,
                "lag_s": r.lag_s,
                "status": str(ev.status),
                "reason": ev.reason,
                "trend": ev.trend,
            }
        )
    status = worst(ev.status for ev in evaluations) if evaluations else Status.ERR
    lag_s = [p["lag_s"] for p in parts if p["lag_s"] is not None]
    return {
        "group": group,
        "status": str(status),
        "total": sum(p["lag"] for p in parts),
        "max_lag_s": max(lag_s) if lag_s else None,
        "probe_error": probe_error,
        "partitions": parts,
    }


def compact(snapshot: Json) -> Json:
    """The ring entry of a snapshot: time, events in/out per agent, DLQ count per reason, lag
    (offsets summed, seconds maxed) per topic, freshness p95 per stage, time-to-feed p95."""
    lag: dict[str, int] = {}
    lag_s: dict[str, float] = {}
    for p in snapshot["lag"]["partitions"]:
        lag[p["topic"]] = lag.get(p["topic"], 0) + int(p["lag"])
        if p["lag_s"] is not None:
            lag_s[p["topic"]] = max(lag_s.get(p["topic"], 0.0), float(p["lag_s"]))
    dlq: dict[str, int] = {}
    for d in snapshot["dlq"]:
        dlq[d["reason"]] = dlq.get(d["reason"], 0) + d["count"]
    return {
        "at_ms": snapshot["at_ms"],
        "in": {a: v["events_in"] for a, v in snapshot["agents"].items()},
        "out": {a: v["events_out"] for a, v in snapshot["agents"].items()},
        "dlq": dlq,
        "lag": lag,
        "lag_s": lag_s,
        "fresh_p95": {s: q["p95"] for s, q in snapshot["freshness"].items()},
        "ttf_p95": {
            k: snapshot["time_to_feed"][k]["p95"] for k in ("publish_to_candidate", "click_to_feed")
        },
        "status": snapshot["lag"]["status"],
    }
