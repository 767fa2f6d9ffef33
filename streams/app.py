"""The Faust app of the worker: built here, its stages registered by streams/worker.py.

One worker process runs three stages (topology.yaml ``stages``):

    cms.raw -normalise-> content.normalised -enrich-> content.enriched (+ Redis content)
    reader.events -clickpath-> profiles.updated, feeds.updated (+ Redis profiles and feeds)

* two Faust agents, :mod:`streams.stages.normalise` and :mod:`streams.stages.enrich`
  (``kind: agent``): per-record work is heavy (parsing, enrichment), volumes are small;
* the click path, :mod:`streams.clickpath` (``kind: service``): a Faust service in the same
  worker running its own aiokafka batch consumer under its own consumer group. Reader events
  are the volume: Faust's per-event machinery (stream iteration, acks, one send per event,
  changelog writes) costs ~17x against hand-written batch code, and a Faust table cannot be
  modified inside ``stream.take`` (faust-streaming/faust#497), so the click path folds whole
  partition batches and applies each in one Redis transaction instead.

This module imports no stage: stages import :data:`app` and :func:`topic` to register
themselves, and streams/worker.py imports the stage modules (``python -m streams worker``).

Topics are declared in topology.yaml and created by ``feedpipe topics apply`` before workers
start (``topic_allow_declare=False``: the app never creates or reshapes them). Values travel as
raw bytes in the Confluent Avro framing (feedpipe.wire.codec); agents decode them themselves so
an undecodable record goes to the DLQ instead of crashing the stream. State lives in Redis,
written idempotently (see each stage's docstring); Faust tables are not used.

Faust's data directory (it creates ``v1/tables`` there on the first start, although no table
is used) is ``<state_dir>/<app id>-data`` (:func:`create_app`), not Faust's default
``<app id>-data`` in the current directory, so running a worker or the tests leaves nothing in
the checkout.

Operations: the worker's web server (127.0.0.1:``worker_web_port``) serves Prometheus text at
``/metrics`` (feedpipe.monitoring.metrics; records sent per agent are counted by
:class:`SendCounter`), and an ops timer probes consumer lag and publishes the ops snapshot to
Redis every ``feedpipe.monitoring.snapshot.OPS_INTERVAL_S`` seconds (:func:`ops_tick`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from aiohttp.web import Response as AioResponse
from faust.agents import current_agent
from faust.types import ProducerT
from faust.types.tuples import PendingMessage
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from feedpipe.kafka.lag import pipeline_groups
from feedpipe.monitoring import metrics
from feedpipe.monitoring.exporter import OpsExporter
from feedpipe.monitoring.snapshot import OPS_INTERVAL_S
from feedpipe.settings import Settings, settings
from feedpipe.topology import topology
from streams.runtime import redis_client

log = logging.getLogger("feedpipe.streams.ops")


def _broker_url(bootstrap: str) -> str:
    """'h1:9092,h2:9092' -> 'kafka://h1:9092;h2:9092' (Faust's multi-host form)."""
    return "kafka://" + ";".join(h.strip() for h in bootstrap.split(",") if h.strip())


def broker_credentials(s: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's broker credentials for the settings' Kafka security (None: PLAINTEXT):
    SASL (mechanism, user, password; over TLS for SASL_SSL) or TLS only, with the same
    ``ssl_context`` as :meth:`feedpipe.settings.Settings.aiokafka_config`. Faust's reprs of
    these objects show the user name only, never the password."""
    kw = s.aiokafka_config()
    if not kw:
        return None
    if s.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=kw["sasl_plain_username"],
            password=kw["sasl_plain_password"],
            mechanism=kw["sasl_mechanism"],
            ssl_context=kw.get("ssl_context"),
        )
    return faust.SSLCredentials(kw["ssl_context"])


class App(faust.App):
    """faust.App whose first start creates the data directory's parents too (Faust makes only
    the last level; the settings' state_dir may not exist yet)."""

    async def on_first_start(self) -> None:
        """Create ``conf.datadir`` with its parents, then Faust's own directories."""
        self.conf.datadir.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()


def create_app() -> faust.App:
    """Build the app from settings (broker, web port, ``state_dir`` for Faust's data directory,
    see the module docstring) and topology (nothing declared here)."""
    s = settings()
    return App(
        s.app_id,
        datadir=s.state_dir / f"{s.app_id}-data",
        broker=_broker_url(s.kafka_bootstrap),
        broker_credentials=broker_credentials(s),
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
        web_bind=s.worker_web_host,
        web_port=s.worker_web_port,
        web_metrics_enabled=True,
    )


class SendCounter(faust.Sensor):
    """Counts every record an agent sends (feedpipe_events_out_total{agent, topic}).

    The agent is the running Faust agent (sends happen in its task); "none" otherwise.
    """

    def on_send_initiated(
        self,
        producer: ProducerT,
        topic: str,
        message: PendingMessage,
        keysize: int,
        valsize: int,
    ) -> Any:
        """Count the send; the state returned is unused."""
        agent = current_agent()
        metrics.observe_event_out(str(agent.name) if agent is not None else "none", topic)
        return None


app = create_app()
app.sensors.add(SendCounter())
metrics.count_unreadable_interests()


@app.page("/metrics")
class MetricsView(View):
    """GET /metrics: Prometheus text exposition of the default registry
    (feedpipe.monitoring.metrics)."""

    async def get(self, request: Request) -> Response:
        """Render every metric of the process."""
        body = generate_latest(REGISTRY)
        return cast(Response, AioResponse(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST}))


_exporter: OpsExporter | None = None


def _ops_exporter() -> OpsExporter:
    global _exporter
    if _exporter is None:
        s = settings()
        _exporter = OpsExporter(s.kafka_bootstrap, pipeline_groups(s.app_id), s.app_id)
    return _exporter


@app.timer(OPS_INTERVAL_S, name="ops")
async def ops_tick() -> None:
    """Probe consumer lag (in a thread), update the lag gauges, publish the ops snapshot.

    Failures are logged and retried at the next tick; they never stop the worker.
    """
    exporter = _ops_exporter()
    try:
        rows, evaluations = await asyncio.to_thread(exporter.probe_lag)
        await exporter.publish(redis_client(), exporter.snapshot(rows, evaluations))
    except Exception as exc:
        log.warning("ops snapshot failed: %s: %s", type(exc).__name__, exc)


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
