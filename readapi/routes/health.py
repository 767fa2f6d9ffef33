"""Operational routes of the read endpoint, open without an API key: ``/healthz`` (liveness),
``/readyz`` (readiness), ``/metrics`` (Prometheus) and ``/openapi.json``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from readapi.caching import NO_STORE, no_store_json
from readapi.routes import store_of
from readapi.store import UNAVAILABLE, Json


async def healthz(request: Request) -> Response:
    """GET /healthz: liveness (the process answers); never touches Redis."""
    return no_store_json({"status": "ok", "circuit": store_of(request).breaker.state})


async def readyz(request: Request) -> Response:
    """GET /readyz: 200 ``ready`` when Redis answers PING, 200 ``degraded`` when it does not but
    trending snapshots can still answer feeds, else 503 ``unavailable``."""
    store = store_of(request)
    doc: Json = {"circuit": store.breaker.state, "snapshots": len(store.snapshots)}
    status = 200
    try:
        await store.ping()
        doc.update(status="ready", redis="ok")
    except UNAVAILABLE as exc:
        doc.update(redis="error", reason=f"{type(exc).__name__}: {exc}"[:200])
        if store.snapshots:
            doc["status"] = "degraded"
        else:
            doc["status"] = "unavailable"
            status = 503
    doc["circuit"] = store.breaker.state  # the PING may have moved the breaker
    return no_store_json(doc, status)


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text exposition of this app's registry."""
    return Response(
        generate_latest(request.app.state.registry),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": NO_STORE},
    )


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the OpenAPI 3.1 document (pre-serialised)."""
    body: bytes = request.app.state.openapi
    return Response(
        body, media_type="application/json", headers={"Cache-Control": "public, max-age=300"}
    )
