"""The read endpoint's one ASGI middleware: request id, API key and scope, per-key rate limit,
latency histogram, structured access log.

Kept as a single pure-ASGI layer (no ``BaseHTTPMiddleware``, no per-request task) because every
request pays for it; see bench/bench_read.py.

Per request, in order:

0. **Size limits** (before anything else, so no oversize value reaches a parser or Redis): a
   path over :data:`MAX_PATH_BYTES` or a query over :data:`MAX_QUERY_BYTES` gives 414, request
   headers over :data:`MAX_HEADER_BYTES` in total give 431, and any request body (a
   ``content-length`` other than 0, or a ``transfer-encoding``) gives 413: the API has no route
   that takes one. The HTTP server (uvicorn/h11) refuses heads over 16 KB before this layer.
1. **Request id**: the client's ``X-Request-ID`` when it is 1-128 chars of ``[A-Za-z0-9._-]``,
   else a new uuid4 hex; echoed in the ``X-Request-ID`` response header, in error bodies and in
   the access log (``scope["state"]["request_id"]``).
2. **Access**: the path's scope from :data:`ROUTES` (first matching prefix); open paths need no
   key. A key comes as ``X-API-Key: <token>`` or ``Authorization: Bearer <token>``. No or an
   unknown key: 401; a key without the scope: 403 (``admin`` implies every scope).
3. **Rate limit**: the key's token bucket (``rate_per_s``, ``burst`` from the keys file); when
   empty, 429 with ``Retry-After`` in whole seconds (rounded up, at least 1).
4. **Metrics and log**: ``feedpipe_api_request_duration_seconds{route,method,status}`` and one
   JSON log line on logger ``readapi.access`` (only when INFO is enabled for it).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedpipe.apikeys import KeyAuthority, KeyStore, presented_token

OPEN = None
"""Scope marker of a path that needs no key."""

ROUTES: list[tuple[str, str, str | None]] = [
    # (path prefix, route label for metrics/logs, required scope or OPEN)
    ("/v1/feeds/", "/v1/feeds/{user_id}", "feeds:read"),
    ("/v1/content/", "/v1/content/{content_id}", "feeds:read"),
    ("/v1/trending", "/v1/trending", "feeds:read"),
    ("/v1/profiles/", "/v1/profiles/{user_id}", "profiles:read"),
    ("/v1/experiments/", "/v1/experiments/{experiment}", "admin"),
    ("/v1/experiments", "/v1/experiments", "admin"),
    ("/v1/ops", "/v1/ops", "admin"),
    ("/ops", "/ops", "admin"),
    ("/healthz", "/healthz", OPEN),
    ("/readyz", "/readyz", OPEN),
    ("/metrics", "/metrics", OPEN),
    ("/openapi.json", "/openapi.json", OPEN),
]
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Histogram buckets, s: fine below 10 ms where the p99 goal (5 ms) sits."""
MAX_PATH_BYTES = 1024
"""Longest accepted path, bytes: ids are at most 128 chars (feedpipe.store.keys.safe_id)."""
MAX_QUERY_BYTES = 1024
"""Longest accepted query string, bytes (the longest valid one is about 100 bytes)."""
MAX_HEADER_BYTES = 8192
"""Largest accepted total of request header names and values, bytes (the 8 KB default of
nginx's ``large_client_header_buffers`` and Apache's ``LimitRequestFieldSize``)."""


def oversize(scope: Scope) -> tuple[int, str] | None:
    """(status, message) when the request breaks a size limit (module docstring), else None."""
    if len(scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")) > (
        MAX_PATH_BYTES
    ):
        return 414, f"path longer than {MAX_PATH_BYTES} bytes"
    if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
        return 414, f"query string longer than {MAX_QUERY_BYTES} bytes"
    total = 0
    for name, value in scope["headers"]:
        total += len(name) + len(value)
        if name == b"content-length" and value.strip() not in (b"0", b""):
            return 413, "request body not accepted (no route of this API takes one)"
        if name == b"transfer-encoding":
            return 413, "request body not accepted (no route of this API takes one)"
    if total > MAX_HEADER_BYTES:
        return 431, f"request headers larger than {MAX_HEADER_BYTES} bytes"
    return None


