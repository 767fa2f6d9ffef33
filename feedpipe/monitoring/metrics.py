"""Prometheus metrics of the worker (and helpers shared with the ops snapshot).

Every metric lives in prometheus_client's default registry (``prometheus_client.REGISTRY``), so
one ``generate_latest()`` call renders them all: the worker serves it at ``/metrics`` on its
Faust web port (streams/app.py). Names follow Prometheus conventions (base units: seconds,
``_total`` for counters); the consumer-lag gauges reuse the names of kafka_exporter
(github.com/danielqsj/kafka_exporter: ``kafka_consumergroup_lag``,
``kafka_consumergroup_current_offset``, ``kafka_topic_partition_current_offset``, labels
``consumergroup``, ``topic``, ``partition``) plus ``kafka_consumergroup_lag_seconds`` as in
kafka-lag-exporter (github.com/seglo/kafka-lag-exporter).

Metrics (type; labels): meaning

* feedpipe_events_in_total (counter; agent): events an agent took from its input topic
* feedpipe_events_out_total (counter; agent, topic): records an agent sent (outputs and DLQ)
* feedpipe_dlq_records_total (counter; stage, reason): DLQ records by reason (``error_type``)
* feedpipe_event_processing_seconds (histogram; agent): batch time / events, once per event
* feedpipe_batch_processing_seconds (histogram; agent): wall time of one batch's loop body
* feedpipe_batch_events (histogram; agent): events per batch
* feedpipe_freshness_seconds (histogram; stage): Kafka record time -> the stage finished it
* feedpipe_publish_to_candidate_seconds (histogram): CMS publish/update -> item in catalogue
* feedpipe_click_to_feed_seconds (histogram): click time -> the user's feed reflects it
* feedpipe_time_to_feed_backfill_total (counter; path): samples beyond the live horizon
* feedpipe_redis_errors_total (counter; component, error): Redis connection/timeout errors
* kafka_consumergroup_lag (gauge; consumergroup, topic, partition): end - committed offset
* kafka_consumergroup_lag_seconds (gauge; same): now - time of the record at the committed
  offset (0 when caught up)
* kafka_consumergroup_current_offset (gauge; same): committed offset
* kafka_topic_partition_current_offset (gauge; topic, partition): end offset (high watermark)
* feedpipe_lag_probe_errors_total (counter): lag probes that failed
* feedpipe_fanout_records_total (counter): ``fanout`` reader events sent by fan-out on write
  (one per item and audience user; feedpipe/rank/fanout.py)
* feedpipe_celebrity_items_total (counter; brand): items whose audience exceeded
  ``fanout.celebrity_audience`` (merged at read time instead of fanned out)
* feedpipe_interest_unreadable_total (counter; where): stored interest vectors that could not
  be read and were used as empty (``interest_of``, ``to_wire``, ``rebase``): counted from the
  error lines of feedpipe.model.interest once :func:`count_unreadable_interests` ran

The ``observe_*`` functions are the only way code outside this module records values; they
never raise on odd input (negative or NaN durations are clamped or ignored, see each one).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from feedpipe.model import interest

PROCESSING_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Seconds; per-event and per-batch processing time (0.5 ms .. 30 s)."""
FRESHNESS_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
"""Seconds; freshness and time-to-feed (50 ms .. 1 h)."""
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LIVE_HORIZON_S = 3600.0
"""Time-to-feed samples above this (s) come from replayed/backfilled history (e.g. MIND 2019
clicks, old CMS items): counted in feedpipe_time_to_feed_backfill_total, not in the histogram,
so the live percentiles stay meaningful. Equals the last finite bucket of FRESHNESS_BUCKETS."""

