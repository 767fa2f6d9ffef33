"""An asyncio face on librdkafka's idempotent producer, for the click path's outputs.

:class:`AsyncProducer` sends through :class:`confluent_kafka.Producer` (librdkafka, C) with the
connectors' settings (``connectors.producer.DEFAULT_CONFIG``: ``enable.idempotence``,
``acks=all``, ``partitioner=murmur2_random`` (the Java / aiokafka default, so a key lands on
the partition aiokafka would pick), ``linger.ms=5``, ``compression.type=lz4``) and the TLS /
SASL settings of ``feedpipe.settings.settings().kafka_config()``.

Why: building record batches, compressing and writing them is C work on librdkafka's own
threads, where aiokafka does it in Python on the event loop (~10% of the click path's time
under py-spy; ``bench/bench_clicks.py`` measures both producers in one run).

:meth:`AsyncProducer.send` queues one record and returns an :class:`asyncio.Future` of its
delivery report: ``(partition, offset)`` once the broker acknowledged it,
:class:`connectors.producer.DeliveryError` when the report carried an error (never swallowed:
the click path awaits every future before it commits the batch's offsets, so a failed delivery
fails the batch, which is redelivered). Delivery
reports are served by one background thread (``poll(0.05)`` in a loop); each poll that served
reports wakes the event loop once (one ``call_soon_threadsafe``) to settle them all, the same
scheme as ``connectors.webhook``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from connectors.producer import DEFAULT_CONFIG, DeliveryError
from feedpipe.settings import settings

BUFFER_TIMEOUT_S = 60.0  # s a send waits while librdkafka's local queue is full
POLL_S = 0.05  # s: one poll of the delivery-report thread (bounds the stop delay)


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
        self._ready: deque[tuple[asyncio.Future[tuple[int, int]], KafkaError | None, Message]] = (
            deque()
        )
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clickpath-delivery", daemon=True)

    async def start(self) -> None:
        """Start the delivery-report thread; futures are settled on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None
    ) -> asyncio.Future[tuple[int, int]]:
        """Queue one record (``value`` None: a tombstone); return the future of its delivery:
        ``(partition, offset)`` once acknowledged, or :class:`DeliveryError`.

        Raises:
            DeliveryError: librdkafka's local queue stayed full for :data:`BUFFER_TIMEOUT_S`.
            confluent_kafka.KafkaException: a fatal producer error (never swallowed).
        """
        assert self._loop is not None, "AsyncProducer.start() was not awaited"
        fut: asyncio.Future[tuple[int, int]] = self._loop.create_future()
        cb = self._callback(fut)
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

    def _callback(
        self, fut: asyncio.Future[tuple[int, int]]
    ) -> Callable[[KafkaError | None, Message], None]:
        ready = self._ready

        def cb(err: KafkaError | None, msg: Message) -> None:  # on the report thread
            ready.append((fut, err, msg))

        return cb

    def _settle(self) -> None:  # on the loop
        self._scheduled = False
        ready = self._ready
        while ready:
            fut, err, msg = ready.popleft()
            if fut.done():  # cancelled by an awaiting task that gave up
                continue
            if err is None:
                fut.set_result((msg.partition() or 0, msg.offset() or 0))
            else:
                fut.set_exception(DeliveryError(f"{msg.topic()}[{msg.partition()}]: {err.str()}"))

    def _wake(self) -> None:
        if self._ready and not self._scheduled and self._loop is not None:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # loop closed: nobody awaits any more
                self._loop.call_soon_threadsafe(self._settle)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_S)
            self._wake()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Wait up to ``timeout_s`` s for queued records, stop the report thread and settle
        what was reported. Never raises for failed deliveries (their futures carry them)."""
        assert self._loop is not None
        await self._loop.run_in_executor(None, self._producer.flush, timeout_s)
        self._stop.set()
        if self._thread.is_alive():
            await self._loop.run_in_executor(None, self._thread.join, 5.0)
        self._producer.poll(0)
        self._settle()
