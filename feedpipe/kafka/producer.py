"""The one Kafka producer module: every record feedpipe publishes goes through librdkafka here.

* :class:`IdempotentProducer` (blocking; connectors, the enrich stage's fan-out, benchmarks);
* :class:`AsyncProducer` (sends return asyncio futures of their delivery; the click path);
* :class:`DeliverySettler` (resolves asyncio futures from delivery reports; the webhook
  receiver and :class:`AsyncProducer`).

No other module constructs a :class:`confluent_kafka.Producer`.

:class:`IdempotentProducer` wraps :class:`confluent_kafka.Producer` with the settings a
connector needs to neither lose nor duplicate records on retries:

- ``enable.idempotence=true`` and ``acks=all`` (librdkafka then also caps
  ``max.in.flight.requests.per.connection`` at 5 and retries without reordering; see
  librdkafka CONFIGURATION.md, "enable.idempotence");
- ``partitioner=murmur2_random``: the Java client's default partitioner (murmur2 of the key,
  random for a null key), which aiokafka's ``DefaultPartitioner`` and therefore Faust use too,
  so a key lands on the partition Faust expects (librdkafka CONFIGURATION.md, "partitioner");
- ``linger.ms=5`` and ``compression.type=lz4`` for throughput.

Delivery reports are counted (acked / failed); a failure is never silent: :meth:`flush`
raises :class:`DeliveryError` when a message is still undelivered or failed since the failures
last raised. Each failure is raised once, so a producer recovers once the broker does (a
connector whose flush raised does not save its cursor and publishes the same records again).
A producer shared by several connectors attributes failures per connector through
``on_delivery`` (see :meth:`connectors.base.Connector.flush`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

import orjson
from confluent_kafka import KafkaError, Message, Producer

from feedpipe.errors import FeedpipeError
from feedpipe.settings import SECRET_KAFKA_KEYS, settings

DEFAULT_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "compression.type": "lz4",
}
MAX_KEPT_ERRORS = 20
DeliveryCallback = Callable[[KafkaError | None, Message], None]


class DeliveryError(FeedpipeError):
    """Messages were not delivered: a delivery report carried an error, messages were still
    queued when a flush timed out, or the local queue stayed full. The message says how many
    and quotes the first errors."""


class IdempotentProducer:
    """Idempotent ``acks=all`` producer with counted delivery reports.

    Args:
        bootstrap: Kafka bootstrap servers, e.g. ``127.0.0.1:19092``.
        client_id: Kafka ``client.id`` (shows in broker logs and quotas).
        config: extra librdkafka properties, applied over :data:`DEFAULT_CONFIG` (e.g.
            ``{"linger.ms": 20}``). ``enable.idempotence``/``acks`` can be overridden only
            deliberately (tests); connectors should not.
        stats_interval_ms: when > 0, librdkafka statistics are collected at that interval and
            the latest is kept in :attr:`last_stats` (used to check the idempotent producer id).
        buffer_timeout_s: how long :meth:`produce` keeps polling when the local queue is full
            (``BufferError``) before giving up with :class:`DeliveryError`.

    Attributes:
        acked: messages the broker acknowledged.
        failed: messages whose delivery report carried an error.
        errors: the first :data:`MAX_KEPT_ERRORS` errors as ``"topic[partition]: error"``.
        last_stats: latest librdkafka statistics (parsed JSON) or None.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "feedpipe-connector",
        config: Mapping[str, Any] | None = None,
        stats_interval_ms: int = 0,
        buffer_timeout_s: float = 60.0,
    ) -> None:
        conf: dict[str, Any] = {
            **DEFAULT_CONFIG,
            **settings().kafka_config(bootstrap),  # bootstrap + TLS/SASL of the settings
            "client.id": client_id,
            **(config or {}),
        }
        if stats_interval_ms > 0:
            conf["statistics.interval.ms"] = stats_interval_ms
            conf["stats_cb"] = self._on_stats
        conf["on_delivery"] = self._on_delivery
        self.config: dict[str, Any] = {
            k: v
            for k, v in conf.items()
            if k not in ("on_delivery", "stats_cb") and k not in SECRET_KAFKA_KEYS
        }
        self.buffer_timeout_s = buffer_timeout_s
        self.acked = 0
        self.failed = 0
        self.produced = 0
        self.errors: list[str] = []
        self._raised = 0  # failures already raised by flush / raise_for_failures
        self.last_stats: dict[str, Any] | None = None
        self._producer = Producer(conf)
        self._closed = False

    # -- callbacks (run inside poll/flush on the calling thread) --------------------------
    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acked += 1
            return
        self.failed += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def _chained(self, extra: DeliveryCallback) -> DeliveryCallback:
        def cb(err: KafkaError | None, msg: Message) -> None:
            self._on_delivery(err, msg)
            extra(err, msg)

        return cb

    def _on_stats(self, stats_json: str) -> None:
        self.last_stats = orjson.loads(stats_json)

    # -- API ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Messages handed to :meth:`produce` without a delivery report yet."""
        return len(self._producer)

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        on_delivery: DeliveryCallback | None = None,
        serve: bool = True,
    ) -> None:
        """Queue one message; serves delivery reports (``poll(0)``) after queueing unless
        ``serve`` is False (a caller queueing a batch polls once after it, or leaves the reports
        to a polling thread such as :class:`DeliverySettler`'s).

        ``on_delivery(err, msg)``, when given, is called for this message's delivery report
        after it was counted (``err`` None when acknowledged); like every delivery report it
        runs on the thread that calls :meth:`poll` / :meth:`flush` / :meth:`produce`.

        When the local queue is full (``BufferError``) it polls (serving reports, letting the
        queue drain) and retries for up to ``buffer_timeout_s``.

        Raises:
            DeliveryError: the queue stayed full for ``buffer_timeout_s``.
            confluent_kafka.KafkaException: a fatal producer error (e.g. idempotence state
                lost); never swallowed.
        """
        deadline: float | None = None
        cb = None if on_delivery is None else self._chained(on_delivery)
        while True:
            try:
                if cb is None:  # the producer-wide callback (config on_delivery)
                    self._producer.produce(topic, value, key)
                else:
                    self._producer.produce(topic, value, key, on_delivery=cb)
                break
            except BufferError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.buffer_timeout_s
                elif now > deadline:
                    raise DeliveryError(
                        f"local producer queue full for {self.buffer_timeout_s} s "
                        f"({self.pending} pending; is the broker reachable?)"
                    ) from None
                self._producer.poll(0.05)
        self.produced += 1
        if serve:
            self._producer.poll(0)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports for up to ``timeout_s`` seconds; returns how many were served."""
        return int(self._producer.poll(timeout_s))

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait up to ``timeout_s`` seconds until every queued message has a delivery report
        (serving the reports); returns how many are still undelivered. Never raises for
        failed reports: the caller checks them (see :meth:`flush`)."""
        return int(self._producer.flush(timeout_s))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued message has a delivery report, then check for failures.

        Raises:
            DeliveryError: messages remain undelivered after ``timeout_s`` seconds, or a
                delivery report carried an error since the failures last raised.
        """
        remaining = self.wait(timeout_s)
        if remaining:
            raise DeliveryError(
                f"{remaining} messages still undelivered after {timeout_s} s flush "
                f"({self.failed} failed; first errors: {self.errors[:3]})"
            )
        self.raise_for_failures()

    def raise_for_failures(self) -> None:
        """Raise :class:`DeliveryError` when delivery reports carried errors since the last
        time this (or :meth:`flush`) raised; each failure is raised once."""
        new = self.failed - self._raised
        if new > 0:
            self._raised = self.failed
            raise DeliveryError(
                f"{new} of {self.produced} messages failed delivery; first errors: "
                + "; ".join(self.errors[:5])
            )

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (raising on undelivered or failed messages) and mark the producer closed.

        librdkafka frees the client when the object is garbage-collected; idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self.flush(timeout_s)

    def __enter__(self) -> IdempotentProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # do not mask the original error; still try to deliver what is queued
            self._producer.flush(5.0)


Delivered = asyncio.Future[tuple[int, int]]
"""A record's delivery: ``(partition, offset)`` once acknowledged, or :class:`DeliveryError`."""


