"""Prometheus metrics of the event collector (connectors/collector/), in prometheus_client's
default registry; the collector serves them at ``GET /metrics``.

Metrics (type; labels): meaning

* feedpipe_collector_events_accepted_total (counter; type): events the broker acknowledged on
  ``reader.events``
* feedpipe_collector_events_rejected_total (counter; reason): events refused one by one (each
  also written to ``reader.events.dlq`` with the reason)
* feedpipe_collector_requests_rejected_total (counter; reason): whole requests refused (auth,
  rate limit, size, body shape, Kafka unavailable)
* feedpipe_collector_produce_seconds (histogram): one request's records handed to the producer
  -> the last broker acknowledgement (``acks=all``)

The ``observe_*`` functions are the only way code records them; they never raise.
"""

from __future__ import annotations

import math

from prometheus_client import Counter, Histogram

PRODUCE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds; the producer lingers 5 ms (feedpipe.kafka.producer.DEFAULT_CONFIG) and a request
waits at most its ack timeout (10 s by default)."""

EVENTS_ACCEPTED = Counter(
    "feedpipe_collector_events_accepted", "Reader events acknowledged by Kafka", ["type"]
)
EVENTS_REJECTED = Counter(
    "feedpipe_collector_events_rejected", "Reader events refused (sent to the DLQ)", ["reason"]
)
REQUESTS_REJECTED = Counter(
    "feedpipe_collector_requests_rejected", "Requests refused as a whole", ["reason"]
)
PRODUCE_SECONDS = Histogram(
    "feedpipe_collector_produce_seconds",
    "Produce to the last acknowledgement of one request's records",
    buckets=PRODUCE_BUCKETS,
)


def observe_accepted(event_type: str, n: int = 1) -> None:
    """Count ``n`` acknowledged events of ``event_type`` (ignored when ``n`` <= 0)."""
    if n > 0:
        EVENTS_ACCEPTED.labels(event_type).inc(n)


def observe_event_rejected(reason: str) -> None:
    """Count one event refused with reason code ``reason``."""
    EVENTS_REJECTED.labels(reason).inc()


def observe_request_rejected(reason: str) -> None:
    """Count one request refused as a whole with reason code ``reason``."""
    REQUESTS_REJECTED.labels(reason).inc()


def observe_produce(seconds: float) -> None:
    """Record one request's produce-to-acknowledgement time (s); NaN/inf ignored, < 0 -> 0."""
    if math.isfinite(seconds):
        PRODUCE_SECONDS.observe(max(0.0, seconds))
