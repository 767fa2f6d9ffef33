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
import contextlib
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from confluent_kafka import KafkaError, Message
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.base import Connector, ConnectorMetrics
from connectors.producer import DeliveryCallback, DeliveryError, IdempotentProducer
from connectors.replay import (
    CMS_SUBJECT,
    CMS_TOPIC,
    DELETE_STATUSES,
    _cms_event,
    _relationship_refs,
)
from feedpipe.codec import codec
from feedpipe.errors import ConfigError, RejectedInput
from feedpipe.jsonapi import errors_reason
from feedpipe.settings import settings

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
        """The secret from the environment.

        Raises:
            ConfigError: the variable is unset or empty (its value is never put in messages).
        """
        value = os.environ.get(self.secret_env, "")
        if not value:
            raise ConfigError(
                f"webhook source {self.name}: environment variable {self.secret_env} is not set"
            )
        return value.encode()


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
class _TooLarge(Exception):
    pass


def _error(status: int, code: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": code, "reason": reason}, status_code=status)


class _Poller:
    """Serves the producer's delivery reports on a background thread (``poll(0.1)`` loop)."""

    def __init__(self, producer: IdempotentProducer) -> None:
        self.producer = producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhook-delivery", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def create_webhook_app(
    sources: Mapping[str, WebhookSource],
    producer: IdempotentProducer,
    *,
    ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    topic: str = CMS_TOPIC,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The webhook Starlette app (routes ``POST /v1/webhooks/{source}``, ``GET /healthz``,
    ``GET /metrics``).

    Args:
        sources: configured sources by name.
        producer: the producer events go through (not closed by the app; its delivery reports
            are served by a thread the app starts and stops in its lifespan; on shutdown the
            app flushes it for up to ``ack_timeout_s``).
        ack_timeout_s: seconds to wait for Kafka's acknowledgement before answering 503.
        topic: target topic (``cms.raw``).
        clock: returns the current unix time in seconds (tests).

    Returns:
        The app; ``app.state.metrics`` maps source name -> :class:`ConnectorMetrics`
        (``fetched`` requests that passed authentication, ``published`` acked events,
        ``rejected`` by reason code, including authentication failures).

    Raises:
        ConfigError: a source's secret variable is unset, a kind is unsupported, or a source's
            mapping key differs from its name.
    """
    secrets: dict[str, bytes] = {}
    for key, src in sources.items():
        if key != src.name:
            raise ConfigError(f"webhook source key {key!r} differs from its name {src.name!r}")
        if src.kind not in KINDS:
            raise ConfigError(f"webhook source {src.name}: kind {src.kind!r} not in {KINDS}")
        secrets[key] = src.secret()
    metrics: dict[str, ConnectorMetrics] = {name: ConnectorMetrics() for name in sources}
    encode = codec(CMS_SUBJECT).encode
    poller = _Poller(producer)

    async def read_body(request: Request, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def receive(request: Request) -> Response:
        name = request.path_params["source"]
        src = sources.get(name)
        if src is None:
            return _error(404, "unknown_source", f"no webhook source named {name!r}")
        m = metrics[name]

        def reject(status: int, code: str, reason: str) -> JSONResponse:
            m.reject(code)
            log.info("webhook %s: %d %s: %s", name, status, code, reason)
            return _error(status, code, reason)

        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return reject(400, "bad_content_length", "Content-Length is not a number")
            if int(length) > src.max_body_bytes:
                return reject(
                    413, "body_too_large", f"body of {length} bytes > limit {src.max_body_bytes}"
                )
        ts = request.headers.get(TIMESTAMP_HEADER)
        sig = request.headers.get(SIGNATURE_HEADER)
        if ts is None or sig is None:
            return reject(
                401, "missing_signature", "X-Feedpipe-Timestamp and X-Feedpipe-Signature required"
            )
        if not ts.isdigit():
            return reject(400, "bad_timestamp", "X-Feedpipe-Timestamp must be unix seconds")
        skew = clock() - int(ts)
        if abs(skew) > src.tolerance_s:
            return reject(
                401,
                "stale_timestamp",
                f"timestamp is {skew:+.0f} s from server time; tolerance {src.tolerance_s} s",
            )
        try:
            body = await read_body(request, src.max_body_bytes)
        except _TooLarge:
            return reject(413, "body_too_large", f"body exceeds limit {src.max_body_bytes} bytes")
        except ClientDisconnect:
            m.reject("client_disconnect")
            return Response(status_code=400)
        if not verify_signature(secrets[name], ts, body, sig):
            return reject(401, "bad_signature", "signature does not match the body and timestamp")
        m.fetched += 1
        try:
            events = body_events(src.kind, body, name, src.brand, str(request.url))
        except RejectedInput as exc:
            return reject(400 if exc.code == "invalid_json" else 422, exc.code, exc.reason)

        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        try:
            for key, event in events:
                fut: asyncio.Future[None] = loop.create_future()
                futures.append(fut)
                producer.produce(topic, key.encode(), encode(event), on_delivery=_bridge(loop, fut))
        except DeliveryError as exc:
            return reject(503, "kafka_unavailable", str(exc))
        try:
            await asyncio.wait_for(asyncio.gather(*futures), ack_timeout_s)
        except TimeoutError:
            return reject(
                503, "kafka_unavailable", f"Kafka did not acknowledge within {ack_timeout_s} s"
            )
        except DeliveryError as exc:
            return reject(503, "kafka_error", str(exc))
        m.published += len(events)
        m.last_success_at = datetime.now(UTC)
        ids = [e["event_id"] for _, e in events]
        return JSONResponse(
            {"event_id": ids[0], "event_ids": ids, "count": len(ids)}, status_code=202
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def show_metrics(request: Request) -> Response:
        return JSONResponse({k: v.as_dict() for k, v in metrics.items()})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        poller.start()
        try:
            yield
        finally:
            poller.stop()
            producer.poll(0)

    app = Starlette(
        routes=[
            Route("/v1/webhooks/{source}", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", show_metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    return app


def _bridge(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> DeliveryCallback:
    """A delivery callback resolving ``fut`` on ``loop`` (thread-safe; ignores a future that
    was already cancelled by a timeout and a report arriving after the loop closed)."""

    def settle(err: KafkaError | None, msg: Message) -> None:
        if fut.done():
            return
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(DeliveryError(f"{msg.topic()}[{msg.partition()}]: {err.str()}"))

    def cb(err: KafkaError | None, msg: Message) -> None:
        if fut.done():  # answered 503 already; the producer counted the report
            return
        # RuntimeError: the loop closed (server stopped) before this late report
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, err, msg)

    return cb


# -- connector + runner -------------------------------------------------------------------
class WebhookConnector(Connector):
    """Serves :func:`create_webhook_app` with uvicorn until :meth:`stop`.

    Args:
        sources: the push sources.
        host / port: bind address (default 127.0.0.1:8090; port 0 picks a free port, see
            :attr:`port` once :attr:`started` is set).
        ack_timeout_s / topic: see :func:`create_webhook_app`.
        name / producer / bootstrap: see :class:`Connector`.
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
    ) -> None:
        super().__init__(name, producer=producer, bootstrap=bootstrap)
        self.sources = dict(sources)
        self.host = host
        self.port = port
        self.ack_timeout_s = ack_timeout_s
        self.topic = topic
        self.started = threading.Event()
        self._server: Any = None

    def run(self) -> ConnectorMetrics:
        """Serve until :meth:`stop`; returns the summed metrics of every source.

        Raises:
            ConfigError: see :func:`create_webhook_app`.
        """
        import uvicorn

        self.setup()
        clock = time.perf_counter()
        app = create_webhook_app(
            self.sources, self.producer, ack_timeout_s=self.ack_timeout_s, topic=self.topic
        )
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        self._server = server

        async def serve() -> None:
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            if server.started:
                sock = server.servers[0].sockets[0]
                self.port = int(sock.getsockname()[1])
                self.started.set()
            await task

        if not self.stopping:
            asyncio.run(serve())
        self.metrics.elapsed_s = time.perf_counter() - clock
        for m in app.state.metrics.values():
            self.metrics.fetched += m.fetched
            self.metrics.published += m.published
            for code, n in m.rejected.items():
                self.metrics.rejected[code] = self.metrics.rejected.get(code, 0) + n
            if m.last_success_at and (
                self.metrics.last_success_at is None
                or m.last_success_at > self.metrics.last_success_at
            ):
                self.metrics.last_success_at = m.last_success_at
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
    ap.add_argument("--bootstrap", default=None, help="default FEEDPIPE_KAFKA_BOOTSTRAP")
    args = ap.parse_args(argv)
    logging.basicConfig(level=settings().log_level.upper())
    conn = WebhookConnector(
        {s.name: s for s in args.source},
        host=args.host,
        port=args.port,
        ack_timeout_s=args.ack_timeout,
        bootstrap=args.bootstrap,
    )
    try:
        metrics = conn.run()
    finally:
        conn.stop()
    print(orjson.dumps(metrics.as_dict()).decode())


if __name__ == "__main__":
    main()
