"""The webhook ASGI app: authenticate a delivery, split its body into raw CMS events, publish
them and answer once Kafka acknowledged them (status codes: see :mod:`connectors.webhook`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from connectors.asgi import BodyError, read_body, respond_json
from connectors.base import ConnectorMetrics
from connectors.webhook.bodies import body_events
from connectors.webhook.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from connectors.webhook.sources import KINDS, WebhookSource
from feedpipe.cms.events import SUBJECT as CMS_SUBJECT
from feedpipe.errors import ConfigError, RejectedInput
from feedpipe.kafka.producer import Delivered, DeliveryError, DeliverySettler, IdempotentProducer
from feedpipe.topology import topology
from feedpipe.wire.codec import codec

log = logging.getLogger("connectors.webhook")

DEFAULT_ACK_TIMEOUT_S: Final = 10.0
Json = dict[str, Any]
PATH_PREFIX: Final = "/v1/webhooks/"


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
                await respond_json(send, 405, body, [(b"allow", b"POST")])
                return
            name = path[len(PATH_PREFIX) :]
            status, answer = await self.handle(name, scope, receive)
            await respond_json(send, status, answer)
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
        try:
            return await read_body(receive, limit)
        except BodyError as exc:
            raise _Reject(exc.status, exc.code, exc.reason) from None

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
            for event in events:
                fut: Delivered = loop.create_future()
                futures.append(fut)
                self.producer.produce(
                    self.topic,
                    event.key.encode(),
                    self.encode(event.record),
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
        return [e.record["event_id"] for e in events]

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
    topic: str | None = None,
    clock: Callable[[], float] = time.time,
) -> WebhookApp:
    """The webhook ASGI app (``POST /v1/webhooks/{source}``, ``GET /healthz``, ``GET /metrics``).

    Args:
        sources: configured sources by name.
        producer: the producer events go through (not closed by the app; its delivery reports
            are served by a thread the app starts and stops in its lifespan).
        ack_timeout_s: seconds to wait for Kafka's acknowledgement before answering 503.
        topic: target topic (default ``topology().ingest.cms``).
        clock: returns the current unix time in seconds (tests).

    Returns:
        The :class:`WebhookApp`; ``app.state.metrics`` maps source name -> metrics.

    Raises:
        ConfigError: a source's secret variable is unset, a kind is unsupported, or a source's
            mapping key differs from its name.
    """
    return WebhookApp(
        sources,
        producer,
        ack_timeout_s=ack_timeout_s,
        topic=topic if topic is not None else topology().ingest.cms,
        clock=clock,
    )
