"""The collector's ASGI app: authenticate a request, check each event, publish the valid ones to
``reader.events`` (key ``user_id``) and the refused ones to ``reader.events.dlq``, and answer
once Kafka acknowledged every record (status codes: see :mod:`connectors.collector`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.asgi import BodyError, read_body, respond_json
from connectors.base import DLQ_VALUE_MAX
from connectors.collector.events import MAX_BODY_BYTES, Parsed, Reject, parse_body
from connectors.collector.openapi import openapi_document
from connectors.reader_encoder import ReaderEventEncoder
from feedpipe.apikeys import KeyAuthority, KeyStore, presented_token
from feedpipe.errors import RejectedInput
from feedpipe.kafka.producer import Delivered, DeliveryError, DeliverySettler, IdempotentProducer
from feedpipe.monitoring.collector import (
    observe_accepted,
    observe_event_rejected,
    observe_produce,
    observe_request_rejected,
)
from feedpipe.topology import topology
from feedpipe.wire.codec import codec

log = logging.getLogger("connectors.collector")

PATH: Final = "/v1/events"
SCOPE: Final = "events:write"
STAGE: Final = "collector"
DEFAULT_ACK_TIMEOUT_S: Final = 10.0
Json = dict[str, Any]
_NO_STORE: Final = (b"cache-control", b"no-store")


class _Refused(Exception):
    """A request refused as a whole: HTTP ``status``, error ``code``, ``reason``, headers."""

    def __init__(
        self, status: int, code: str, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason, self.headers = status, code, reason, list(headers)


async def _respond(
    send: Send, status: int, body: Json, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await respond_json(send, status, body, [_NO_STORE, *extra])


def _media_type(headers: dict[bytes, bytes]) -> bytes:
    return headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()


class CollectorApp:
    """``POST /v1/events`` handled on the ASGI interface (the hot path: no routing or request
    objects); ``GET /healthz``, ``GET /metrics``, ``GET /openapi.json`` and the lifespan by a
    small Starlette app. Build it with :func:`create_collector_app`.

    Attributes:
        counts: ``{"accepted": n, "rejected": n}`` events since start (tests, the server's
            summary line).
    """

    def __init__(
        self,
        producer: IdempotentProducer,
        keystore: KeyStore,
        *,
        ack_timeout_s: float,
        topic: str,
        dlq: str,
        workers: int,
        clock_ms: Callable[[], int],
    ) -> None:
        self.producer = producer
        self.keystore = keystore
        self.authority = KeyAuthority(keystore, workers)
        self.ack_timeout_s = ack_timeout_s
        self.topic = topic
        self.dlq = dlq
        self.clock_ms = clock_ms
        self.encoder = ReaderEventEncoder()
        self.encode_dead = codec("DeadLetter").encode
        self.settler = DeliverySettler(producer, thread_name="collector-delivery")
        self.counts = {"accepted": 0, "rejected": 0}
        self.openapi = orjson.dumps(openapi_document())
        self.inner = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/openapi.json", self._openapi, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH:
            if scope["method"] != "POST":
                body = {"error": "method_not_allowed", "reason": "use POST"}
                await _respond(send, 405, body, [(b"allow", b"POST")])
                return
            try:
                answer = await self.handle(scope, receive)
            except _Refused as ref:
                observe_request_rejected(ref.code)
                log.info("collector: %d %s: %s", ref.status, ref.code, ref.reason)
                body = {"error": ref.code, "reason": ref.reason}
                await _respond(send, ref.status, body, ref.headers)
                return
            await _respond(send, 202, answer)
            return
        await self.inner(scope, receive, send)

    # -- the POST handler ---------------------------------------------------------------------
    async def handle(self, scope: Scope, receive: Receive) -> Json:
        """Authenticate, parse and publish one request; returns the 202 body.

        Raises:
            _Refused: the request as a whole is refused (4xx, or 503 when Kafka did not
                acknowledge within the timeout).
        """
        headers = dict(scope["headers"])
        media = _media_type(headers)
        beacon = media == b"text/plain"
        if not beacon and media != b"application/json":
            raise _Refused(415, "unsupported_media_type", "send application/json or text/plain")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            raise _Refused(413, "body_too_large", f"body over {MAX_BODY_BYTES} bytes")
        token = presented_token(headers)
        if token is not None or not beacon:  # a header key is checked before the body is read
            self._authorise(token)
        body = await self._read_body(receive)
        try:
            parsed = parse_body(body, self.clock_ms(), beacon=beacon)
        except RejectedInput as exc:
            raise _Refused(400, exc.code, exc.reason) from None
        if token is None and beacon:  # sendBeacon cannot set headers: the key is in the body
            self._authorise(parsed.api_key.encode() if parsed.api_key else None)
        ids = await self._publish(parsed)
        errors = [{"index": r.index, "code": r.code, "reason": r.reason} for r in parsed.rejects]
        return {
            "accepted": len(ids),
            "rejected": len(errors),
            "event_ids": ids,
            "errors": errors,
        }

    def _authorise(self, token: bytes | None) -> None:
        access = self.authority.check(token, SCOPE)
        if access.status:
            code = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}[access.status]
            raise _Refused(access.status, code, access.message, access.headers)

    async def _read_body(self, receive: Receive) -> bytes:
        try:
            return await read_body(receive, MAX_BODY_BYTES)
        except BodyError as exc:
            raise _Refused(exc.status, exc.code, exc.reason) from None

    def _dead_letter(self, r: Reject) -> tuple[bytes | None, bytes]:
        ev = r.event if isinstance(r.event, dict) else {}
        user = ev.get("user_id")
        eid = ev.get("event_id")
        key = user.encode() if isinstance(user, str) and user else None
        value = orjson.dumps(r.event)[:DLQ_VALUE_MAX]
        record = {
            "stage": STAGE,
            "source_topic": self.topic,
            "partition": -1,
            "offset": -1,
            "reason": r.reason,
            "error_type": r.code,
            "raw_event_id": eid if isinstance(eid, str) else None,
            "origin": PATH,
            "key": key,
            "value": value,
            "failed_at": datetime.now(UTC),
        }
        return key, self.encode_dead(record)

    async def _publish(self, parsed: Parsed) -> list[str]:
        """Produce the valid records and the DLQ records; wait for every acknowledgement (one
        future for the request, resolved once all its records are acknowledged)."""
        loop = asyncio.get_running_loop()
        done: Delivered = loop.create_future()
        cb = self.settler.batch_callback(done, len(parsed.records) + len(parsed.rejects))
        produce = self.producer.produce
        encode = self.encoder.encode
        topic = self.topic
        t0 = time.perf_counter()
        try:
            for _, rec in parsed.records:
                produce(topic, rec["user_id"].encode(), encode(rec), on_delivery=cb, serve=False)
            for r in parsed.rejects:
                key, value = self._dead_letter(r)
                produce(self.dlq, key, value, on_delivery=cb, serve=False)
        except DeliveryError as exc:
            raise _Refused(503, "kafka_unavailable", str(exc), [(b"retry-after", b"1")]) from None
        self.producer.poll(0)  # serve reports already waiting; the settler thread does the rest
        self.settler.wake()
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                await done
        except TimeoutError:
            reason = f"Kafka did not acknowledge within {self.ack_timeout_s} s"
            raise _Refused(503, "kafka_unavailable", reason, [(b"retry-after", b"1")]) from None
        except DeliveryError as exc:
            raise _Refused(503, "kafka_error", str(exc), [(b"retry-after", b"1")]) from None
        observe_produce(time.perf_counter() - t0)
        by_type: dict[str, int] = {}
        for _, rec in parsed.records:
            by_type[rec["type"]] = by_type.get(rec["type"], 0) + 1
        for typ, n in by_type.items():
            observe_accepted(typ, n)
        for r in parsed.rejects:
            observe_event_rejected(r.code)
        self.counts["accepted"] += len(parsed.records)
        self.counts["rejected"] += len(parsed.rejects)
        return [rec["event_id"] for _, rec in parsed.records]

    # -- the rest -------------------------------------------------------------------------------
    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", **self.counts})

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def _openapi(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.settler.start(asyncio.get_running_loop())
        task = asyncio.create_task(self.keystore.watch())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            self.settler.stop()


def create_collector_app(
    producer: IdempotentProducer,
    keystore: KeyStore,
    *,
    ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    cors_origins: Sequence[str] = (),
    workers: int = 1,
    topic: str | None = None,
    dlq: str | None = None,
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> ASGIApp:
    """The collector ASGI app (``POST /v1/events``, ``GET /healthz|/metrics|/openapi.json``).

    Args:
        producer: the producer records go through (not closed by the app; its delivery
            reports are served by a thread the app starts and stops in its lifespan).
        keystore: API keys (:mod:`feedpipe.apikeys`); a key needs ``events:write``. The file
            is re-read within ~1 s of a change.
        ack_timeout_s: seconds to wait for Kafka's acknowledgement before answering 503.
        cors_origins: browser origins allowed (``["*"]`` for any); empty: no CORS headers.
        workers: collector processes sharing the port (each enforces 1/N of a key's rate).
        topic / dlq: default ``topology().ingest.reader_events`` / ``.reader_events_dlq``.
        clock_ms: server time in epoch ms (tests).

    Returns:
        The ASGI app: CORS (when configured) -> :class:`CollectorApp`; the
        :class:`CollectorApp` is ``app.collector``.
    """
    ingest = topology().ingest
    app = CollectorApp(
        producer,
        keystore,
        ack_timeout_s=ack_timeout_s,
        topic=topic or ingest.reader_events,
        dlq=dlq or ingest.reader_events_dlq,
        workers=workers,
        clock_ms=clock_ms,
    )
    outer: ASGIApp = app
    if cors_origins:
        outer = CORSMiddleware(
            app,
            allow_origins=list(cors_origins),
            allow_methods=["POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
            max_age=600,
        )
    outer.collector = app  # type: ignore[attr-defined]
    return outer