_SAFE_RID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
access_log = logging.getLogger("readapi.access")


def classify(path: str, open_prefixes: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """(route label, required scope or None) of ``path``; unknown paths are ("other", None)."""
    for prefix in open_prefixes:
        if path.startswith(prefix):
            return prefix, OPEN
    for prefix, label, scope in ROUTES:
        if path.startswith(prefix):
            return label, scope
    return "other", OPEN


def _json_error(status: int, message: str, request_id: str) -> bytes:
    return orjson.dumps({"error": message, "request_id": request_id})


class Gateway:
    """The middleware (see the module docstring).

    Args:
        app: the wrapped ASGI app (the Starlette router).
        keystore: API keys; ``None`` disables access control (every path open).
        registry: Prometheus registry for the latency histogram.
        open_prefixes: extra path prefixes that need no key (e.g. ``readapi.ops.OPEN_PATHS``).
        clock: monotonic clock, s.
        workers: API processes sharing the port (``FEEDPIPE_API_WORKERS``). Buckets live in
            process memory, so each process enforces ``rate_per_s / workers`` with a burst of
            ``max(1, burst // workers)``: the kernel spreads connections over the processes
            (``SO_REUSEPORT``), so the sum approximates the key's limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        keystore: KeyStore | None,
        registry: CollectorRegistry,
        open_prefixes: tuple[str, ...] = (),
        clock: Callable[[], float] = time.perf_counter,
        workers: int = 1,
    ) -> None:
        self.app = app
        self.workers = max(1, workers)
        self.keystore = keystore
        self.open_prefixes = open_prefixes
        self.clock = clock
        self.latency = Histogram(
            "feedpipe_api_request_duration_seconds",
            "Read endpoint latency from first byte in to response start, s",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], Any] = {}
        self.authority = None if keystore is None else KeyAuthority(keystore, self.workers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point; non-HTTP scopes (lifespan) pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = self.clock()
        headers = dict(scope["headers"])
        rid_raw = headers.get(b"x-request-id")
        rid = rid_raw.decode("latin-1") if rid_raw else ""
        if not _SAFE_RID.fullmatch(rid):
            rid = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        path: str = scope["path"]
        label, needed = classify(path, self.open_prefixes)
        method: str = scope["method"]
        status_box = [500]
        key_id = ""
        rid_header = (b"x-request-id", rid.encode())

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            refused = oversize(scope)
            if refused is not None:
                status_box[0] = refused[0]
                await _send_error(
                    send, refused[0], _json_error(refused[0], refused[1], rid), [rid_header]
                )
                return
            if needed is not OPEN and self.authority is not None and method != "OPTIONS":
                access = self.authority.check(presented_token(headers), needed)
                if access.key is not None:
                    key_id = access.key.key_id
                    state["api_key"] = access.key
                if access.status:
                    status_box[0] = access.status
                    body = _json_error(access.status, access.message, rid)
                    await _send_error(send, access.status, body, [*access.headers, rid_header])
                    return
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = self.clock() - t0
            status = status_box[0]
            child_key = (label, method, status)
            child = self._children.get(child_key)
            if child is None:
                child = self._children[child_key] = self.latency.labels(
                    route=label, method=method, status=str(status)
                )
            child.observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "fields": {
                            "request_id": rid,
                            "method": method,
                            "path": path,
                            "route": label,
                            "status": status,
                            "duration_ms": round(elapsed * 1000.0, 3),
                            "key_id": key_id or None,
                            "feed_source": state.get("feed_source"),
                            "fallback_reason": state.get("fallback_reason"),
                        }
                    },
                )


async def _send_error(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO UTC), ``level``, ``logger``, ``msg`` and the
    record's ``fields`` extra (as passed by the gateway)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record``; never raises on unserialisable extras (they become strings)."""
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()
