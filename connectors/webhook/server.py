"""Serve the webhook app with uvicorn: in the calling thread, or as several receiver processes
sharing one port (``SO_REUSEPORT``); and the ``python -m connectors.webhook`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import orjson

from connectors.base import Connector, ConnectorMetrics
from connectors.webhook.app import DEFAULT_ACK_TIMEOUT_S, create_webhook_app
from connectors.webhook.sources import WebhookSource, parse_source_arg
from feedpipe.errors import ConfigError
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings
from feedpipe.topology import topology

DEFAULT_PORT: Final = 8090


class WebhookConnector(Connector):
    """Serves :func:`create_webhook_app` with uvicorn until :meth:`stop`.

    Args:
        sources: the push sources.
        host / port: bind address (default 127.0.0.1:8090; port 0 picks a free port, see
            :attr:`port` once :attr:`started` is set).
        ack_timeout_s / topic: see :func:`create_webhook_app`.
        name / producer / bootstrap: see :class:`Connector`.
        workers: receiver processes. With 1 the server runs in the calling thread. With more,
            :meth:`run` supervises that many spawned processes, each with its own producer and
            event loop, all accepting on the same port through ``SO_REUSEPORT`` (the Linux
            kernel spreads connections over them); ``producer`` must then be None. On this 2-core
            machine one process acknowledged ~7,700 single-post requests/s from 64 concurrent
            senders and two ~10,000/s (bench/bench_ingest.py); more workers want more cores.
        reuse_port: bind with ``SO_REUSEPORT`` (set for the worker processes).

    Raises:
        ConfigError: ``workers`` < 1, or ``workers`` > 1 with a shared ``producer``.
    """

    def __init__(
        self,
        sources: Mapping[str, WebhookSource],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        topic: str | None = None,
        name: str = "webhooks",
        producer: IdempotentProducer | None = None,
        bootstrap: str | None = None,
        workers: int = 1,
        reuse_port: bool = False,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"webhook receiver: workers must be >= 1, got {workers}")
        if workers > 1 and producer is not None:
            raise ConfigError("webhook receiver: workers > 1 open one producer per process")
        super().__init__(name, producer=producer, bootstrap=bootstrap)
        self.sources = dict(sources)
        self.host = host
        self.port = port
        self.ack_timeout_s = ack_timeout_s
        self.topic = topic if topic is not None else topology().ingest.cms
        self.workers = workers
        self.reuse_port = reuse_port
        self.started = threading.Event()
        self._server: Any = None

    def run(self) -> ConnectorMetrics:
        """Serve until :meth:`stop`; returns the summed metrics of every source (and worker).

        Raises:
            ConfigError: see :func:`create_webhook_app`.
            RuntimeError: with ``workers`` > 1, a worker process did not start within 60 s or
                died while serving.
        """
        if self.workers > 1:
            return self._supervise()
        import uvicorn

        self.setup()
        clock = time.perf_counter()
        app = create_webhook_app(
            self.sources, self.producer, ack_timeout_s=self.ack_timeout_s, topic=self.topic
        )
        # httptools parses HTTP/1.1 (uvicorn picks it when installed, h11 otherwise); the
        # server runs on uvloop, a libuv event loop, when installed.
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        self._server = server

        sockets = None
        if self.reuse_port:
            sock = _bind(self.host, self.port)
            sock.listen(2048)
            sockets = [sock]

        async def serve() -> None:
            task = asyncio.create_task(server.serve(sockets=sockets))
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            if server.started:
                sock = server.servers[0].sockets[0]
                self.port = int(sock.getsockname()[1])
                self.started.set()
            await task

        if not self.stopping:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(serve())
        self.metrics.elapsed_s = time.perf_counter() - clock
        for m in app.state.metrics.values():
            _add_metrics(self.metrics, m)
        return self.metrics

    def _supervise(self) -> ConnectorMetrics:
        """Run :attr:`workers` receiver processes on one port until :meth:`stop`."""
        clock = time.perf_counter()
        ctx = mp.get_context("spawn")  # never fork a process that holds librdkafka threads
        ready = ctx.Queue()
        results = ctx.Queue()
        stop = ctx.Event()
        holder = _bind(self.host, self.port)  # reserves the port (port 0 -> a free one)
        port = int(holder.getsockname()[1])
        args = (
            self.sources,
            self.host,
            port,
            self.ack_timeout_s,
            self.topic,
            self._bootstrap or settings().kafka_bootstrap,
        )
        procs = [
            ctx.Process(
                target=_worker_main,
                args=(*args, ready, stop, results),
                name=f"{self.name}-{i}",
                daemon=True,
            )
            for i in range(self.workers)
        ]
        try:
            for proc in procs:
                proc.start()
            for _ in procs:
                try:
                    ready.get(timeout=60)
                except queue.Empty:
                    raise RuntimeError("a webhook worker did not start within 60 s") from None
            holder.close()
            self.port = port
            self.started.set()
            while not self._stop.wait(0.5):
                dead = [p for p in procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(
                        f"webhook worker {dead[0].name} exited with code {dead[0].exitcode}"
                    )
            stop.set()
            for _ in procs:
                _add_metrics(self.metrics, _metrics_from_dict(results.get(timeout=60)))
        finally:
            stop.set()
            holder.close()
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
        self.metrics.elapsed_s = time.perf_counter() - clock
        return self.metrics

    def request_stop(self) -> None:
        """Ask the server to exit (it finishes in-flight requests); safe from any thread."""
        if self._server is not None:
            self._server.should_exit = True
        super().request_stop()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the server to exit (it finishes in-flight requests), then flush/close the producer
        when owned."""
        self.request_stop()
        super().stop(timeout_s)


