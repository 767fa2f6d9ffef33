"""The read endpoint's app: :func:`create_app` wires the routes, the Redis client (created in
the lifespan), error handlers, metrics and the middleware in front of Starlette.

A versioned JSON API over Redis only, built to sit behind a CDN. The full contract (every
route, parameter, response and schema) is the OpenAPI 3.1 document served at
``/openapi.json`` (:mod:`readapi.openapi`); docs/api.md explains the behaviour. All routes are
GET; JSON is rendered with orjson; times are ISO-8601 UTC; errors are
``{"error", "request_id"}``.

Where things are:

* :mod:`readapi.params`: ids, ``limit``, ``brand``, flags and cursors (400 on anything else);
* :mod:`readapi.caching`: ETag, ``If-None-Match`` (304), ``Cache-Control`` and ``Vary``;
* :mod:`readapi.fallback`: the feed's degradation ladder (personalised -> trending -> latest ->
  last-known snapshot) and the in-memory snapshots;
* :mod:`readapi.routes`: the handlers (feeds, content/profiles/trending, experiments, health);
* :mod:`readapi.store`: every Redis read, behind the circuit breaker of :mod:`readapi.guards`;
* :mod:`readapi.gateway`: API keys, scopes, rate limits, request ids and the access log.

Status codes: 400 for an invalid id, parameter or cursor; 401/403/429 from
:mod:`readapi.gateway`; 404 unknown content/profile/experiment/route; 503 when Redis is needed,
fails, and no ladder level can answer (with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from feedpipe.apikeys import RELOAD_INTERVAL_S, KeyStore, keys_file
from feedpipe.monitoring import metrics as shared_metrics
from feedpipe.rank.fanout import CelebrityCache
from feedpipe.rank.weights import WeightsRegistry
from feedpipe.settings import settings
from feedpipe.store.client import async_client
from feedpipe.topology import topology
from readapi import ops
from readapi.caching import CachePolicy, json_error
from readapi.fallback import (
    redis_unavailable,
    refresh_celebrities,
    refresh_snapshots,
    snapshot_brands,
    unavailable_reason,
)
from readapi.gateway import Gateway
from readapi.guards import STATE_CODES, CircuitBreaker, CircuitOpen
from readapi.openapi import openapi_document
from readapi.params import BadRequest
from readapi.routes import demo
from readapi.routes.experiments import get_experiment, list_experiments
from readapi.routes.feeds import FeedFastPath, get_feed
from readapi.routes.health import healthz, metrics, openapi_json, readyz
from readapi.routes.resources import get_content, get_profile, get_trending
from readapi.store import REDIS_ERRORS, PageCache, Store

POOL_MAX_CONNECTIONS = 64
SNAPSHOT_INTERVAL_S = 5.0
"""How often the trending snapshots are re-read from Redis, s."""

log = logging.getLogger("readapi")


# -- error handlers ----------------------------------------------------------------------------


async def _bad_request(request: Request, exc: Exception) -> Response:
    message = exc.message if isinstance(exc, BadRequest) else str(exc)
    return json_error(request, 400, message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = "not found" if exc.status_code == 404 else str(exc.detail)
    return json_error(request, exc.status_code, detail, exc.headers)


async def _redis_error(request: Request, exc: Exception) -> Response:
    return redis_unavailable(request, unavailable_reason(exc))


# -- background work ---------------------------------------------------------------------------


async def _refresh_snapshots(app: Starlette) -> int:
    st = app.state
    return await refresh_snapshots(st.store, snapshot_brands(st.default_brand, st.brands_seen))


async def _maintain(app: Starlette) -> None:
    """Background loop: reload the keys file when it changes; refresh the trending snapshots
    every :data:`SNAPSHOT_INTERVAL_S` and the celebrity cache every pass."""
    st = app.state
    store: Store = st.store
    last_snapshot = time.monotonic()
    while True:
        await asyncio.sleep(RELOAD_INTERVAL_S)
        if st.keystore is not None:
            st.keystore.refresh()
        if time.monotonic() - last_snapshot >= SNAPSHOT_INTERVAL_S:
            last_snapshot = time.monotonic()
            await _refresh_snapshots(app)
            st.snapshot_brands.set(len(store.snapshots))
        await refresh_celebrities(store, st.celebrities)


# -- metrics -----------------------------------------------------------------------------------


class _Metrics:
    """The app's own Prometheus metrics (the gateway adds the request histogram), and
    feedpipe_interest_unreadable_total (:func:`feedpipe.monitoring.metrics.
    count_unreadable_interests`: interest vectors the celebrity merge could not read)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        ProcessCollector(registry=registry)
        shared_metrics.count_unreadable_interests()
        registry.register(shared_metrics.INTEREST_UNREADABLE)
        self.fallbacks = Counter(
            "feedpipe_api_feed_fallbacks_total",
            "Feeds served below the personalised level, by level served and reason",
            ["source", "reason"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "feedpipe_api_redis_errors_total",
            "Failed Redis calls of the read endpoint, by kind (timeout, connection, other)",
            ["kind"],
            registry=registry,
        )
        self.circuit_state = Gauge(
            "feedpipe_api_redis_circuit_state",
            "Redis circuit breaker state: 0 closed, 1 open, 2 half-open",
            registry=registry,
        )
        self.snapshot_brands = Gauge(
            "feedpipe_api_snapshot_brands",
            "Brands with a last-known trending/latest snapshot held in memory",
            registry=registry,
        )
        self.circuit_opened = Counter(
            "feedpipe_api_redis_circuit_opened_total",
            "Times the Redis circuit breaker opened",
            registry=registry,
        )

    def circuit_changed(self, state: str, last_error: str) -> None:
        """Breaker transition to ``state``: gauge, counter and a log line."""
        self.circuit_state.set(STATE_CODES[state])
        if state == "open":
            self.circuit_opened.inc()
            log.warning("redis circuit open: %s", last_error)
        else:
            log.warning("redis circuit %s", state)


# -- app ---------------------------------------------------------------------------------------


def create_app(
    redis_url: str | None = None,
    *,
    default_brand: str | None = None,
    keys_path: Path | None = None,
    require_keys: bool = True,
    cors_origins: Sequence[str] | None = None,
    redis_timeout_ms: int | None = None,
    breaker_failures: int | None = None,
    breaker_reset_s: float | None = None,
) -> ASGIApp:
    """Build the read endpoint (every argument defaults to its ``settings()`` value).

    Args:
        redis_url: Redis to read; the connection pool is created when the app starts
            (lifespan) and closed when it stops.
        default_brand: brand of the fallback levels and ``/v1/trending`` when a request names
            none; default ``topology().ranking.default_brand``.
        keys_path: API keys file (:mod:`feedpipe.apikeys`); default ``settings().api_keys_file`` or
            ``<state_dir>/api-keys.json``. Re-read within ~1 s when it changes.
        require_keys: False turns access control off (benchmarks of the bare path only).
        cors_origins: browser origins allowed (``["*"]`` for any); empty: no CORS headers.
        redis_timeout_ms: Redis socket and connect timeout, ms (a timeout is a breaker failure).
        breaker_failures, breaker_reset_s: circuit breaker thresholds (:mod:`readapi.guards`).

    Returns:
        The ASGI app: CORS (when configured) -> :class:`readapi.gateway.Gateway` ->
        :class:`readapi.routes.feeds.FeedFastPath` -> Starlette. The Starlette app is
        ``app.starlette``, its state also ``app.state``.
    """
    s = settings()
    timeout_s = (redis_timeout_ms or s.api_redis_timeout_ms) / 1000.0
    registry = CollectorRegistry(auto_describe=True)
    m = _Metrics(registry)

    def on_change(state: str) -> None:
        m.circuit_changed(state, breaker.last_error)

    breaker = CircuitBreaker(
        breaker_failures or s.api_breaker_failures,
        breaker_reset_s or s.api_breaker_reset_s,
        on_change=on_change,
    )
    keystore: KeyStore | None = None
    if require_keys:
        keystore = KeyStore(keys_path or keys_file(s.state_dir, s.api_keys_file))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client: Any
        pool: aioredis.BlockingConnectionPool | None = None
        if settings().redis_cluster:  # one pool per node, routed by slot (feedpipe/store/client.py)
            client = async_client(
                redis_url or settings().redis_url,
                max_connections=POOL_MAX_CONNECTIONS,
                socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                redis_url or settings().redis_url,
                max_connections=POOL_MAX_CONNECTIONS,
                timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                **s.redis_kwargs(),  # AUTH and TLS (rediss://) of the settings
            )
            client = aioredis.Redis(connection_pool=pool)
        store = Store(client, breaker, lambda kind: m.redis_errors.labels(kind).inc())
        app.state.store = store
        await _refresh_snapshots(app)
        await refresh_celebrities(store, app.state.celebrities)
        # Startup objects (modules, topology, app) move to the permanent generation, so the
        # collector's full passes do not walk them while requests wait (CPython gc.freeze; the
        # pattern Instagram described in "Dismissing Python Garbage Collection", 2017).
        gc.collect()
        gc.freeze()
        task = asyncio.create_task(_maintain(app))
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await client.aclose()
            if pool is not None:
                await pool.aclose()

    routes: list[BaseRoute] = [
        Route("/v1/feeds/{user_id}", get_feed, methods=["GET"]),
        Route("/v1/content/{content_id}", get_content, methods=["GET"]),
        Route("/v1/profiles/{user_id}", get_profile, methods=["GET"]),
        Route("/v1/trending", get_trending, methods=["GET"]),
        Route("/v1/experiments", list_experiments, methods=["GET"]),
        Route("/v1/experiments/{experiment}", get_experiment, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/demo", demo.get_page, methods=["GET"]),
        Route("/demo/config", demo.get_config, methods=["GET"]),
        *ops.routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            BadRequest: _bad_request,
            HTTPException: _http_error,
            CircuitOpen: _redis_error,
            **dict.fromkeys(REDIS_ERRORS, _redis_error),
        },
        lifespan=lifespan,
    )
    st = app.state
    st.default_brand = default_brand or topology().ranking.default_brand
    st.registry = registry
    st.keystore = keystore
    st.brands_seen = set()
    st.page_cache = PageCache()
    st.celebrities = CelebrityCache()
    st.weights = WeightsRegistry()
    st.snapshot_brands = m.snapshot_brands
    st.openapi = orjson.dumps(openapi_document())
    st.cache = CachePolicy.for_max_age(s.api_cache_max_age_s)
    st.count_fallback = lambda source, reason: m.fallbacks.labels(source, reason).inc()

    outer: ASGIApp = Gateway(
        FeedFastPath(app),
        keystore,
        registry,
        ops.OPEN_PATHS + demo.OPEN_PATHS,
        workers=s.api_workers,
    )
    origins = list(
        cors_origins
        if cors_origins is not None
        else [o.strip() for o in s.api_cors_origins.split(",") if o.strip()]
    )
    if origins:
        outer = CORSMiddleware(
            outer,
            allow_origins=origins,
            allow_methods=["GET"],
            allow_headers=["X-API-Key", "Authorization", "If-None-Match", "X-Request-ID"],
            expose_headers=[
                "ETag",
                "Retry-After",
                "X-Request-ID",
                "X-Feed-Source",
                "X-Feed-Fallback-Reason",
            ],
            max_age=600,
        )
    outer.starlette = app  # type: ignore[attr-defined]
    outer.state = app.state  # type: ignore[attr-defined]
    return outer
