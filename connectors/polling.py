"""Base class of a live source polled over HTTP (WordPress, Drupal, feeds).

:class:`PollingConnector`: a poll loop on the source's schedule, publishing
``feedpipe.RawCmsEvent`` records to the ingest topic (``topology().ingest.cms``), a cursor
persisted only after the producer flushed (so it never runs ahead of Kafka), and a failure
state: after ``fail_threshold`` consecutive failed polls the source is reported failing (log at
ERROR, :attr:`LiveSourceMetrics.failing`) and polled at most once per ``max_backoff_s``.
"""

from __future__ import annotations

import abc
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from connectors.base import Connector, ConnectorMetrics
from connectors.config import LiveSourceSpec
from connectors.cursor import KeysetCursor
from connectors.http.client import HttpClient, RetryPolicy
from connectors.http.errors import HttpError, Interrupted
from connectors.records import Keyed
from feedpipe.cms.events import SUBJECT as CMS_SUBJECT
from feedpipe.kafka.producer import DeliveryError, IdempotentProducer
from feedpipe.topology import topology
from feedpipe.wire.codec import codec

log = logging.getLogger("feedpipe.connectors")

BACKOFF_JITTER: Final = 0.1  # failing sources wait max_backoff_s * U(1, 1.1): no thundering herd


# -- metrics -----------------------------------------------------------------------------------
@dataclass
class LiveSourceMetrics(ConnectorMetrics):
    """:class:`ConnectorMetrics` of a live source, plus its health.

    Attributes:
        polls: polls attempted.
        not_modified: polls answered 304 Not Modified (feeds) or unchanged by content hash.
        failures: failed polls by reason code (``timeout``, ``http_503``, ``jsonapi_error``...).
        consecutive_failures: failed polls since the last successful one.
        failing: True once ``consecutive_failures >= fail_threshold`` (reset by a success).
        last_error: message of the last failure (None before any).
        last_error_at: UTC time of the last failure.
    """

    polls: int = 0
    not_modified: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    consecutive_failures: int = 0
    failing: bool = False
    last_error: str | None = None
    last_error_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view: :meth:`ConnectorMetrics.as_dict` plus the health fields."""
        out = super().as_dict()
        out.update(
            polls=self.polls,
            not_modified=self.not_modified,
            failures=dict(self.failures),
            consecutive_failures=self.consecutive_failures,
            failing=self.failing,
            last_error=self.last_error,
            last_error_at=self.last_error_at.isoformat() if self.last_error_at else None,
        )
        return out


# -- polling connector -------------------------------------------------------------------------
class PollingConnector(Connector):
    """Base of a live source polled on ``spec.schedule_s``.

    Subclasses implement :meth:`poll_once` (fetch what is new, :meth:`publish` it, then
    :meth:`commit` after each page) and may override :meth:`load_state`.

    Args:
        spec: the source's configuration.
        client: a shared :class:`HttpClient` (not closed by :meth:`stop`); default: own one.
        producer / bootstrap: see :class:`Connector`.
        flush_timeout_s: seconds :meth:`commit` waits for Kafka acknowledgements.

    Raises:
        feedpipe.errors.ConfigError: ``auth.password_env`` is unset.
    """

    def __init__(
        self,
        spec: LiveSourceSpec,
        *,
        client: HttpClient | None = None,
        producer: IdempotentProducer | None = None,
        bootstrap: str | None = None,
        flush_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(
            spec.name, producer=producer, bootstrap=bootstrap, cursor_path=spec.cursor_path()
        )
        self.spec = spec
        self.metrics: LiveSourceMetrics = LiveSourceMetrics()
        self.policy = RetryPolicy.of(spec)
        self.flush_timeout_s = flush_timeout_s
        self._own_client = client is None
        self.http = client or HttpClient()
        self.http.limit_host(urlsplit(spec.url).netloc, spec.per_host_rps)
        self.auth: httpx.Auth | None = (
            httpx.BasicAuth(spec.auth.username, spec.auth.password()) if spec.auth else None
        )
        self.topic = topology().ingest.cms
        self._encode = codec(CMS_SUBJECT).encode
        self._state_loaded = False

    # -- to implement ---------------------------------------------------------------------
    @abc.abstractmethod
    def poll_once(self) -> int:
        """One poll: fetch everything new since the cursor, publish it, flush and persist the
        cursor after each page. Returns the number of raw events published.

        Raises:
            HttpError: the source could not be read (after retries) or refused the request.
            feedpipe.kafka.producer.DeliveryError: Kafka did not acknowledge the events.
        """

    def load_state(self, cursor: dict[str, Any] | None) -> None:
        """Take over the persisted cursor (None when there is none); called once by setup."""

    # -- lifecycle ------------------------------------------------------------------------
    def setup(self) -> None:
        """Open the producer (unless shared) and load the cursor once.

        Raises:
            ValueError: the cursor file is corrupt.
        """
        super().setup()
        if not self._state_loaded:
            self.load_state(self.load_cursor())
            self._state_loaded = True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask :meth:`run` to stop; flush/close the producer and HTTP client this owns."""
        super().stop(timeout_s)
        if self._own_client:
            self.http.close()

    def run(self) -> LiveSourceMetrics:
        """Poll until :meth:`stop`: after a success wait ``schedule_s`` minus the poll's time;
        after a failure see :meth:`poll_safely`. Never raises for a failed poll."""
        self.setup()
        while not self.stopping:
            delay = self.poll_safely()
            if self._stop.wait(delay):
                break
        return self.metrics

    def poll_safely(self) -> float:
        """Run :meth:`poll_once`, account for the outcome, and return the seconds to wait.

        Success: ``max(0, schedule_s - poll time)``. The n-th consecutive failure waits
        ``min(max_backoff_s, schedule_s * 2**(n-1))``; from ``fail_threshold`` failures on, the
        source is reported failing (ERROR log, ``metrics.failing``) and waits ``max_backoff_s``
        (times U(1, 1.1)), so it is never retried in a tight loop. Any exception of the poll
        (including bugs, logged with traceback) counts as a failure: one source never takes the
        others down.
        """
        spec, m = self.spec, self.metrics
        started = time.monotonic()
        m.polls += 1
        try:
            self.setup()
            self.poll_once()
        except Interrupted:
            return 0.0
        except Exception as exc:
            if self.stopping and isinstance(exc, HttpError):
                return 0.0
            code = (
                exc.code
                if isinstance(exc, HttpError)
                else ("kafka_delivery" if isinstance(exc, DeliveryError) else "unexpected")
            )
            m.failures[code] = m.failures.get(code, 0) + 1
            m.consecutive_failures += 1
            m.last_error = f"{type(exc).__name__}: {exc}"
            m.last_error_at = datetime.now(UTC)
            n = m.consecutive_failures
            if n >= spec.fail_threshold:
                delay = spec.max_backoff_s * (1.0 + random.uniform(0.0, BACKOFF_JITTER))
                level = logging.ERROR if not m.failing else logging.WARNING
                m.failing = True
                log.log(
                    level,
                    "source %s FAILING: %d polls in a row failed, last: %s; next poll in %.0f s",
                    self.name,
                    n,
                    m.last_error,
                    delay,
                    exc_info=code == "unexpected",
                )
            else:
                delay = min(spec.max_backoff_s, spec.schedule_s * 2 ** (n - 1))
                log.warning(
                    "source %s: poll failed (%d in a row): %s; next poll in %.1f s",
                    self.name,
                    n,
                    m.last_error,
                    delay,
                    exc_info=code == "unexpected",
                )
            return delay
        if m.failing:
            log.info("source %s recovered after %d failed polls", self.name, m.consecutive_failures)
        m.consecutive_failures = 0
        m.failing = False
        elapsed = time.monotonic() - started
        m.elapsed_s += elapsed
        return max(0.0, spec.schedule_s - elapsed)

    # -- helpers for subclasses -----------------------------------------------------------
    def fetch(
        self,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        expect_json: bool = False,
    ) -> tuple[httpx.Response, Any]:
        """:meth:`HttpClient.get` with this source's auth, timeout, retry policy and stop
        flag; each retry is counted in ``metrics.retries``. Raises as that method."""

        def count(_err: HttpError, _wait: float, _attempt: int) -> None:
            self.metrics.retries += 1

        return self.http.get(
            url,
            params=params,
            headers=headers,
            auth=self.auth,
            timeout_s=self.spec.timeout_s,
            policy=self.policy,
            expect_json=expect_json,
            stop=self._stop,
            on_retry=count,
        )

    def reject(self, exc: HttpError) -> HttpError:
        """Count a refused answer under ``exc.code`` in ``metrics.rejected``; returns ``exc``
        (for ``raise self.reject(...)``)."""
        self.metrics.reject(exc.code)
        return exc

    def publish(self, item: Keyed) -> None:
        """Encode ``item.record`` as ``feedpipe.RawCmsEvent`` and queue it on :attr:`topic`."""
        self.produce(self.topic, item.key.encode(), self._encode(item.record))

    def commit(self, cursor: dict[str, Any], describe: str) -> None:
        """Flush (every queued event acknowledged), then persist ``cursor`` and show
        ``describe`` in ``metrics.cursor``.

        Raises:
            feedpipe.kafka.producer.DeliveryError: not acknowledged; the cursor is not saved.
        """
        self.flush(self.flush_timeout_s)
        self.save_cursor(cursor)
        self.metrics.cursor = describe


