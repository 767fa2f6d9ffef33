"""The CDC connector: consumes a Debezium ``wp_posts`` topic, publishes ``wordpress.post`` raw
CMS events (see :mod:`connectors.cdc`), commits offsets only after Kafka acknowledged."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connectors.base import Connector, ConnectorMetrics, Stopwatch
from connectors.cdc.debezium import Skip
from connectors.cdc.wp_posts import cdc_to_raw_event
from feedpipe.cms.events import SUBJECT as CMS_SUBJECT
from feedpipe.errors import ConfigError, RejectedInput
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings
from feedpipe.topology import topology
from feedpipe.wire.codec import codec

log = logging.getLogger("connectors.cdc")


@dataclass
class CdcMetrics(ConnectorMetrics):
    """:class:`ConnectorMetrics` plus ``skipped`` (messages not published, by reason) and the
    committed ``offsets`` (``"topic[partition]"`` -> next offset; ``cursor`` shows them as
    text)."""

    skipped: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (see :meth:`ConnectorMetrics.as_dict`) with skipped and offsets."""
        return {**super().as_dict(), "skipped": dict(self.skipped), "offsets": dict(self.offsets)}


class CdcConnector(Connector):
    """Consumes a Debezium ``wp_posts`` topic and publishes ``wordpress.post`` RawCmsEvents.

    At-least-once: offsets are committed (synchronously) only after every event produced from
    the consumed messages was acknowledged by Kafka (:meth:`Connector.flush`), after each batch
    and when partitions are revoked. A crash between the acknowledgement and the commit
    re-publishes the batch; event ids are deterministic and the pipeline deduplicates by content
    id and hash. The consumer group's committed offsets are the cursor.

    Raises:
        ConfigError: no ``dlq`` given and the target topic declares none.

    Args:
        name: source name (``RawCmsEvent.source``, part of content_id).
        brand: brand of the content.
        topic: the Debezium topic (``<topic.prefix>.<db>.wp_posts``).
        group_id: consumer group (default ``feedpipe-cdc-<name>``).
        post_types: ``post_type`` values to publish.
        raw_topic / dlq: target topic (default ``topology().ingest.cms``) and its dead-letter
            topic (default: the target topic's ``dlq`` in ``topology.yaml``).
        batch_size: messages per ``consume`` call (and per flush + commit).
        poll_timeout_s: seconds one ``consume`` call waits.
        idle_exit_s: return from :meth:`run` after this many seconds without messages, counted
            from the partition assignment (None: run until :meth:`stop`).
        consumer_config: extra librdkafka consumer properties.
        producer / bootstrap: see :class:`Connector`.
        flush_timeout_s: seconds to wait for acknowledgements per batch.
    """

    def __init__(
        self,
        name: str,
        brand: str,
        *,
        topic: str,
        group_id: str | None = None,
        post_types: Iterable[str] = ("post",),
        raw_topic: str | None = None,
        dlq: str | None = None,
        batch_size: int = 500,
        poll_timeout_s: float = 1.0,
        idle_exit_s: float | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        producer: IdempotentProducer | None = None,
        bootstrap: str | None = None,
        flush_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(name, producer=producer, bootstrap=bootstrap)
        self.metrics: CdcMetrics = CdcMetrics()
        self.brand = brand
        self.topic = topic
        self.group_id = group_id or f"feedpipe-cdc-{name}"
        self.post_types = tuple(post_types)
        topo = topology()
        self.raw_topic = raw_topic if raw_topic is not None else topo.ingest.cms
        declared = topo.topics.get(self.raw_topic)
        default_dlq = declared.dlq if declared is not None else None
        dlq = dlq if dlq is not None else default_dlq
        if dlq is None:
            raise ConfigError(f"cdc {name}: topic {self.raw_topic} has no dlq; give one")
        self.dlq: str = dlq
        self.batch_size = max(1, batch_size)
        self.poll_timeout_s = poll_timeout_s
        self.idle_exit_s = idle_exit_s
        self.consumer_config = dict(consumer_config or {})
        self.flush_timeout_s = flush_timeout_s
        self._consumer: Consumer | None = None
        self._encode = codec(CMS_SUBJECT).encode

    def _open_consumer(self) -> Consumer:
        conf: dict[str, Any] = {
            **settings().kafka_config(self._bootstrap),  # bootstrap + TLS/SASL
            "group.id": self.group_id,
            "client.id": f"feedpipe-{self.name}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **self.consumer_config,
        }
        return Consumer(conf)

    def handle(self, msg: Message) -> None:
        """Map one consumed message and queue what it becomes (event, dead letter or a
        counted skip)."""
        self.metrics.fetched += 1
        origin = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        value = msg.value()
        try:
            result = cdc_to_raw_event(
                value, self.name, self.brand, post_types=self.post_types, origin=origin
            )
        except RejectedInput as exc:
            self.dead_letter(
                self.dlq,
                source_topic=msg.topic() or self.topic,
                code=exc.code,
                reason=exc.reason,
                value=value or b"",
                key=msg.key(),
                origin=origin,
                stage="cdc",
            )
            return
        if isinstance(result, Skip):
            self.metrics.skipped[result.code] = self.metrics.skipped.get(result.code, 0) + 1
            return
        key, event = result
        self.produce(self.raw_topic, key.encode(), self._encode(event))

    def _commit(self, consumer: Consumer) -> None:
        """Flush (every produced event acked), then commit the consumed positions."""
        self.flush(self.flush_timeout_s)
        positions = [
            tp
            for tp in consumer.position(consumer.assignment())
            if tp.offset is not None and tp.offset >= 0
        ]
        if not positions:
            return
        try:
            consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._NO_OFFSET:
                return
            raise
        for tp in positions:
            self.metrics.offsets[f"{tp.topic}[{tp.partition}]"] = tp.offset
        self.metrics.cursor = ", ".join(f"{k}@{v}" for k, v in sorted(self.metrics.offsets.items()))

    def run(self) -> CdcMetrics:
        """Consume, map, publish, flush and commit until :meth:`stop` (or ``idle_exit_s``).

        Raises:
            feedpipe.kafka.producer.DeliveryError: events were not acknowledged (offsets of the
                batch are then not committed).
            confluent_kafka.KafkaException: a consumer error other than end of partition.
        """
        self.setup()
        clock = Stopwatch()
        consumer = self._open_consumer()
        self._consumer = consumer

        failed = False

        assigned = False

        def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
            nonlocal assigned
            assigned = True
            idle.restart()  # idle time counts from the assignment, not the group join

        def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
            if not failed:  # never commit past events that were not acknowledged
                self._commit(c)

        idle = Stopwatch()
        consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        try:
            while not self.stopping:
                msgs = consumer.consume(self.batch_size, self.poll_timeout_s)
                handled = 0
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        if err.fatal() or not err.retriable():
                            raise KafkaException(err)
                        log.warning("cdc %s: consumer error %s", self.name, err)
                        continue
                    self.handle(msg)
                    handled += 1
                if handled:
                    self._commit(consumer)
                    idle.restart()
                elif self.idle_exit_s is not None and assigned and idle.elapsed >= self.idle_exit_s:
                    break
            self._commit(consumer)
        except BaseException:
            failed = True
            raise
        finally:
            self._consumer = None
            consumer.close()
            self.metrics.elapsed_s = clock.elapsed
        return self.metrics