EVENTS_IN = Counter("feedpipe_events_in", "Events an agent took from its input", ["agent"])
EVENTS_OUT = Counter(
    "feedpipe_events_out", "Records an agent sent (outputs and DLQ)", ["agent", "topic"]
)
DLQ_RECORDS = Counter("feedpipe_dlq_records", "DLQ records by reason code", ["stage", "reason"])
EVENT_SECONDS = Histogram(
    "feedpipe_event_processing_seconds",
    "Processing time per event (batch time / events)",
    ["agent"],
    buckets=PROCESSING_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "feedpipe_batch_processing_seconds",
    "Wall time of one batch",
    ["agent"],
    buckets=PROCESSING_BUCKETS,
)
BATCH_EVENTS = Histogram(
    "feedpipe_batch_events", "Events per batch", ["agent"], buckets=BATCH_SIZE_BUCKETS
)
FRESHNESS = Histogram(
    "feedpipe_freshness_seconds",
    "Record/event time to processed by the stage",
    ["stage"],
    buckets=FRESHNESS_BUCKETS,
)
PUBLISH_TO_CANDIDATE = Histogram(
    "feedpipe_publish_to_candidate_seconds",
    "CMS publish/update time to the item being a candidate (in the catalogue)",
    buckets=FRESHNESS_BUCKETS,
)
CLICK_TO_FEED = Histogram(
    "feedpipe_click_to_feed_seconds",
    "Click time to the user's feed reflecting it",
    buckets=FRESHNESS_BUCKETS,
)
TTF_BACKFILL = Counter(
    "feedpipe_time_to_feed_backfill",
    "Time-to-feed samples older than the live horizon (replayed history)",
    ["path"],
)
REDIS_ERRORS = Counter(
    "feedpipe_redis_errors", "Redis connection/timeout errors", ["component", "error"]
)
LAG_LABELS = ["consumergroup", "topic", "partition"]
LAG = Gauge("kafka_consumergroup_lag", "End offset minus committed offset", LAG_LABELS)
LAG_SECONDS = Gauge(
    "kafka_consumergroup_lag_seconds",
    "Now minus the timestamp of the record at the committed offset (0 when caught up)",
    LAG_LABELS,
)
CURRENT_OFFSET = Gauge("kafka_consumergroup_current_offset", "Committed offset", LAG_LABELS)
END_OFFSET = Gauge(
    "kafka_topic_partition_current_offset", "End offset (high watermark)", ["topic", "partition"]
)
LAG_PROBE_ERRORS = Counter("feedpipe_lag_probe_errors", "Lag probes that failed")
FANOUT_RECORDS = Counter(
    "feedpipe_fanout_records", "fanout reader events sent by fan-out on write (item x user)"
)
CELEBRITY_ITEMS = Counter(
    "feedpipe_celebrity_items",
    "Items whose audience exceeded fanout.celebrity_audience (merged at read time)",
    ["brand"],
)

INTEREST_UNREADABLE = Counter(
    "feedpipe_interest_unreadable",
    "Stored interest vectors that could not be read (used as empty), by where",
    ["where"],
)


def _seconds(value: float) -> float | None:
    """Clamp a duration to >= 0 (clock skew); None for NaN/inf."""
    if not math.isfinite(value):
        return None
    return max(0.0, float(value))


def observe_events_in(agent: str, n: int) -> None:
    """Count ``n`` events taken by ``agent`` (called by streams.runtime.take_events)."""
    if n > 0:
        EVENTS_IN.labels(agent).inc(n)


def observe_event_out(agent: str, topic: str) -> None:
    """Count one record sent by ``agent`` to ``topic`` (called by the worker's send sensor)."""
    EVENTS_OUT.labels(agent, topic).inc()


def observe_fanout(records: int) -> None:
    """Count ``records`` fanout reader events sent (ignored when <= 0)."""
    if records > 0:
        FANOUT_RECORDS.inc(records)


def observe_celebrity(brand: str) -> None:
    """Count one item of ``brand`` classified as a celebrity."""
    CELEBRITY_ITEMS.labels(brand).inc()


def observe_dlq(stage: str, reason: str) -> None:
    """Count one DLQ record of ``stage`` with reason code ``reason`` (DeadLetter.error_type)."""
    DLQ_RECORDS.labels(stage, reason).inc()


def observe_batch(agent: str, events: int, seconds: float) -> None:
    """Record one batch of ``events`` events that took ``seconds`` (wall time, s).

    Feeds feedpipe_batch_processing_seconds, feedpipe_batch_events, and
    feedpipe_event_processing_seconds with ``events`` observations of ``seconds / events``
    (:func:`observe_many`, no loop per event). Called
    automatically for every ``streams.runtime.take_events`` batch; stages need not call it.
    """
    s = _seconds(seconds)
    if s is None or events <= 0:
        return
    BATCH_SECONDS.labels(agent).observe(s)
    BATCH_EVENTS.labels(agent).observe(events)
    observe_many(EVENT_SECONDS.labels(agent), s / events, events)