class _Pollable(Protocol):
    def poll(self, timeout: float = ..., /) -> int: ...


class _Batch:
    """``n`` records awaited through one future (:meth:`DeliverySettler.batch_callback`)."""

    __slots__ = ("fut", "remaining")

    def __init__(self, fut: Delivered, n: int) -> None:
        self.fut = fut
        self.remaining = n


class DeliverySettler:
    """Resolves asyncio futures from librdkafka delivery reports, in batches.

    Used by the webhook receiver (connectors/webhook/) and :class:`AsyncProducer`. Delivery
    reports run on whichever thread polls the producer (the background thread started here,
    ``poll(0.05)`` in a loop, or the event loop thread inside ``produce``). Each report is
    appended to a deque; after every poll one ``call_soon_threadsafe`` (one self-pipe write)
    wakes the loop to settle everything collected, instead of one wake-up per message. A
    future already done (its waiter gave up) is skipped; a failed report sets
    :class:`DeliveryError` on its future.

    Args:
        producer: anything with librdkafka's ``poll(timeout_s)`` (a
            :class:`confluent_kafka.Producer` or an :class:`IdempotentProducer`).
        thread_name: name of the polling thread.
    """

    def __init__(self, producer: _Pollable, thread_name: str = "kafka-delivery") -> None:
        self.producer = producer
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready: deque[tuple[Delivered, KafkaError | None, Message]] = deque()
        self._batched: deque[tuple[_Batch, KafkaError | None, Message]] = deque()
        self._scheduled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def callback(self, fut: Delivered) -> DeliveryCallback:
        """The delivery callback for one message whose outcome resolves ``fut``: to
        ``(partition, offset)`` of the acknowledged record, or :class:`DeliveryError`."""

        def cb(err: KafkaError | None, msg: Message) -> None:
            self._ready.append((fut, err, msg))

        return cb

    def batch_callback(self, fut: Delivered, n: int) -> DeliveryCallback:
        """One delivery callback for ``n`` messages whose joint outcome resolves ``fut``: to
        ``(partition, offset)`` of the last acknowledged one once all ``n`` are acknowledged, or
        :class:`DeliveryError` at the first failed report (one future per request instead of
        one per record: the event collector's batches). The count is kept on the loop thread
        (in the settle step), so reports served by several threads cannot race on it."""
        batch = _Batch(fut, n)

        def cb(err: KafkaError | None, msg: Message) -> None:
            self._batched.append((batch, err, msg))

        return cb

    def _settle_batches(self) -> None:
        ready = self._batched
        while ready:
            batch, err, msg = ready.popleft()
            fut = batch.fut
            if fut.done():
                continue
            if err is not None:
                fut.set_exception(DeliveryError(f"{msg.topic()}[{msg.partition()}]: {err.str()}"))
                continue
            batch.remaining -= 1
            if batch.remaining <= 0:
                fut.set_result((msg.partition() or 0, msg.offset() or 0))

    def _settle(self) -> None:
        self._scheduled = False
        if self._batched:
            self._settle_batches()
        ready = self._ready
        while ready:
            fut, err, msg = ready.popleft()
            if fut.done():  # its waiter gave up (a webhook answered 503, a cancelled task)
                continue
            if err is None:
                fut.set_result((msg.partition() or 0, msg.offset() or 0))  # set once acked
            else:
                fut.set_exception(DeliveryError(f"{msg.topic()}[{msg.partition()}]: {err.str()}"))

    def wake(self) -> None:
        """Schedule one settle on the loop when reports are waiting (safe from any thread;
        a report arriving after the loop closed is dropped: nobody awaits it any more)."""
        if (self._ready or self._batched) and not self._scheduled and self.loop is not None:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # loop closed
                self.loop.call_soon_threadsafe(self._settle)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)
            self.wake()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the polling thread; futures are settled on ``loop``."""
        self.loop = loop
        self._thread.start()

    def stop_thread(self) -> None:
        """Stop the polling thread (within ~0.05 s; blocks up to 5 s), settling nothing."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def drain(self) -> None:
        """Serve the reports librdkafka still holds and settle what is waiting (on the loop's
        thread: futures are not thread-safe)."""
        self.producer.poll(0)
        self._settle()

    def stop(self) -> None:
        """:meth:`stop_thread`, then :meth:`drain` (call it on the loop's thread)."""
        self.stop_thread()
        self.drain()


