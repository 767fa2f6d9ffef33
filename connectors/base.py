"""Base class of every connector (file replay, pollers, webhook receiver, CDC).

Lifecycle: ``setup()`` (open the producer, load the cursor) -> ``run()`` (fetch and publish,
returns :class:`ConnectorMetrics`) -> ``stop()`` (ask ``run`` to stop, flush, close what the
connector opened). A connector is also a context manager (``setup`` / ``stop``).

Publishing goes through :meth:`Connector.produce` (one :class:`IdempotentProducer`, possibly
shared by several connectors) and input a connector refuses goes to a dead-letter topic through
:meth:`Connector.dead_letter` with its reason, never dropped. A connector that polls a remote
system can persist its position with :meth:`Connector.load_cursor` / :meth:`save_cursor`
(a JSON file written atomically).
"""

from __future__ import annotations

import abc
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from feedpipe.kafka.producer import DeliveryError, IdempotentProducer
from feedpipe.settings import settings
from feedpipe.wire.codec import codec

DLQ_VALUE_MAX = 1024 * 1024  # DeadLetter.value is truncated to 1 MiB (schemas/dead_letter.avsc)


@dataclass
class ConnectorMetrics:
    """Counters of one connector run.

    Attributes:
        fetched: input records read (events built plus rejected inputs).
        published: records handed to the producer (events and dead letters); all of them are
            acknowledged once :meth:`Connector.flush` returned without raising.
        rejected: rejected inputs by reason code (each one was published as a dead letter;
            for live sources also refused answers, e.g. a JSON:API error document, which fail
            the poll with a clear error instead).
        last_success_at: UTC time of the last successful flush (None before the first).
        elapsed_s: wall-clock seconds of the run (fetch + encode + produce + flush).
        retries: request attempts repeated after a transient failure (live sources).
        cursor: human-readable position of the persisted cursor (live sources), or None.
    """

    fetched: int = 0
    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    last_success_at: datetime | None = None
    elapsed_s: float = 0.0
    retries: int = 0
    cursor: str | None = None

    def reject(self, code: str) -> None:
        """Count one rejected input under ``code``."""
        self.rejected[code] = self.rejected.get(code, 0) + 1

    @property
    def rejected_total(self) -> int:
        """Number of rejected inputs, all reasons together."""
        return sum(self.rejected.values())

    @property
    def rate(self) -> float:
        """Published records per second of ``elapsed_s`` (0.0 before a run)."""
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (datetime as ISO 8601, rate in records/s rounded to 1)."""
        return {
            "fetched": self.fetched,
            "published": self.published,
            "rejected": dict(self.rejected),
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate, 1),
            "retries": self.retries,
            "cursor": self.cursor,
        }


class Connector(abc.ABC):
    """A source of records published to Kafka.

    Args:
        name: connector name (the configured source name), used in logs and ``client.id``.
        producer: a producer to share (not closed by :meth:`stop`); when None, :meth:`setup`
            opens one on ``bootstrap`` and :meth:`stop` closes it.
        bootstrap: Kafka bootstrap servers; default ``settings().kafka_bootstrap``.
        cursor_path: JSON file keeping the connector's position between runs (optional).

    Subclasses implement :meth:`run`; they should check :attr:`stopping` in their loop.
    """

    def __init__(
        self,
        name: str,
        *,
        producer: IdempotentProducer | None = None,
        bootstrap: str | None = None,
        cursor_path: Path | None = None,
    ) -> None:
        self.name = name
        self.metrics = ConnectorMetrics()
        self.cursor_path = cursor_path
        self._bootstrap = bootstrap
        self._producer = producer
        self._owns_producer = producer is None
        self._stop = threading.Event()
        # this connector's failed delivery reports since the last flush (list.append is
        # atomic: reports run on whichever thread polls a shared producer)
        self._failures: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------
    def setup(self) -> None:
        """Open the producer unless one was given. Idempotent."""
        if self._producer is None:
            self._producer = IdempotentProducer(
                self._bootstrap or settings().kafka_bootstrap, client_id=f"feedpipe-{self.name}"
            )
            self._owns_producer = True

    @abc.abstractmethod
    def run(self) -> ConnectorMetrics:
        """Fetch and publish until done (replay) or :meth:`stop` (live sources).

        Returns:
            The run's metrics (also in :attr:`metrics`).

        Raises:
            feedpipe.kafka.producer.DeliveryError: records could not be delivered.
        """

    def request_stop(self) -> None:
        """Ask :meth:`run` to return soon; safe from any thread. Call :meth:`stop` once
        :meth:`run` returned, to flush and close the producer."""
        self._stop.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask :meth:`run` to stop, then flush and close the producer if this connector owns it.

        Raises:
            feedpipe.kafka.producer.DeliveryError: queued records could not be delivered.
        """
        self._stop.set()
        if self._producer is not None and self._owns_producer:
            producer, self._producer = self._producer, None
            producer.close(timeout_s)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def __enter__(self) -> Connector:
        self.setup()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- publishing -----------------------------------------------------------------------
    @property
    def producer(self) -> IdempotentProducer:
        """The producer (:meth:`setup` must have run). RuntimeError otherwise."""
        if self._producer is None:
            raise RuntimeError(f"connector {self.name}: setup() was not called")
        return self._producer

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one record (see :meth:`IdempotentProducer.produce`) and count it published."""
        self.producer.produce(topic, key, value, on_delivery=self._on_delivery)
        self.metrics.published += 1

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def dead_letter(
        self,
        topic: str,
        *,
        source_topic: str,
        code: str,
        reason: str,
        value: bytes,
        key: bytes | None = None,
        origin: str | None = None,
        raw_event_id: str | None = None,
        stage: str = "replay",
    ) -> None:
        """Publish a ``feedpipe.DeadLetter`` for input refused before it reached Kafka.

        ``partition`` and ``offset`` are -1 (the input never had a Kafka position);
        ``source_topic`` is the topic it was meant for; ``value`` is truncated to 1 MiB.
        Counts the rejection under ``code`` in :attr:`metrics`.
        """
        record = {
            "stage": stage,
            "source_topic": source_topic,
            "partition": -1,
            "offset": -1,
            "reason": reason,
            "error_type": code,
            "raw_event_id": raw_event_id,
            "origin": origin,
            "key": key,
            "value": value[:DLQ_VALUE_MAX],
            "failed_at": datetime.now(UTC),
        }
        self.produce(topic, key, codec("DeadLetter").encode(record))
        self.metrics.reject(code)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every queued record's acknowledgement; sets ``last_success_at``.

        Only this connector's records count: with a producer shared by several connectors,
        another connector's failed record is raised by that connector's flush, not this one.
        Each failure is raised once, so the next flush succeeds once the broker is back.

        Raises:
            feedpipe.kafka.producer.DeliveryError: records still undelivered after ``timeout_s``
                seconds, or records of this connector that failed since the last flush.
        """
        remaining = self.producer.wait(timeout_s)
        if remaining:
            raise DeliveryError(
                f"connector {self.name}: {remaining} records still undelivered after "
                f"{timeout_s} s flush"
            )
        failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(
                f"connector {self.name}: {len(failures)} records failed delivery; first errors: "
                + "; ".join(failures[:5])
            )
        self.metrics.last_success_at = datetime.now(UTC)

    # -- cursor ---------------------------------------------------------------------------
    def load_cursor(self) -> dict[str, Any] | None:
        """The persisted cursor (a JSON object), or None without ``cursor_path`` or file.

        Raises:
            ValueError: the file is not a JSON object (a corrupt cursor must not be ignored).
        """
        if self.cursor_path is None or not self.cursor_path.is_file():
            return None
        data = orjson.loads(self.cursor_path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError(f"{self.cursor_path}: cursor is not a JSON object")
        return data

    def save_cursor(self, cursor: dict[str, Any]) -> None:
        """Persist ``cursor`` atomically (temp file + rename); no-op without ``cursor_path``.

        Call it only after :meth:`flush` succeeded, so the cursor never runs ahead of Kafka.
        """
        if self.cursor_path is None:
            return
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cursor_path.with_name(f".{self.cursor_path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(cursor, option=orjson.OPT_SORT_KEYS))
        os.replace(tmp, self.cursor_path)


class Stopwatch:
    """Monotonic stopwatch: ``elapsed`` seconds since creation (or :meth:`restart`)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def restart(self) -> None:
        """Start counting from now."""
        self._t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since start."""
        return time.perf_counter() - self._t0