def observe_many(h: Histogram, amount: float, count: int) -> None:
    """``count`` observations of ``amount`` in histogram child ``h`` in O(buckets), not
    O(count): the sum grows by ``amount * count`` and the one bucket ``amount`` falls in by
    ``count``, which is what ``count`` calls of ``Histogram.observe`` do (prometheus_client
    0.x ``Histogram.observe``: ``_sum.inc(amount)``, first bucket with ``amount <= bound``
    ``inc(1)``). Falls back to the calls when the child lacks those attributes."""
    bounds = getattr(h, "_upper_bounds", None)
    buckets = getattr(h, "_buckets", None)
    total = getattr(h, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for _ in range(count):
            h.observe(amount)
        return
    total.inc(amount * count)
    for i, bound in enumerate(bounds):
        if amount <= bound:
            buckets[i].inc(count)
            break


def observe_freshness(stage: str, seconds: float) -> None:
    """Record one freshness sample (s): event or record time -> ``stage`` materialised it."""
    s = _seconds(seconds)
    if s is not None:
        FRESHNESS.labels(stage).observe(s)


def _time_to_feed(hist: Histogram, path: str, seconds: float) -> None:
    s = _seconds(seconds)
    if s is None:
        return
    if s > LIVE_HORIZON_S:
        TTF_BACKFILL.labels(path).inc()
    else:
        hist.observe(s)


def observe_publish_to_candidate(seconds: float) -> None:
    """Record CMS publish (or update) time -> item in the catalogue (a candidate), seconds.

    Samples above :data:`LIVE_HORIZON_S` (replayed history) only count in
    feedpipe_time_to_feed_backfill_total{path="publish_to_candidate"}.
    """
    _time_to_feed(PUBLISH_TO_CANDIDATE, "publish_to_candidate", seconds)


def observe_click_to_feed(seconds: float) -> None:
    """Record click time -> the user's feed reflecting the click, seconds.

    Samples above :data:`LIVE_HORIZON_S` (MIND history replays) only count in
    feedpipe_time_to_feed_backfill_total{path="click_to_feed"}.
    """
    _time_to_feed(CLICK_TO_FEED, "click_to_feed", seconds)


class _UnreadableInterests(logging.Handler):
    """Counts the log records of unreadable interest vectors (feedpipe.model.interest)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Count ``record`` when it carries :data:`feedpipe.model.interest.UNREADABLE_ATTR`."""
        where = getattr(record, interest.UNREADABLE_ATTR, None)
        if where is not None:
            INTEREST_UNREADABLE.labels(str(where)).inc()


def count_unreadable_interests() -> None:
    """Count every unreadable stored interest vector the process meets in
    feedpipe_interest_unreadable_total{where}: a handler on the ``feedpipe.model.interest``
    logger (the domain model imports no metrics; it logs each one at ERROR level, which the
    handler sees whatever the process's log level, unless logging is disabled). Idempotent:
    one handler per process."""
    logger = interest.log
    if not any(isinstance(h, _UnreadableInterests) for h in logger.handlers):
        logger.addHandler(_UnreadableInterests())
    if logger.level == logging.NOTSET or logger.level > logging.ERROR:
        logger.setLevel(logging.ERROR)


def observe_redis_error(component: str, exc: BaseException) -> None:
    """Count one Redis error of ``component`` (e.g. "worker"), labelled by exception class."""
    REDIS_ERRORS.labels(component, type(exc).__name__).inc()


# -- reading the registry back (for the ops snapshot) --------------------------------------------


Buckets = list[tuple[float, float]]
"""Cumulative histogram buckets [(upper bound ``le``, count <= le)], ascending, +Inf last."""


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q``-quantile (0..1) of a cumulative histogram, as PromQL's histogram_quantile.

    Linear interpolation inside the bucket holding the rank ``q * total``, lower bound 0 for the
    first bucket; a rank in the +Inf bucket gives the highest finite upper bound
    (prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile).
    Returns None for an empty histogram or q outside [0, 1].
    """
    if not buckets or not 0.0 <= q <= 1.0:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def histogram_buckets(
    name: str, registry: CollectorRegistry = REGISTRY
) -> dict[tuple[str, ...], Buckets]:
    """Cumulative buckets of histogram ``name`` per label-value tuple (label order as declared,
    without ``le``); ``{(): buckets}`` for an unlabelled histogram."""
    out: dict[tuple[str, ...], Buckets] = {}
    for family in registry.collect():
        if family.name != name or family.type != "histogram":
            continue
        for s in family.samples:
            if not s.name.endswith("_bucket"):
                continue
            key = tuple(v for k, v in s.labels.items() if k != "le")
            out.setdefault(key, []).append((float(s.labels["le"]), float(s.value)))
    for b in out.values():
        b.sort(key=lambda x: x[0])
    return out


def counter_values(
    name: str, registry: CollectorRegistry = REGISTRY
) -> dict[tuple[str, ...], float]:
    """Current values of counter ``name`` (without ``_total``) per label-value tuple."""
    out: dict[tuple[str, ...], float] = {}
    for family in registry.collect():
        if family.name != name or family.type != "counter":
            continue
        for s in family.samples:
            if s.name == name + "_total":
                out[tuple(s.labels.values())] = float(s.value)
    return out


def subtract_buckets(now: Buckets, before: Buckets | None) -> Buckets:
    """Buckets of the observations made between two reads of the same histogram."""
    if not before or len(before) != len(now):
        return list(now)
    return [(le, c - b) for (le, c), (_, b) in zip(now, before, strict=True)]


def quantiles(buckets: Buckets, qs: Iterable[float] = (0.5, 0.95, 0.99)) -> dict[str, object]:
    """``{"count": n, "p50": s, "p95": s, "p99": s}`` of cumulative ``buckets`` (None if empty)."""
    out: dict[str, object] = {"count": int(buckets[-1][1]) if buckets else 0}
    for q in qs:
        out[f"p{round(q * 100):d}"] = histogram_quantile(q, buckets)
    return out


def metric_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Sample names the registry exposes (``*_total``, ``*_bucket``, gauges...), for tests."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        for s in family.samples:
            names.add(s.name)
    return names

