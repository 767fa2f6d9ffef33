"""Webhook receiver for push CMSs: ``POST /v1/webhooks/{source}`` -> ``cms.raw``.

The CMS pushes its own JSON (a WordPress REST post object, or a Drupal JSON:API document with
one ``node--article``; a list of posts / a JSON:API collection is accepted too, one event per
item) and signs it like Stripe and GitHub webhooks do:

    X-Feedpipe-Timestamp: <unix seconds>
    X-Feedpipe-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}." + raw body)>

The secret is per source and read from the environment variable *named* in the source config
(the value is never logged). The signature is compared in constant time
(:func:`hmac.compare_digest`); a timestamp further than ``tolerance_s`` (default 300 s) from
the server clock is refused, so a captured request cannot be replayed later (the timestamp is
signed, so it cannot be refreshed without the secret). Several ``sha256=`` values separated
by commas are accepted (any one matching), for secret rotation on the sender side.

Answers (JSON bodies, ``{"error": code, "reason": text}`` for errors):

| status | when |
|---|---|
| 202 ``{"event_id", "event_ids", "count"}`` | every event was acknowledged (``acks=all``) |
| 400 ``invalid_json`` / ``bad_timestamp`` | body is not JSON / timestamp header is not an integer |
| 401 ``missing_signature`` / ``bad_signature`` / ``stale_timestamp`` | authentication failed |
| 404 ``unknown_source`` | no such configured source |
| 413 ``body_too_large`` | ``Content-Length`` or the streamed body exceeds ``max_body_bytes`` |
| 422 ``not_a_post`` / ``missing_id`` / ``jsonapi_error`` / ... | JSON that is not a post / node |
| 503 ``kafka_unavailable`` / ``kafka_error`` | no ack within ``ack_timeout_s``; delivery error |

A 503 means "not confirmed": the event may still be delivered later; the sender should retry,
which is safe because event ids are deterministic (source, id, sha256 of the payload) and the
pipeline deduplicates by content id and content hash. Mapping onto ``feedpipe.RawCmsEvent``
follows :mod:`connectors.replay` (same ``_cms_event`` helper, same delete statuses); the payload
of a single-object body is the raw body, unchanged.

Run it: ``python -m connectors.webhook --source NAME:KIND:BRAND:SECRET_ENV [...]`` (binds
127.0.0.1:8090 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import multiprocessing as mp
import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from connectors.base import Connector, ConnectorMetrics
from connectors.replay import (
    CMS_SUBJECT,
    CMS_TOPIC,
    DELETE_STATUSES,
    _cms_event,
    _relationship_refs,
)
from feedpipe.errors import ConfigError, RejectedInput
from feedpipe.jsonapi import errors_reason
from feedpipe.kafka.producer import Delivered, DeliveryError, DeliverySettler, IdempotentProducer
from feedpipe.settings import secret_from_env, settings
from feedpipe.wire.codec import codec

log = logging.getLogger(__name__)

WebhookKind = Literal["wordpress.post", "drupal.node"]
KINDS: Final[tuple[str, ...]] = ("wordpress.post", "drupal.node")
TIMESTAMP_HEADER: Final = "x-feedpipe-timestamp"
SIGNATURE_HEADER: Final = "x-feedpipe-signature"
SIGNATURE_PREFIX: Final = "sha256="
DEFAULT_TOLERANCE_S: Final = 300  # Stripe's default tolerance (stripe.com/docs/webhooks/signatures)
DEFAULT_MAX_BODY: Final = 1024 * 1024  # 1 MiB
DEFAULT_ACK_TIMEOUT_S: Final = 10.0
DEFAULT_PORT: Final = 8090
ARTICLE: Final = "node--article"
CONTENT_TYPES: Final = {
    "wordpress.post": "application/json",
    "drupal.node": "application/vnd.api+json",
}


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """One push source.

    Attributes:
        name: source name (URL path segment and ``RawCmsEvent.source``; part of content_id).
        kind: ``wordpress.post`` or ``drupal.node`` (how the body is read).
        brand: brand of the content.
        secret_env: NAME of the environment variable holding the HMAC secret (UTF-8 text).
        tolerance_s: accepted distance in seconds between the signed timestamp and now.
        max_body_bytes: largest accepted body in bytes.
    """

    name: str
    kind: WebhookKind
    brand: str
    secret_env: str
    tolerance_s: int = DEFAULT_TOLERANCE_S
    max_body_bytes: int = DEFAULT_MAX_BODY

    def secret(self) -> bytes:
        """The secret from the environment: variable ``secret_env``, or the file named by
        ``<secret_env>_FILE`` (:func:`feedpipe.settings.secret_from_env`).

        Raises:
            ConfigError: the variable is unset or empty, or both it and its _FILE are set
                (its value is never put in messages).
        """
        value = secret_from_env(self.secret_env)
        if value is None:
            raise ConfigError(
                f"webhook source {self.name}: environment variable {self.secret_env} "
                f"(or {self.secret_env}_FILE) is not set"
            )
        return value.get_secret_value().encode()


def sign(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Feedpipe-Signature`` value: ``"sha256=" + hex HMAC-SHA256(secret,
    f"{timestamp}.".encode() + body)`` (what a sender computes; used by tests and the bench)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, header: str) -> bool:
    """True when one of the comma-separated ``sha256=<hex>`` values of ``header`` is the HMAC of
    ``timestamp.body``; every candidate is compared with :func:`hmac.compare_digest`."""
    expected = sign(secret, timestamp, body).encode()
    ok = False
    for part in header.split(","):
        candidate = part.strip().encode("ascii", "replace")
        ok |= hmac.compare_digest(expected, candidate)
    return ok


# -- body -> RawCmsEvent dicts ----------------------------------------------------------------
def _pid(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value) == "":
        return None
    return str(value)


def wordpress_body_events(
    doc: Any, raw: bytes, source: str, brand: str, origin: str
) -> list[tuple[str, dict[str, Any]]]:
    """(Kafka key, RawCmsEvent) for a WordPress webhook body (decoded ``doc``, raw bytes ``raw``).

    One post object -> one event with the raw body as payload; a WP delete response
    ``{"deleted": true, "previous": {...}}`` -> one delete event; a non-empty list of posts ->
    one event per post (payload ``orjson.dumps(post)``, like
    :func:`connectors.replay.wordpress_events`).
    op is ``delete`` for status draft/private/trash (and for a delete response), else ``upsert``.

    Raises:
        RejectedInput: ``wordpress_error`` (a WP error object), ``not_a_post``, ``missing_id``.
    """
    if isinstance(doc, dict):
        items: list[tuple[Any, bytes]] = [(doc, raw)]
    elif isinstance(doc, list) and doc:
        items = [(p, orjson.dumps(p)) for p in doc]
    else:
        raise RejectedInput(
            "not_a_post", f"expected a post object or a non-empty list, got {doc!r:.80}"
        )
    out = []
    for i, (post, payload) in enumerate(items):
        if not isinstance(post, dict):
            raise RejectedInput(
                "not_a_post", f"item {i} is a JSON {type(post).__name__}, not a post"
            )
        deleted = isinstance(post.get("previous"), dict) and "deleted" in post
        body = post["previous"] if deleted else post
        if "code" in body and "message" in body and "id" not in body:
            raise RejectedInput("wordpress_error", f"{body.get('code')}: {body.get('message')}")
        sid = _pid(body.get("id"))
        if sid is None:
            raise RejectedInput("missing_id", f"item {i} has no usable 'id'")
        status = body.get("status")
        op = (
            "delete"
            if deleted or (isinstance(status, str) and status.lower() in DELETE_STATUSES)
            else "upsert"
        )
        event = _cms_event(
            kind="wordpress.post",
            source=source,
            brand=brand,
            source_id=sid,
            payload=payload,
            content_type=CONTENT_TYPES["wordpress.post"],
            origin=origin,
            fallback_id=sid,
            op=op,
        )
        out.append((f"{source}:{sid}", event))
    return out


def drupal_body_events(
    doc: Any, raw: bytes, source: str, brand: str, origin: str
) -> list[tuple[str, dict[str, Any]]]:
    """(Kafka key, RawCmsEvent) for a Drupal JSON:API webhook body.

    ``data`` an object -> one event, payload = the raw body; ``data`` a non-empty list -> one
    event per item with the included resources it references (as
    :func:`connectors.replay.drupal_events`). op ``delete`` when ``attributes.status`` is false.

    Raises:
        RejectedInput: ``jsonapi_error`` (an ``errors`` document, with its ``detail``),
            ``not_an_article`` (no ``data``, or a resource that is not a ``node--article``),
            ``missing_id``.
    """
    if not isinstance(doc, dict):
        raise RejectedInput(
            "not_an_article", f"expected a JSON:API document, got {type(doc).__name__}"
        )
    errors = doc.get("errors")
    if isinstance(errors, list):
        raise RejectedInput("jsonapi_error", errors_reason(errors))
    data = doc.get("data")
    if isinstance(data, dict):
        items: list[tuple[Any, bytes]] = [(data, raw)]
    elif isinstance(data, list) and data:
        included = doc.get("included")
        by_ref = {
            (str(r.get("type")), str(r.get("id"))): r
            for r in (included if isinstance(included, list) else [])
            if isinstance(r, dict)
        }
        items = []
        for item in data:
            refs = _relationship_refs(item) if isinstance(item, dict) else set()
            inc = [res for ref, res in by_ref.items() if ref in refs]
            items.append((item, orjson.dumps({"data": item, "included": inc})))
    else:
        raise RejectedInput(
            "not_an_article",
            "document has neither a 'data' object or non-empty list nor 'errors' (members: "
            + ", ".join(sorted(map(str, doc)))
            + ")",
        )
    out = []
    for i, (item, payload) in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != ARTICLE:
            what = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise RejectedInput("not_an_article", f"data item {i} is {what!r}, not {ARTICLE}")
        sid = _pid(item.get("id"))
        if sid is None:
            raise RejectedInput("missing_id", f"data item {i} has no usable 'id'")
        attrs = item.get("attributes")
        op = "delete" if isinstance(attrs, dict) and attrs.get("status") is False else "upsert"
        event = _cms_event(
            kind="drupal.node",
            source=source,
            brand=brand,
            source_id=sid,
            payload=payload,
            content_type=CONTENT_TYPES["drupal.node"],
            origin=origin,
            fallback_id=sid,
            op=op,
        )
        out.append((f"{source}:{sid}", event))
    return out


def body_events(
    kind: str, body: bytes, source: str, brand: str, origin: str
) -> list[tuple[str, dict[str, Any]]]:
    """Parse a webhook body of ``kind`` into (key, RawCmsEvent) pairs (pure, no Kafka).

    Raises:
        RejectedInput: ``invalid_json`` or the codes of :func:`wordpress_body_events` /
            :func:`drupal_body_events`; ConfigError for an unknown kind.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RejectedInput("invalid_json", f"body is not JSON: {exc}") from None
    if kind == "wordpress.post":
        return wordpress_body_events(doc, body, source, brand, origin)
    if kind == "drupal.node":
        return drupal_body_events(doc, body, source, brand, origin)
    raise ConfigError(f"webhook source {source}: unsupported kind {kind!r}")


