"""An asyncio face on librdkafka's idempotent producer, for the click path's outputs.

:class:`AsyncProducer` sends through :class:`confluent_kafka.Producer` (librdkafka, C) with the
connectors' settings (``feedpipe.kafka.producer.DEFAULT_CONFIG``: ``enable.idempotence``,
``acks=all``, ``partitioner=murmur2_random`` (the Java / aiokafka default, so a key lands on
the partition aiokafka would pick), ``linger.ms=5``, ``compression.type=lz4``) and the TLS /
SASL settings of ``feedpipe.settings.settings().kafka_config()``.

Why: building record batches, compressing and writing them is C work on librdkafka's own
threads, where aiokafka does it in Python on the event loop (~10% of the click path's time
under py-spy; ``bench/bench_clicks.py`` measures both producers in one run).

:meth:`AsyncProducer.send` queues one record and returns an :class:`asyncio.Future` of its
delivery report: ``(partition, offset)`` once the broker acknowledged it,
:class:`feedpipe.kafka.producer.DeliveryError` when the report carried an error (never swallowed:
the click path awaits every future before it commits the batch's offsets, so a failed delivery
fails the batch, which is redelivered). Delivery
reports are served by one background thread (``poll(0.05)`` in a loop); each poll that served
reports wakes the event loop once (one ``call_soon_threadsafe``) to settle them all, the same
scheme as ``connectors.webhook``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Producer

from feedpipe.kafka.producer import DEFAULT_CONFIG, Delivered, DeliveryError, DeliverySettler
from feedpipe.settings import settings

BUFFER_TIMEOUT_S = 60.0  # s a send waits while librdkafka's local queue is full
POLL_S = 0.05  # s between two produce attempts while the local queue is full


class AsyncProducer:
    """Idempotent ``acks=all`` librdkafka producer whose sends return asyncio futures.

    Args:
        bootstrap: Kafka bootstrap servers, e.g. ``127.0.0.1:19092``.
        client_id: Kafka ``client.id``.
        config: extra librdkafka properties over ``DEFAULT_CONFIG`` (tests).

    Use ``await start()`` on the loop that awaits the futures, ``await stop()`` at the end.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "feedpipe-clickpath",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        conf: dict[str, Any] = {
            **DEFAULT_CONFIG,
            **settings().kafka_config(bootstrap),  # bootstrap + TLS/SASL of the settings
            "client.id": client_id,
            **(config or {}),
        }
        self._producer = Producer(conf)
        self._settler = DeliverySettler(self._producer, thread_name="clickpath-delivery")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the delivery-report thread; futures are settled on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._settler.start(self._loop)

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None
    ) -> Delivered:
        """Queue one record (``value`` None: a tombstone); return the future of its delivery:
        ``(partition, offset)``, or :class:`DeliveryError` when the report carries an error.

        Raises:
            DeliveryError: librdkafka's local queue stayed full for :data:`BUFFER_TIMEOUT_S`.
            confluent_kafka.KafkaException: a fatal producer error (never swallowed).
        """
        assert self._loop is not None, "AsyncProducer.start() was not awaited"
        fut: Delivered = self._loop.create_future()
        cb = self._settler.callback(fut)
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=cb)
                return fut
            except BufferError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + BUFFER_TIMEOUT_S
                elif now > deadline:
                    raise DeliveryError(
                        f"local producer queue full for {BUFFER_TIMEOUT_S} s "
                        f"({len(self._producer)} pending; is the broker reachable?)"
                    ) from None
                await asyncio.sleep(POLL_S)  # the report thread drains the queue meanwhile

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Wait up to ``timeout_s`` s for queued records, stop the report thread and settle
        what was reported. Never raises for failed deliveries (their futures carry them)."""
        assert self._loop is not None
        await self._loop.run_in_executor(None, self._producer.flush, timeout_s)
        await self._loop.run_in_executor(None, self._settler.stop_thread)
        self._settler.drain()  # on the loop: futures are settled here
