"""The OpenAPI 3.1 document of the read endpoint, served at ``/openapi.json``.

Written by hand as a Python dict (the app is plain Starlette, no schema generator); the
schemathesis test (tests/integration/test_readapi_schema.py) checks the running API against it,
so a route or field that drifts from this document fails the build.
"""

from __future__ import annotations

from typing import Any

from feedpipe.apikeys import SCOPES
from readapi.params import CURSOR_PATTERN, FLAG_VALUES

Json = dict[str, Any]

SAFE_ID = r"^[A-Za-z0-9_.\-]{1,128}$"
SAFE_ID_OR_EMPTY = r"^([A-Za-z0-9_.\-]{1,128})?$"
CURSOR_OR_EMPTY = "^(" + CURSOR_PATTERN[1:-1] + ")?$"
API_VERSION = "1.0.0"


def _nullable(type_: str, **extra: Any) -> Json:
    return {"type": [type_, "null"], **extra}


def _affinities(label: str) -> Json:
    """A profile's top list: ``[{label: name, "affinity": share}]``."""
    return {
        "type": "array",
        "items": {
            "type": "object",
            "required": [label, "affinity"],
            "properties": {label: {"type": "string"}, "affinity": {"type": "number"}},
        },
    }


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str, headers: Json | None = None) -> Json:
    out: Json = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_ERR = _ref("Error")
_CACHE_HEADERS: Json = {
    "ETag": {"description": "strong entity tag of the body", "schema": {"type": "string"}},
    "Cache-Control": {"description": "CDN/browser caching policy", "schema": {"type": "string"}},
    "X-Request-ID": {
        "description": "request id (echoed or generated)",
        "schema": {"type": "string"},
    },
}
_FEED_HEADERS: Json = {
    **_CACHE_HEADERS,
    "X-Feed-Source": {
        "description": "ladder level served",
        "schema": {"type": "string"},
    },
    "X-Feed-Fallback-Reason": {
        "description": "why the personalised level was not served (absent when it was)",
        "schema": {"type": "string"},
    },
}


def _errors(*codes: int) -> Json:
    texts = {
        400: "invalid id, parameter or cursor",
        401: "missing or unknown API key",
        403: "the key lacks the route's scope",
        404: "not found",
        413: "a request body was sent (no route takes one)",
        414: "path or query string too long (readapi/gateway.py limits)",
        429: "the key's rate limit is exceeded (see Retry-After)",
        431: "request headers too large",
        503: "Redis unavailable and no ladder level can answer (see Retry-After)",
    }
    out: Json = {}
    for c in codes:
        headers: Json = {}
        if c in (429, 503):
            headers["Retry-After"] = {"description": "seconds", "schema": {"type": "string"}}
        out[str(c)] = _json(_ERR, texts[c], headers or None)
    return out


_NOT_MODIFIED: Json = {
    "304": {"description": "If-None-Match matched the current ETag (no body)"},
}
_LIMITS = (413, 414, 431)  # refused by the gateway before routing (readapi/gateway.py)
_SECURED = _errors(400, 401, 403, 404, *_LIMITS, 429, 503)

_P_LIMIT: Json = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "items per page",
    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
}
_P_BRAND: Json = {
    "name": "brand",
    "in": "query",
    "required": False,
    "description": (
        "one brand (absent or empty: all brands; fallbacks then use the default brand)"
    ),
    "schema": {"type": "string", "pattern": SAFE_ID_OR_EMPTY},
}
_P_IF_NONE_MATCH: Json = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "ETag(s) of a cached copy; a match gives 304",
    "schema": {"type": "string"},
}


def _path_param(name: str, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": SAFE_ID},
    }