def _add_metrics(total: ConnectorMetrics, m: ConnectorMetrics) -> None:
    """Add ``m``'s counters to ``total`` (latest ``last_success_at`` wins)."""
    total.fetched += m.fetched
    total.published += m.published
    for code, n in m.rejected.items():
        total.rejected[code] = total.rejected.get(code, 0) + n
    if m.last_success_at and (
        total.last_success_at is None or m.last_success_at > total.last_success_at
    ):
        total.last_success_at = m.last_success_at


def _metrics_from_dict(d: Mapping[str, Any]) -> ConnectorMetrics:
    """The inverse of :meth:`ConnectorMetrics.as_dict` for the counters a worker reports."""
    at = d.get("last_success_at")
    return ConnectorMetrics(
        fetched=int(d["fetched"]),
        published=int(d["published"]),
        rejected=dict(d["rejected"]),
        last_success_at=datetime.fromisoformat(at) if at else None,
    )


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with ``SO_REUSEADDR`` and ``SO_REUSEPORT``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker_main(
    sources: Mapping[str, WebhookSource],
    host: str,
    port: int,
    ack_timeout_s: float,
    topic: str,
    bootstrap: str,
    ready: Any,
    stop: Any,
    results: Any,
) -> None:
    """One receiver process of :meth:`WebhookConnector._supervise`: serves on the shared
    port until ``stop`` is set, then puts its metrics (``as_dict``) on ``results``."""
    logging.basicConfig(level=settings().log_level.upper())
    conn = WebhookConnector(
        sources,
        host=host,
        port=port,
        ack_timeout_s=ack_timeout_s,
        topic=topic,
        bootstrap=bootstrap,
        reuse_port=True,
    )

    def watch() -> None:
        if conn.started.wait(60):
            ready.put(os.getpid())
        stop.wait()
        conn.request_stop()

    threading.Thread(target=watch, daemon=True).start()
    try:
        metrics = conn.run()
    finally:
        conn.stop()
    results.put(metrics.as_dict())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is installed (a pinned dependency), else None."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is pinned in requirements.lock
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m connectors.webhook``: serve the given sources until Ctrl-C."""
    ap = argparse.ArgumentParser(
        prog="python -m connectors.webhook", description="Webhook receiver for push CMSs."
    )
    ap.add_argument(
        "--source",
        action="append",
        required=True,
        type=parse_source_arg,
        help="NAME:KIND:BRAND:SECRET_ENV (repeatable)",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--ack-timeout", type=float, default=DEFAULT_ACK_TIMEOUT_S)
    ap.add_argument("--workers", type=int, default=1, help="receiver processes on the port")
    ap.add_argument("--bootstrap", default=None, help="default FEEDPIPE_KAFKA_BOOTSTRAP")
    args = ap.parse_args(argv)
    logging.basicConfig(level=settings().log_level.upper())
    conn = WebhookConnector(
        {s.name: s for s in args.source},
        host=args.host,
        port=args.port,
        ack_timeout_s=args.ack_timeout,
        bootstrap=args.bootstrap,
        workers=args.workers,
    )
    try:
        metrics = conn.run()
    finally:
        conn.stop()
    print(orjson.dumps(metrics.as_dict()).decode())


if __name__ == "__main__":
    main()
