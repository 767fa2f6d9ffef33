"""Serve the collector app with uvicorn: in a thread (tests, benchmarks) or as the
``python -m connectors.collector`` process (one or several processes on one port)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from connectors.collector.app import CollectorApp, create_collector_app
from feedpipe.apikeys import KeyStore, keys_file
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings

CLIENT_ID = "feedpipe-collector"


def build_app(producer: IdempotentProducer | None = None, keys_path: Path | None = None) -> Any:
    """The collector app configured from ``settings()`` (FEEDPIPE_COLLECTOR_*, the API keys
    file, FEEDPIPE_KAFKA_*); a new producer unless one is given."""
    s = settings()
    origins = [o.strip() for o in s.collector_cors_origins.split(",") if o.strip()]
    return create_collector_app(
        producer or IdempotentProducer(s.kafka_bootstrap, client_id=CLIENT_ID),
        KeyStore(keys_path or keys_file(s.state_dir, s.api_keys_file)),
        ack_timeout_s=s.collector_ack_timeout_s,
        cors_origins=origins,
        workers=s.collector_workers,
    )


class CollectorServer:
    """The collector on uvicorn in the calling thread until :meth:`stop` (tests, benchmarks).

    Args:
        producer: the producer records go through (the caller closes it).
        keys_path: API keys file.
        host / port: bind address (port 0 picks a free one: read :attr:`port` once
            :attr:`started` is set).
        cors_origins / ack_timeout_s / topic / dlq: see :func:`create_collector_app`.
    """

    def __init__(
        self,
        producer: IdempotentProducer,
        keys_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cors_origins: Sequence[str] = (),
        ack_timeout_s: float = 10.0,
        topic: str | None = None,
        dlq: str | None = None,
    ) -> None:
        self.app = create_collector_app(
            producer,
            KeyStore(keys_path),
            cors_origins=cors_origins,
            ack_timeout_s=ack_timeout_s,
            topic=topic,
            dlq=dlq,
        )
        self.collector: CollectorApp = self.app.collector  # type: ignore[attr-defined]
        self.host = host
        self.port = port
        self.started = threading.Event()
        self._server: Any = None

    def run(self) -> None:
        """Serve until :meth:`stop` (uvloop when installed)."""
        import uvicorn

        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # no client address is used; saves a middleware per request
        )
        server = uvicorn.Server(config)
        self._server = server

        async def serve() -> None:
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            if server.started:
                self.port = int(server.servers[0].sockets[0].getsockname()[1])
                self.started.set()
            await task

        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve())

    def stop(self) -> None:
        """Ask the server to exit (in-flight requests finish); safe from any thread."""
        if self._server is not None:
            self._server.should_exit = True


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is pinned in requirements.lock
        return None
    return uvloop.new_event_loop


def worker_app() -> Any:
    """App factory of each uvicorn worker process (``--workers`` > 1): its own producer."""
    logging.basicConfig(level=settings().log_level.upper())
    return build_app()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m connectors.collector``: serve ``POST /v1/events`` until interrupted.

    Binds FEEDPIPE_COLLECTOR_HOST / _PORT (default 127.0.0.1:8070) with FEEDPIPE_COLLECTOR_WORKERS
    uvicorn processes sharing the socket (``--workers`` overrides), each with its own producer
    and 1/N of every key's rate; uvloop + httptools (pinned dependencies).
    """
    import uvicorn

    ap = argparse.ArgumentParser(
        prog="python -m connectors.collector", description="Reader event collector."
    )
    ap.add_argument("--host", default=None, help="[FEEDPIPE_COLLECTOR_HOST]")
    ap.add_argument("--port", type=int, default=None, help="[FEEDPIPE_COLLECTOR_PORT]")
    ap.add_argument("--workers", type=int, default=None, help="[FEEDPIPE_COLLECTOR_WORKERS]")
    ap.add_argument(
        "--cors-origins", default=None, help="comma-separated [FEEDPIPE_COLLECTOR_CORS_ORIGINS]"
    )
    args = ap.parse_args(argv)
    # uvicorn's worker processes read their settings from the environment
    for name, value in (
        ("HOST", args.host),
        ("PORT", args.port),
        ("WORKERS", args.workers),
        ("CORS_ORIGINS", args.cors_origins),
    ):
        if value is not None:
            os.environ[f"FEEDPIPE_COLLECTOR_{name}"] = str(value)
    settings.cache_clear()
    s = settings()
    logging.basicConfig(level=s.log_level.upper())
    multi = s.collector_workers > 1
    app: Any = "connectors.collector.server:worker_app" if multi else build_app()
    uvicorn.run(
        app,
        factory=multi,
        host=s.collector_host,
        port=s.collector_port,
        workers=s.collector_workers,
        access_log=False,
        proxy_headers=False,
        log_level=s.log_level.lower(),
        lifespan="on",
    )
    if not multi:
        counts = app.collector.counts
        app.collector.producer.close(10.0)
        print(orjson.dumps(counts).decode())
