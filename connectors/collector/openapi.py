"""The collector's OpenAPI 3.1 document (served at ``GET /openapi.json``; checked by
schemathesis in tests/integration/test_collector_schema.py)."""

from __future__ import annotations

from typing import Any

from connectors.collector.events import INT32_MAX, MAX_BODY_BYTES, MAX_EVENTS, TYPES

Json = dict[str, Any]
_ID = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"}
_TEXT = {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}


def _error(description: str, headers: Json | None = None) -> Json:
    out: Json = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}


def openapi_document() -> Json:
    """The document: ``POST /v1/events`` and the open operational routes."""
    event = {
        "type": "object",
        "description": (
            "One reader event. Checked one by one: an invalid event is refused alone (listed "
            "in `errors` of the 202 answer and written to reader.events.dlq with its reason)."
        ),
        "required": ["type", "user_id", "occurred_at"],
        "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "enum": list(TYPES)},
            "user_id": _ID,
            "content_id": {
                **_ID,
                "description": "feedpipe content id; required except for `erase` (empty)",
            },
            "occurred_at": {
                "description": "event time: epoch milliseconds, or RFC 3339 with an offset; "
                "after 2000 and at most 1 h ahead of the server clock",
                "oneOf": [
                    {"type": "integer", "minimum": 946684800000},
                    {"type": "string", "format": "date-time"},
                ],
            },
            "event_id": {
                **_TEXT,
                "description": "derived from the event's fields when absent (retries dedupe)",
            },
            "impression_id": _TEXT,
            "position": {"type": "integer", "minimum": 0, "maximum": INT32_MAX},
            "dwell_ms": {
                "type": "integer",
                "minimum": 0,
                "description": "milliseconds on the item; required for `dwell`",
            },
        },
    }
    batch = {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_EVENTS,
                "items": {"$ref": "#/components/schemas/ReaderEvent"},
            },
            "api_key": {
                "type": "string",
                "description": "text/plain (sendBeacon) bodies only: the API key, since a "
                "beacon cannot set headers",
            },
        },
    }
    accepted = {
        "type": "object",
        "required": ["accepted", "rejected", "event_ids", "errors"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {"type": "integer", "minimum": 0},
            "event_ids": {"type": "array", "items": {"type": "string"}},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "code", "reason"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "code": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }
    post = {
        "operationId": "postEvents",
        "summary": "Collect a batch of reader events",
        "description": (
            f"Up to {MAX_EVENTS} events and {MAX_BODY_BYTES} bytes per request. Answers 202 "
            "once Kafka acknowledged every record (acks=all): the accepted events on "
            "reader.events (key user_id), the refused ones on reader.events.dlq. Scope "
            "`events:write`; a key's rate limit counts requests. A `text/plain` body (what "
            "navigator.sendBeacon sends for a string) is read as the same JSON, with the key in "
            "its `api_key` field since a beacon cannot set headers."
        ),
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/EventBatch"}},
            },
        },
        "responses": {
            "202": {
                "description": "every record acknowledged; refused events listed in `errors`",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                },
            },
            "400": _error("not JSON, not an events batch, empty or over the event limit"),
            "401": _error("no or unknown API key"),
            "403": _error("the key lacks events:write"),
            "413": _error(f"body over {MAX_BODY_BYTES} bytes"),
            "415": _error("content type other than application/json or text/plain"),
            "429": _error("the key's rate limit is exceeded", _RETRY),
            "503": _error("Kafka did not acknowledge in time: retry (event ids dedupe)", _RETRY),
        },
    }
    health = {
        "type": "object",
        "required": ["status", "accepted", "rejected"],
        "properties": {
            "status": {"type": "string"},
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "feedpipe event collector",
            "version": "1",
            "description": "Reader events from front ends into the pipeline (docs/api.md).",
        },
        "paths": {
            "/v1/events": {"post": post},
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "alive; events accepted and refused since start",
                            "content": {"application/json": {"schema": health}},
                        }
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "ReaderEvent": event,
                "EventBatch": batch,
                "Accepted": accepted,
                "Error": {
                    "type": "object",
                    "required": ["error", "reason"],
                    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
                },
            },
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