ASYNC_BUFFER_TIMEOUT_S = 60.0
"""Seconds an :meth:`AsyncProducer.send` waits while librdkafka's local queue is full."""
ASYNC_POLL_S = 0.05
"""Seconds between two produce attempts while the local queue is full."""


class AsyncProducer:
    """Idempotent ``acks=all`` librdkafka producer whose sends return asyncio futures.

    Same settings as :class:`IdempotentProducer` (:data:`DEFAULT_CONFIG` and the TLS / SASL of
    ``feedpipe.settings.settings().kafka_config()``). Building record batches, compressing and
    writing them is C work on librdkafka's own threads, not Python on the event loop.

    :meth:`send` queues one record and returns an :class:`asyncio.Future` of its delivery
    report: ``(partition, offset)`` once the broker acknowledged it, :class:`DeliveryError` when
    the report carried an error (never swallowed: the click path awaits every future before it
    commits the batch's offsets, so a failed delivery fails the batch, which is redelivered).
    Reports are served by one background thread (:class:`DeliverySettler`): each poll that
    served reports wakes the event loop once to settle them all.

    Args:
        bootstrap: Kafka bootstrap servers, e.g. ``127.0.0.1:19092``.
        client_id: Kafka ``client.id``.
        config: extra librdkafka properties over :data:`DEFAULT_CONFIG` (tests).

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
        self._settler = DeliverySettler(self._producer, thread_name=f"{client_id}-delivery")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the delivery-report thread; futures are settled on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._settler.start(self._loop)

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> Delivered:
        """Queue one record (``value`` None: a tombstone); return the future of its delivery:
        ``(partition, offset)``, or :class:`DeliveryError` when the report carries an error.

        Raises:
            DeliveryError: the local queue stayed full for :data:`ASYNC_BUFFER_TIMEOUT_S`.
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
                    deadline = now + ASYNC_BUFFER_TIMEOUT_S
                elif now > deadline:
                    raise DeliveryError(
                        f"local producer queue full for {ASYNC_BUFFER_TIMEOUT_S} s "
                        f"({len(self._producer)} pending; is the broker reachable?)"
                    ) from None
                await asyncio.sleep(ASYNC_POLL_S)  # the report thread drains the queue

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Wait up to ``timeout_s`` s for queued records, stop the report thread and settle
        what was reported. Never raises for failed deliveries (their futures carry them)."""
        assert self._loop is not None
        await self._loop.run_in_executor(None, self._producer.flush, timeout_s)
        await self._loop.run_in_executor(None, self._settler.stop_thread)
        self._settler.drain()  # on the loop: futures are settled here