SCHEMAS: Json = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "request_id": _nullable("string"),
            "reason": {"type": "string"},
            "detail": {"type": "string"},
        },
    },
    "FeedItem": {
        "type": "object",
        "required": ["rank", "content_id", "title", "url", "brand", "published_at"],
        "properties": {
            "rank": {"type": "integer", "minimum": 1},
            "content_id": {"type": "string"},
            "title": _nullable("string"),
            "summary": _nullable("string"),
            "url": _nullable("string"),
            "brand": _nullable("string"),
            "categories": {"type": ["array", "null"], "items": {"type": "string"}},
            "published_at": _nullable("string", format="date-time"),
            "score": {"type": ["number", "null"], "description": "trending score (trending)"},
            "explain": {
                "type": "object",
                "description": (
                    "score breakdown: for personalised items every explanation field the "
                    "ranker stored (score, affinity, recency, engagement, weights, and e.g. "
                    "ranker, weight_version, arm, and sources: the candidate sources that "
                    "proposed the item) plus feed_rank; for fallback items the level"
                ),
                "additionalProperties": True,
            },
        },
    },
    "Feed": {
        "type": "object",
        "required": [
            "user_id", "source", "fallback", "reason", "brand", "epoch", "generated_at",
            "ranker", "profile_version", "stale", "snapshot_at", "items", "next_cursor",
        ],
        "properties": {
            "user_id": {"type": "string"},
            "source": {
                "type": "string",
                "enum": [
                    "personalised", "trending", "latest", "trending_snapshot", "latest_snapshot",
                ],
            },
            "fallback": {"type": "boolean"},
            "reason": {
                "type": ["string", "null"],
                "enum": [
                    None, "no_feed", "empty_after_filter", "cursor", "redis_unavailable",
                    "circuit_open",
                ],
            },
            "brand": _nullable("string"),
            "epoch": _nullable("integer"),
            "generated_at": _nullable("string", format="date-time"),
            "ranker": _nullable("string"),
            "profile_version": _nullable("integer"),
            "stale": {"type": "boolean"},
            "snapshot_at": _nullable("string", format="date-time"),
            "items": {"type": "array", "items": _ref("FeedItem")},
            "next_cursor": _nullable("string"),
        },
    },
    "Content": {
        "type": "object",
        "required": ["content_id"],
        "description": "the enriched content item (docs/redis-keys.md), times as ISO-8601",
        "properties": {
            "content_id": {"type": "string"},
            "title": _nullable("string"),
            "brand": _nullable("string"),
            "published_at": _nullable("string", format="date-time"),
            "updated_at": _nullable("string", format="date-time"),
            "enriched_at": _nullable("string", format="date-time"),
        },
        "additionalProperties": True,
    },
    "Profile": {
        "type": "object",
        "required": ["user_id", "top_categories", "top_topics", "recent_reads"],
        "properties": {
            "user_id": _nullable("string"),
            "version": _nullable("integer"),
            "impressions": {"type": "integer"},
            "clicks": {"type": "integer"},
            "history_clicks": {"type": "integer"},
            "engagement_rate": {"type": "number"},
            "first_seen": _nullable("string", format="date-time"),
            "last_seen": _nullable("string", format="date-time"),
            "affinity_at": _nullable("string", format="date-time"),
            "top_categories": _affinities("category"),
            "top_topics": _affinities("topic"),
            "recent_reads": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "content_id": _nullable("string"),
                        "at": _nullable("string", format="date-time"),
                    },
                },
            },
            "pending_count": {"type": "integer"},
            "brands": {"type": "object", "additionalProperties": {"type": "number"}},
        },
    },
    "Trending": {
        "type": "object",
        "required": ["brand", "epoch", "stale", "items"],
        "properties": {
            "brand": {"type": "string"},
            "epoch": _nullable("integer"),
            "stale": {"type": "boolean"},
            "snapshot_at": _nullable("string", format="date-time"),
            "items": {"type": "array", "items": _ref("FeedItem")},
        },
    },
    "Experiments": {
        "type": "object",
        "required": ["experiments"],
        "properties": {"experiments": {"type": "array", "items": {"type": "string"}}},
    },
    "ExperimentResults": {
        "type": "object",
        "required": ["experiment", "arms", "ignored_fields"],
        "properties": {
            "experiment": {"type": "string"},
            "arms": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["arm", "impressions", "clicks", "ctr", "ctr_ci95"],
                    "properties": {
                        "arm": {"type": "string"},
                        "impressions": {"type": "integer", "minimum": 0},
                        "clicks": {"type": "integer", "minimum": 0},
                        "ctr": {"type": ["number", "null"], "description": "clicks/impressions"},
                        "ctr_ci95": {
                            "type": ["array", "null"],
                            "description": "Wilson 95 % interval [low, high]",
                            "items": {"type": "number"},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    },
                },
            },
            "ignored_fields": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "circuit"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "circuit": {"type": "string", "enum": ["closed", "open", "half_open"]},
        },
    },
    "Ready": {
        "type": "object",
        "required": ["status", "redis", "circuit", "snapshots"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "degraded", "unavailable"]},
            "redis": {"type": "string", "enum": ["ok", "error"]},
            "circuit": {"type": "string", "enum": ["closed", "open", "half_open"]},
            "snapshots": {"type": "integer", "minimum": 0},
            "reason": {"type": "string"},
        },
    },
}


