"""The Faust app: one worker process runs the four chained agents.

    cms.raw -normalise-> content.normalised -enrich-> content.enriched (+ Redis content)
    reader.events -profiles-> profiles.updated (+ Redis profiles) -feeds-> feeds.updated
    (+ Redis feeds)

Topics are declared in topology.yaml and created by ``feedpipe topics apply`` before workers
start (``topic_allow_declare=False``: the app never creates or reshapes them). Values travel as
raw bytes in the Confluent Avro framing (feedpipe.codec); agents decode them themselves so an
undecodable record goes to the DLQ instead of crashing the stream. State lives in Redis, written
idempotently (see each stage's docstring); Faust tables are not used (they cannot be updated
inside ``stream.take``, faust-streaming/faust#497).

Run with ``feedpipe worker`` (or ``python -m streams worker -l info``).
"""

from __future__ import annotations

import faust

from feedpipe.settings import settings
from feedpipe.topology import topology


def _broker_url(bootstrap: str) -> str:
    """'h1:9092,h2:9092' -> 'kafka://h1:9092;h2:9092' (Faust's multi-host form)."""
    return "kafka://" + ";".join(h.strip() for h in bootstrap.split(",") if h.strip())


def create_app() -> faust.App:
    """Build the app from settings (broker, web port) and topology (nothing declared here)."""
    s = settings()
    return faust.App(
        s.app_id,
        broker=_broker_url(s.kafka_bootstrap),
        store="memory://",
        autodiscover=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_acks=-1,
        producer_linger_ms=5,
        stream_buffer_maxsize=16384,
        web_enabled=True,
        web_bind="127.0.0.1",
        web_port=s.worker_web_port,
        web_metrics_enabled=True,
    )


app = create_app()


def topic(name: str) -> faust.TopicT:
    """The Faust handle of topology topic ``name`` (raw bytes keys and values).

    Raises:
        KeyError: ``name`` is not declared in topology.yaml.
    """
    spec = topology().topics[name]
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions,
        internal=False,
    )


def load_stages() -> None:
    """Import the stage modules so their agents register on ``app``."""
    import streams.enrich
    import streams.feeds
    import streams.normalise
    import streams.profiles  # noqa: F401