# -- the app ------------------------------------------------------------------------------
Json = dict[str, Any]
PATH_PREFIX: Final = "/v1/webhooks/"
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]


class _Reject(Exception):
    """A request refused with ``status`` and a JSON error ``code``/``reason``."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:  # ASGI servers lower-case header names
            return value.decode("latin-1")
    return None


async def _respond(
    send: Send, status: int, body: Json, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    data = orjson.dumps(body)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class WebhookApp:
    """The webhook ASGI app: ``POST /v1/webhooks/{source}`` handled directly on the ASGI
    interface (the hot path: no routing or request objects), everything else (``GET
    /healthz``, ``GET /metrics``, the lifespan) by a small Starlette app.

    Build it with :func:`create_webhook_app`. ``state.metrics`` maps source name ->
    :class:`ConnectorMetrics` (``fetched`` requests that passed authentication, ``published``
    acknowledged events, ``rejected`` by reason code, including authentication failures).
    """

    def __init__(
        self,
        sources: Mapping[str, WebhookSource],
        producer: IdempotentProducer,
        *,
        ack_timeout_s: float,
        topic: str,
        clock: Callable[[], float],
    ) -> None:
        self.sources = dict(sources)
        self.producer = producer
        self.ack_timeout_s = ack_timeout_s
        self.topic = topic
        self.clock = clock
        self.secrets: dict[str, bytes] = {}
        for key, src in sources.items():
            if key != src.name:
                raise ConfigError(f"webhook source key {key!r} differs from its name {src.name!r}")
            if src.kind not in KINDS:
                raise ConfigError(f"webhook source {src.name}: kind {src.kind!r} not in {KINDS}")
            self.secrets[key] = src.secret()
        self.metrics: dict[str, ConnectorMetrics] = {name: ConnectorMetrics() for name in sources}
        self.encode = codec(CMS_SUBJECT).encode
        self.settler = DeliverySettler(producer, thread_name="webhook-delivery")
        self.inner = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/metrics", self._show_metrics, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )
        self.inner.state.metrics = self.metrics

    @property
    def state(self) -> Any:
        """Starlette-style app state (``state.metrics``)."""
        return self.inner.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(PATH_PREFIX):
            if scope["method"] != "POST":
                body = {"error": "method_not_allowed", "reason": "use POST"}
                await _respond(send, 405, body, [(b"allow", b"POST")])
                return
            name = path[len(PATH_PREFIX) :]
            status, answer = await self.handle(name, scope, receive)
            await _respond(send, status, answer)
            return
        await self.inner(scope, receive, send)

    # -- the POST handler ---------------------------------------------------------------------
    async def handle(self, name: str, scope: Scope, receive: Receive) -> tuple[int, Json]:
        """Authenticate, parse and publish one delivery; returns (HTTP status, JSON body)."""
        src = self.sources.get(name)
        if src is None:
            return 404, {"error": "unknown_source", "reason": f"no webhook source named {name!r}"}
        m = self.metrics[name]
        try:
            ids = await self._accept(src, m, scope, receive)
        except _Reject as rej:
            m.reject(rej.code)
            log.info("webhook %s: %d %s: %s", name, rej.status, rej.code, rej.reason)
            return rej.status, {"error": rej.code, "reason": rej.reason}
        m.published += len(ids)
        m.last_success_at = datetime.now(UTC)
        return 202, {"event_id": ids[0], "event_ids": ids, "count": len(ids)}

    async def _read_body(self, receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Reject(400, "client_disconnect", "client disconnected mid-body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Reject(413, "body_too_large", f"body exceeds limit {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _accept(
        self, src: WebhookSource, m: ConnectorMetrics, scope: Scope, receive: Receive
    ) -> list[str]:
        headers = scope["headers"]
        length = _header(headers, b"content-length")
        if length is not None:
            if not length.isdigit():
                raise _Reject(400, "bad_content_length", "Content-Length is not a number")
            if int(length) > src.max_body_bytes:
                raise _Reject(
                    413, "body_too_large", f"body of {length} bytes > limit {src.max_body_bytes}"
                )
        ts = _header(headers, TIMESTAMP_HEADER.encode())
        sig = _header(headers, SIGNATURE_HEADER.encode())
        if ts is None or sig is None:
            raise _Reject(
                401, "missing_signature", "X-Feedpipe-Timestamp and X-Feedpipe-Signature required"
            )
        if not ts.isdigit():
            raise _Reject(400, "bad_timestamp", "X-Feedpipe-Timestamp must be unix seconds")
        skew = self.clock() - int(ts)
        if abs(skew) > src.tolerance_s:
            raise _Reject(
                401,
                "stale_timestamp",
                f"timestamp is {skew:+.0f} s from server time; tolerance {src.tolerance_s} s",
            )
        body = await self._read_body(receive, src.max_body_bytes)
        if not verify_signature(self.secrets[src.name], ts, body, sig):
            raise _Reject(401, "bad_signature", "signature does not match the body and timestamp")
        m.fetched += 1
        try:
            events = body_events(src.kind, body, src.name, src.brand, _origin(scope))
        except RejectedInput as exc:
            status = 400 if exc.code == "invalid_json" else 422
            raise _Reject(status, exc.code, exc.reason) from None
        loop = asyncio.get_running_loop()
        futures: list[Delivered] = []
        try:
            for key, event in events:
                fut: Delivered = loop.create_future()
                futures.append(fut)
                self.producer.produce(
                    self.topic,
                    key.encode(),
                    self.encode(event),
                    on_delivery=self.settler.callback(fut),
                )
        except DeliveryError as exc:
            raise _Reject(503, "kafka_unavailable", str(exc)) from None
        self.settler.wake()  # reports served by produce()'s own poll(0)
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                for fut in futures:
                    await fut
        except TimeoutError:
            raise _Reject(
                503, "kafka_unavailable", f"Kafka did not acknowledge within {self.ack_timeout_s} s"
            ) from None
        except DeliveryError as exc:
            raise _Reject(503, "kafka_error", str(exc)) from None
        return [e["event_id"] for _, e in events]

    # -- the rest -------------------------------------------------------------------------------
    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def _show_metrics(self, request: Request) -> Response:
        return JSONResponse({k: v.as_dict() for k, v in self.metrics.items()})

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.settler.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            self.settler.stop()


def _origin(scope: Scope) -> str:
    """The request URL as the sender addressed it (``Host`` header, else the server address)."""
    host = _header(scope["headers"], b"host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}"


def create_webhook_app(
    sources: Mapping[str, WebhookSource],
    producer: IdempotentProducer,
    *,
    ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    topic: str = CMS_TOPIC,
    clock: Callable[[], float] = time.time,
) -> WebhookApp:
    """The webhook ASGI app (``POST /v1/webhooks/{source}``, ``GET /healthz``, ``GET /metrics``).

    Args:
        sources: configured sources by name.
        producer: the producer events go through (not closed by the app; its delivery reports
            are served by a thread the app starts and stops in its lifespan).
        ack_timeout_s: seconds to wait for Kafka's acknowledgement before answering 503.
        topic: target topic (``cms.raw``).
        clock: returns the current unix time in seconds (tests).

    Returns:
        The :class:`WebhookApp`; ``app.state.metrics`` maps source name -> metrics.

    Raises:
        ConfigError: a source's secret variable is unset, a kind is unsupported, or a source's
            mapping key differs from its name.
    """
    return WebhookApp(sources, producer, ack_timeout_s=ack_timeout_s, topic=topic, clock=clock)


# -- connector + runner -------------------------------------------------------------------
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
        topic: str = CMS_TOPIC,
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
        self.topic = topic
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


def parse_source_arg(text: str) -> WebhookSource:
    """``NAME:KIND:BRAND:SECRET_ENV`` -> :class:`WebhookSource`. ValueError when malformed."""
    parts = text.split(":")
    if len(parts) != 4 or parts[1] not in KINDS or not all(parts):
        raise ValueError(f"--source {text!r}: expected NAME:KIND:BRAND:SECRET_ENV, KIND in {KINDS}")
    return WebhookSource(parts[0], parts[1], parts[2], parts[3])  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m connectors.webhook``: serve the given sources until Ctrl-C."""
    ap = argparse.ArgumentParser(
        prog="python -m connectors.webhook", description=__doc__.split("\n")[0]
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