def _get(
    summary: str,
    scope: str | None,
    ok: Json,
    params: list[Json],
    *,
    cached: bool = True,
    not_found: bool = True,
) -> Json:
    responses: Json = {"200": ok}
    if cached:
        responses.update(_NOT_MODIFIED)
    if scope is None:
        responses.update({k: v for k, v in _errors(400, 404, *_LIMITS, 503).items()})
        if not not_found:
            responses.pop("404")
    else:
        responses.update(_SECURED)
    op: Json = {
        "summary": summary,
        "parameters": [*params, *([_P_IF_NONE_MATCH] if cached else [])],
        "responses": responses,
    }
    if scope is None:
        op["security"] = []
    else:
        op["description"] = f"Scope: `{scope}` (`admin` implies it)."
        op["security"] = [{"ApiKeyHeader": []}, {"BearerToken": []}]
    return {"get": op}


def openapi_document() -> Json:
    """The OpenAPI 3.1 document (a fresh dict each call)."""
    feed = _json(_ref("Feed"), "a feed page from the highest ladder level that answered",
                 _FEED_HEADERS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "feedpipe read API",
            "version": API_VERSION,
            "description": (
                "Personalised, explainable feeds from Redis materialised views. Scopes: "
                + ", ".join(SCOPES)
                + ". See docs/api.md for the degradation ladder, caching and limits."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/v1/feeds/{user_id}": _get(
                "The user's feed (personalised -> trending -> latest -> snapshot)",
                "feeds:read",
                feed,
                [
                    _path_param("user_id", "reader id"),
                    _P_LIMIT,
                    _P_BRAND,
                    {
                        "name": "explain",
                        "in": "query",
                        "required": False,
                        "description": "add each item's score breakdown (empty: false)",
                        "schema": {"type": "string", "enum": list(FLAG_VALUES), "default": "false"},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": (
                            "next_cursor of the previous page (pinned to its ladder level)"
                        ),
                        "schema": {"type": "string", "pattern": CURSOR_OR_EMPTY},
                    },
                ],
            ),
            "/v1/content/{content_id}": _get(
                "One enriched content item",
                "feeds:read",
                _json(_ref("Content"), "the content item", _CACHE_HEADERS),
                [_path_param("content_id", "content id")],
            ),
            "/v1/profiles/{user_id}": _get(
                "A reader's profile summary (personal data)",
                "profiles:read",
                _json(_ref("Profile"), "the profile summary", _CACHE_HEADERS),
                [_path_param("user_id", "reader id")],
            ),
            "/v1/trending": _get(
                "A brand's trending items (newest epoch)",
                "feeds:read",
                _json(_ref("Trending"), "trending items, best first", _CACHE_HEADERS),
                [_P_BRAND, _P_LIMIT],
            ),
            "/v1/experiments": _get(
                "A/B experiments with counts",
                "admin",
                _json(_ref("Experiments"), "experiment names", _CACHE_HEADERS),
                [],
            ),
            "/v1/experiments/{experiment}": _get(
                "A/B results of one experiment: impressions, clicks, CTR per arm",
                "admin",
                _json(_ref("ExperimentResults"), "results per arm", _CACHE_HEADERS),
                [_path_param("experiment", "experiment name")],
            ),
            "/healthz": _get(
                "Liveness (never touches Redis)",
                None,
                _json(_ref("Health"), "the process answers"),
                [],
                cached=False,
                not_found=False,
            ),
            "/readyz": {
                "get": {
                    "summary": "Readiness: Redis answers, or snapshots can still serve feeds",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Ready"), "ready or degraded"),
                        "503": _json(_ref("Ready"), "Redis down and no snapshot"),
                        **_errors(*_LIMITS),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(*_LIMITS),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object"}, "the OpenAPI document"),
                        **_errors(*_LIMITS),
                    },
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "BearerToken": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"ApiKeyHeader": []}, {"BearerToken": []}],
    }