class KeysetPollingConnector(PollingConnector):
    """A :class:`PollingConnector` whose position is a :class:`KeysetCursor` (WordPress,
    Drupal): items come ordered by modification time, and :meth:`publish_page` skips what the
    cursor says was already published, publishes the rest and moves the cursor."""

    cursor: KeysetCursor

    def load_state(self, cursor: dict[str, Any] | None) -> None:
        """Restore the :class:`KeysetCursor` (ValueError when corrupt)."""
        self.cursor = KeysetCursor.from_json(cursor)
        self.metrics.cursor = self.cursor.describe()

    def publish_page(self, page: Iterable[tuple[Keyed, datetime | None]]) -> int:
        """Publish the ``(event, modification time)`` pairs of one page the cursor has not seen,
        then flush and persist the advanced cursor (:meth:`commit`). Returns the number
        published.

        Raises:
            feedpipe.kafka.producer.DeliveryError: not acknowledged; the cursor is not moved.
        """
        cursor = self.cursor
        fresh: list[tuple[str | None, datetime | None, bytes]] = []
        for event, modified in page:
            self.metrics.fetched += 1
            rec = event.record
            if cursor.is_seen(rec["source_id"], modified, rec["payload"]):
                continue
            self.publish(event)
            fresh.append((rec["source_id"], modified, rec["payload"]))
        new = cursor.advanced(fresh)
        self.commit(new.to_json(), new.describe())
        self.cursor = new
        return len(fresh)
