"""Run the polling sources of ``connectors.yaml``: every source in its own thread, one shared
producer and HTTP client, until a stop event is set (:func:`run_sources`, :class:`SourceRunner`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from connectors.config import LiveSourceSpec
from connectors.drupal import DrupalConnector
from connectors.http.client import HttpClient
from connectors.polling import LiveSourceMetrics, PollingConnector
from connectors.rss import FeedConnector
from connectors.wordpress import WordPressConnector
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings

log = logging.getLogger("feedpipe.connectors")


def connector_for(
    spec: LiveSourceSpec,
    *,
    client: HttpClient | None = None,
    producer: IdempotentProducer | None = None,
    bootstrap: str | None = None,
) -> PollingConnector:
    """The connector of ``spec.kind`` (wordpress, drupal, rss).

    Raises:
        feedpipe.errors.ConfigError: the auth password variable is unset.
    """
    classes: dict[str, type[PollingConnector]] = {
        "wordpress": WordPressConnector,
        "drupal": DrupalConnector,
        "rss": FeedConnector,
    }
    return classes[spec.kind](spec, client=client, producer=producer, bootstrap=bootstrap)


class SourceRunner:
    """Runs sources in threads (one each) with one shared producer and HTTP client.

    ``start()`` builds the connectors (reading auth secrets first, so a missing variable fails
    before anything runs) and starts one thread per source; ``metrics`` is live while they
    run; ``stop()`` asks every source to stop, joins the threads, closes the HTTP client and
    the producer (when opened here). Also a context manager (``start`` / ``stop``).

    Args:
        specs: the sources.
        bootstrap: Kafka bootstrap servers (default ``settings().kafka_bootstrap``).
        producer: a producer to share (not closed here); default one opened here.
        once: each thread polls its source once, then ends (see :meth:`wait`).
        join_timeout_s: how long :meth:`stop` waits for each thread.
    """

    def __init__(
        self,
        specs: Iterable[LiveSourceSpec],
        bootstrap: str | None = None,
        *,
        producer: IdempotentProducer | None = None,
        once: bool = False,
        join_timeout_s: float = 60.0,
    ) -> None:
        self.specs = list(specs)
        self._bootstrap = bootstrap
        self._producer = producer
        self._own_producer = producer is None
        self.once = once
        self.join_timeout_s = join_timeout_s
        self.connectors: list[PollingConnector] = []
        self._threads: list[threading.Thread] = []
        self._client: HttpClient | None = None

    @property
    def metrics(self) -> dict[str, LiveSourceMetrics]:
        """Live metrics per source name."""
        return {c.name: c.metrics for c in self.connectors}

    def start(self) -> SourceRunner:
        """Build the connectors and start their threads.

        Raises:
            feedpipe.errors.ConfigError: a source's auth variable is unset (nothing started).
        """
        client = HttpClient()
        try:
            prod = self._producer or IdempotentProducer(
                self._bootstrap or settings().kafka_bootstrap, client_id="feedpipe-connect"
            )
            conns = [connector_for(s, client=client, producer=prod) for s in self.specs]
        except BaseException:
            client.close()
            raise
        self._client, self._producer, self.connectors = client, prod, conns
        for conn in conns:
            t = threading.Thread(
                target=self._work, args=(conn,), name=f"source-{conn.name}", daemon=True
            )
            self._threads.append(t)
            t.start()
        return self

    def _work(self, conn: PollingConnector) -> None:
        if self.once:
            conn.poll_safely()
        else:
            conn.run()

    def alive(self) -> bool:
        """True while any source thread runs."""
        return any(t.is_alive() for t in self._threads)

    def wait(self, stop_event: threading.Event | None = None) -> None:
        """Block until every thread ended (``once``) or ``stop_event`` is set."""
        event = stop_event or threading.Event()
        while self.alive() and not event.is_set():
            event.wait(0.1)

    def stop(self) -> None:
        """Stop the sources, join their threads, close client and producer (when own).

        Raises:
            feedpipe.kafka.producer.DeliveryError: the final flush of an own producer failed.
        """
        for conn in self.connectors:
            conn.stop()
        for t in self._threads:
            t.join(self.join_timeout_s)
            if t.is_alive():
                log.error(
                    "source thread %s did not stop within %.0f s", t.name, self.join_timeout_s
                )
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._own_producer and self._producer is not None:
            prod, self._producer = self._producer, None
            prod.close()

    def __enter__(self) -> SourceRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_sources(
    specs: Iterable[LiveSourceSpec],
    bootstrap: str | None = None,
    stop_event: threading.Event | None = None,
    *,
    once: bool = False,
    producer: IdempotentProducer | None = None,
    join_timeout_s: float = 60.0,
) -> dict[str, LiveSourceMetrics]:
    """Run every source in its own thread until ``stop_event`` is set (or, with ``once``,
    until each source polled once), sharing one producer and one HTTP client
    (:class:`SourceRunner`).

    A failing source never blocks the others (own thread, own back-off). On stop, each
    connector finishes its current request (bounded by its ``timeout_s``), then the producer
    is flushed and closed (when opened here).

    Args:
        specs: the sources (e.g. :func:`connectors.config.load_sources`).
        bootstrap: Kafka bootstrap servers (default ``settings().kafka_bootstrap``).
        stop_event: set it to stop (e.g. from a SIGTERM handler); required unless ``once``.
        once: poll each source once and return (cron-style runs, tests).
        producer: a producer to use (not closed here); default one opened and closed here.
        join_timeout_s: how long to wait for each source thread after the stop.

    Returns:
        Metrics per source name.

    Raises:
        feedpipe.errors.ConfigError: a source's auth variable is unset (before anything runs).
        ValueError: ``stop_event`` missing without ``once``.
        feedpipe.kafka.producer.DeliveryError: the final flush of the producer failed.
    """
    if stop_event is None and not once:
        raise ValueError("run_sources needs a stop_event unless once=True")
    runner = SourceRunner(
        specs, bootstrap, producer=producer, once=once, join_timeout_s=join_timeout_s
    )
    runner.start()
    try:
        runner.wait(stop_event)
    finally:
        runner.stop()
    return runner.metrics
