"""Operator views served by the read endpoint: the ops page and its snapshot JSON.

The read endpoint reads only Redis, so these routes show what the worker publishes there
(feedpipe/monitoring/snapshot.py): the latest ops snapshot and a ring of compact points.

``GET /v1/ops/snapshot?history=150``
    ``{"now_ms", "age_s", "stale", "stale_after_s", "snapshot": {...} | null,
    "history": [point, ...]}`` -- ``snapshot`` as documented in :mod:`feedpipe.monitoring.snapshot`,
    ``history`` the last ``history`` (0..300) compact points, oldest first. ``stale`` is true
    when there is no snapshot or it is older than ``stale_after_s`` seconds (the worker is not
    publishing: stopped, stuck, or cannot reach Redis). 503 ``{"error", "stale": true}`` when
    Redis fails; 400 for a bad ``history``.
``GET /ops``
    A self-contained HTML page (no external assets) polling the JSON every 2 s and drawing SVG
    charts of throughput per agent, lag per topic in offsets and in seconds, freshness p95 per
    stage, time-to-feed p95 and DLQ records per reason, a partition table with the Burrow-style
    status, and a red banner when the snapshot is stale.

Both paths are open (no API key), like ``/metrics``: aggregate operational data only. Expose
them to operators only (bind address / proxy).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from feedpipe.monitoring.snapshot import OPS_HISTORY_LEN, STALE_AFTER_S
from feedpipe.store.keys import keys
from readapi.caching import NO_STORE, no_store_json

OPEN_PATHS = ("/ops", "/v1/ops/")
"""Path prefixes the gateway serves without an API key (see the module docstring)."""
DEFAULT_HISTORY = 150
PAGE = Path(__file__).resolve().parent / "static" / "ops.html"


def _client(request: Request) -> aioredis.Redis:
    """The endpoint's Redis client (``app.state.store.client``, else ``app.state.redis``)."""
    store = getattr(request.app.state, "store", None)
    client: aioredis.Redis = store.client if store is not None else request.app.state.redis
    return client


def _loads(raw: Any) -> Any:
    return orjson.loads(raw) if raw is not None else None


async def get_snapshot(request: Request) -> Response:
    """GET /v1/ops/snapshot: the latest ops snapshot, its age, and recent compact points."""
    raw_n = request.query_params.get("history", str(DEFAULT_HISTORY))
    try:
        n = int(raw_n)
    except ValueError:
        n = -1
    if not 0 <= n <= OPS_HISTORY_LEN:
        return no_store_json({"error": f"history: expected an integer 0..{OPS_HISTORY_LEN}"}, 400)
    k = keys()
    try:
        async with _client(request).pipeline(transaction=False) as pipe:
            pipe.get(k.ops_snapshot())
            pipe.lrange(k.ops_history(), 0, n - 1)
            raw, points = await pipe.execute()
    except (RedisError, RedisClusterException, OSError) as exc:
        error = f"redis unavailable: {type(exc).__name__}"
        return no_store_json({"error": error, "stale": True}, 503)
    now_ms = int(time.time() * 1000)
    snapshot = _loads(raw)
    history = [_loads(p) for p in reversed(points)] if n else []
    age_s = (now_ms - int(snapshot["at_ms"])) / 1000.0 if snapshot else None
    return no_store_json(
        {
            "now_ms": now_ms,
            "age_s": age_s,
            "stale": age_s is None or age_s > STALE_AFTER_S,
            "stale_after_s": STALE_AFTER_S,
            "snapshot": snapshot,
            "history": history,
        }
    )


async def get_page(request: Request) -> Response:
    """GET /ops: the ops page (HTML with inline CSS and JS)."""
    return Response(
        PAGE.read_bytes(),
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": NO_STORE},
    )


def routes() -> list[BaseRoute]:
    """The operator routes to mount on the read endpoint."""
    return [
        Route("/ops", get_page, methods=["GET"]),
        Route("/v1/ops/snapshot", get_snapshot, methods=["GET"]),
    ]
