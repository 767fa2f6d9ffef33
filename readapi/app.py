"""The read endpoint: JSON over HTTP, reading only Redis (keys from :mod:`feedpipe.redis_keys`).

Routes (all GET, all JSON rendered with orjson; times are ISO-8601 UTC strings, e.g.
``2024-05-01T12:00:00.000Z``; errors are ``{"error": message}``):

``/v1/feeds/{user_id}?limit=20&brand=X&explain=false``
    The user's ranked feed (``keys().feed``), optionally filtered to one brand, hydrated with
    content summaries through one MGET; entries whose content key vanished are skipped.
    ``{"user_id", "source": "personalised", "fallback": false, "brand", "generated_at",
    "ranker", "profile_version", "items": [{"rank", "content_id", "title", "summary", "url",
    "brand", "categories", "published_at"[, "explain": {"score", "affinity", "recency",
    "engagement", "weights", "feed_rank"}]}]}``.
    Without a feed (missing or no entries) or when nothing is left after the brand filter and
    hydration, the brand's trending list is served instead: ``{"user_id", "source": "trending",
    "fallback": true, "reason": "no_feed" | "empty_after_filter", "brand", "epoch",
    "generated_at": null, "ranker": "trending", "items": [...]}`` (items may be ``[]``; still 200).
``/v1/content/{content_id}``
    The stored content JSON with ``published_at``, ``updated_at``, ``enriched_at`` as ISO; 404.
``/v1/profiles/{user_id}``
    Profile summary with top categories/topics (decayed to ``last_seen`` and normalised); 404.
``/v1/trending?brand=X&limit=20``
    ``{"brand", "epoch", "items": [{"rank", "content_id", "score", "title", ...}]}``.
``/healthz``
    ``{"status": "ok", "redis": "ok"}``, or 503 ``{"status": "error", "redis": "error", "reason"}``.

Status codes: 400 for an id failing :func:`feedpipe.redis_keys.safe_id` or a bad query parameter
(``limit`` outside 1..100, ``explain`` not a boolean, ``brand`` not a safe id); 404 for unknown
content/profile/route; 503 when Redis fails during a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from feedpipe.ranking import affinity_at
from feedpipe.redis_keys import keys, safe_id
from feedpipe.settings import settings
from feedpipe.topology import topology

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
TOP_AFFINITIES = 20
"""How many categories/topics the profile view lists."""

POOL_MAX_CONNECTIONS = 64
"""Connections per process; requests wait up to ``POOL_WAIT_S`` for a free one."""
POOL_WAIT_S = 5.0
SOCKET_CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 5.0

SUMMARY_FIELDS = ("content_id", "title", "summary", "url", "brand", "categories", "published_at")
CONTENT_TIME_FIELDS = ("published_at", "updated_at", "enriched_at")
EXPLAIN_FIELDS = ("score", "affinity", "recency", "engagement", "weights")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

Json = dict[str, Any]


class ORJSONResponse(JSONResponse):
    """JSON response rendered with orjson (UTF-8, no whitespace, non-str dict keys allowed)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise ``content``; raises ``orjson.JSONEncodeError`` for unsupported types."""
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class BadRequest(Exception):
    """A request parameter is invalid; answered with 400 ``{"error": message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def iso_ms(ms: object) -> str | None:
    """Epoch milliseconds (UTC) -> ISO-8601 string with millisecond precision and 'Z'.

    ``None``, booleans, non-numbers and out-of-range values give ``None`` (never raises).
    """
    if ms is None or isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    try:
        dt = _EPOCH + timedelta(milliseconds=int(ms))
    except (OverflowError, ValueError):
        return None
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- request parsing ---------------------------------------------------------------------------


def _path_id(request: Request, name: str) -> str:
    try:
        return safe_id(str(request.path_params[name]))
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from exc


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"limit: expected an integer 1..{MAX_LIMIT}, got {raw[:20]!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: expected an integer 1..{MAX_LIMIT}, got {value}")
    return value


def _brand(request: Request) -> str | None:
    raw = request.query_params.get("brand")
    if raw is None or raw == "":
        return None
    try:
        return safe_id(raw)
    except ValueError as exc:
        raise BadRequest(f"brand: {exc}") from exc


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return False
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise BadRequest(f"{name}: expected true or false, got {raw[:20]!r}")


def _redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.app.state.redis
    return client


# -- Redis reads ---------------------------------------------------------------------------------


async def _contents(r: aioredis.Redis, content_ids: Sequence[str]) -> list[Json | None]:
    """Content JSON for each id (``None`` where the key is missing), via one MGET."""
    if not content_ids:
        return []
    raw = await r.mget([keys().content(cid) for cid in content_ids])
    return [orjson.loads(v) if v is not None else None for v in raw]


def _summary(content: Mapping[str, Any], content_id: str) -> Json:
    out: Json = {f: content.get(f) for f in SUMMARY_FIELDS}
    out["content_id"] = content.get("content_id") or content_id
    out["published_at"] = iso_ms(content.get("published_at"))
    return out


async def _trending(r: aioredis.Redis, brand: str, limit: int) -> tuple[int | None, list[Json]]:
    """(epoch, items) of ``brand``'s newest trending zset, best first, vanished content skipped.

    Reads up to ``max(limit, ranking.trending_size)`` members so that skipped entries can be
    replaced. ``epoch`` is ``None`` when the brand has no trending data.
    """
    raw_epoch = await r.get(keys().trending_epoch(brand))
    if raw_epoch is None:
        return None, []
    epoch = int(raw_epoch)
    depth = max(limit, topology().ranking.trending_size)
    raw_pairs = cast(
        "list[tuple[str, float]]",
        await r.zrevrange(keys().trending(brand, epoch), 0, depth - 1, withscores=True),
    )
    pairs = [(str(cid), float(score)) for cid, score in raw_pairs]
    contents = await _contents(r, [cid for cid, _ in pairs])
    items: list[Json] = []
    for (cid, score), content in zip(pairs, contents, strict=True):
        if content is None:
            continue
        items.append({"rank": len(items) + 1, **_summary(content, cid), "score": score})
        if len(items) >= limit:
            break
    return epoch, items


# -- profile presentation ------------------------------------------------------------------------


def _top(shares: Mapping[str, float], label: str, n: int = TOP_AFFINITIES) -> list[Json]:
    positive = [(k, v) for k, v in shares.items() if v > 0]
    ranked = sorted(positive, key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{label: k, "affinity": v} for k, v in ranked]


def present_profile(profile: Mapping[str, Any]) -> Json:
    """The public view of a stored profile (shape in the module docstring of ``/v1/profiles``).

    Keys: user_id, version, impressions, clicks, history_clicks, engagement_rate, first_seen,
    last_seen, affinity_at (ISO strings or null), top_categories ``[{"category", "affinity"}]``
    and top_topics ``[{"topic", "affinity"}]`` (top 20 positive shares from
    :func:`feedpipe.ranking.affinity_at` at ``last_seen`` -- forward decay, Cormode et al.
    ICDE 2009, normalised to sum 1 over all keys -- descending, ties by name),
    recent_reads ``[{"content_id", "at"}]``, pending_count, brands.
    """
    at_ms = profile.get("last_seen") or profile.get("landmark_ms") or 0
    shares = affinity_at(profile, int(at_ms))
    reads = profile.get("recent_reads") or []
    return {
        "user_id": profile.get("user_id"),
        "version": profile.get("version"),
        "impressions": profile.get("impressions", 0),
        "clicks": profile.get("clicks", 0),
        "history_clicks": profile.get("history_clicks", 0),
        "engagement_rate": profile.get("engagement_rate", 0.0),
        "first_seen": iso_ms(profile.get("first_seen")),
        "last_seen": iso_ms(profile.get("last_seen")),
        "affinity_at": iso_ms(at_ms),
        "top_categories": _top(shares["category"], "category"),
        "top_topics": _top(shares["topic"], "topic"),
        "recent_reads": [
            {"content_id": rd.get("content_id"), "at": iso_ms(rd.get("at"))} for rd in reads
        ],
        "pending_count": len(profile.get("pending") or []),
        "brands": profile.get("brands") or {},
    }


# -- endpoints -----------------------------------------------------------------------------------


async def _fallback(
    request: Request, user_id: str, brand: str | None, limit: int, reason: str
) -> Response:
    served = brand or request.app.state.default_brand
    epoch, items = await _trending(_redis(request), served, limit)
    return ORJSONResponse(
        {
            "user_id": user_id,
            "source": "trending",
            "fallback": True,
            "reason": reason,
            "brand": served,
            "epoch": epoch,
            "generated_at": None,
            "ranker": "trending",
            "items": items,
        }
    )


async def get_feed(request: Request) -> Response:
    """GET /v1/feeds/{user_id}: the personalised feed, or the trending fallback."""
    user_id = _path_id(request, "user_id")
    limit = _limit(request)
    brand = _brand(request)
    explain = _flag(request, "explain")
    r = _redis(request)

    raw = await r.get(keys().feed(user_id))
    feed: Json = orjson.loads(raw) if raw is not None else {}
    entries: list[Json] = list(feed.get("items") or [])
    if not entries:
        return await _fallback(request, user_id, brand, limit, "no_feed")
    if brand is not None:
        entries = [e for e in entries if e.get("brand") == brand]
    contents = await _contents(r, [str(e["content_id"]) for e in entries])

    items: list[Json] = []
    for entry, content in zip(entries, contents, strict=True):
        if content is None:
            continue
        item: Json = {"rank": len(items) + 1, **_summary(content, str(entry["content_id"]))}
        if item["brand"] is None:
            item["brand"] = entry.get("brand")
        if explain:
            item["explain"] = {f: entry.get(f) for f in EXPLAIN_FIELDS}
            item["explain"]["feed_rank"] = entry.get("rank")
        items.append(item)
        if len(items) >= limit:
            break
    if not items:
        return await _fallback(request, user_id, brand, limit, "empty_after_filter")
    return ORJSONResponse(
        {
            "user_id": user_id,
            "source": "personalised",
            "fallback": False,
            "brand": brand,
            "generated_at": iso_ms(feed.get("generated_at")),
            "ranker": feed.get("ranker"),
            "profile_version": feed.get("profile_version"),
            "items": items,
        }
    )


async def get_content(request: Request) -> Response:
    """GET /v1/content/{content_id}: the enriched content with ISO times; 404 when missing."""
    content_id = _path_id(request, "content_id")
    raw = await _redis(request).get(keys().content(content_id))
    if raw is None:
        return ORJSONResponse({"error": "not found"}, status_code=404)
    content: Json = orjson.loads(raw)
    for f in CONTENT_TIME_FIELDS:
        if f in content:
            content[f] = iso_ms(content[f])
    return ORJSONResponse(content)


async def get_profile(request: Request) -> Response:
    """GET /v1/profiles/{user_id}: :func:`present_profile` of the stored profile; 404."""
    user_id = _path_id(request, "user_id")
    raw = await _redis(request).get(keys().profile(user_id))
    if raw is None:
        return ORJSONResponse({"error": "not found"}, status_code=404)
    return ORJSONResponse(present_profile(orjson.loads(raw)))


async def get_trending(request: Request) -> Response:
    """GET /v1/trending?brand=X&limit=20: the brand's newest trending epoch, best first."""
    brand = _brand(request) or request.app.state.default_brand
    limit = _limit(request)
    epoch, items = await _trending(_redis(request), brand, limit)
    return ORJSONResponse({"brand": brand, "epoch": epoch, "items": items})


async def healthz(request: Request) -> Response:
    """GET /healthz: 200 when Redis answers PING, else 503 with the reason."""
    try:
        await _redis(request).ping()
    except (RedisError, OSError) as exc:
        return ORJSONResponse(
            {"status": "error", "redis": "error", "reason": f"{type(exc).__name__}: {exc}"},
            status_code=503,
        )
    return ORJSONResponse({"status": "ok", "redis": "ok"})


# -- error handlers ------------------------------------------------------------------------------


async def _bad_request(request: Request, exc: Exception) -> Response:
    message = exc.message if isinstance(exc, BadRequest) else str(exc)
    return ORJSONResponse({"error": message}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = "not found" if exc.status_code == 404 else exc.detail
    return ORJSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)


async def _redis_error(request: Request, exc: Exception) -> Response:
    return ORJSONResponse(
        {"error": "redis unavailable", "reason": f"{type(exc).__name__}: {exc}"},
        status_code=503,
    )


# -- app -----------------------------------------------------------------------------------------


def create_app(redis_url: str | None = None, *, default_brand: str | None = None) -> Starlette:
    """Build the read endpoint.

    Args:
        redis_url: Redis to read; default ``settings().redis_url``. The connection pool is
            created when the app starts (lifespan) and closed when it stops.
        default_brand: brand served by the trending fallback and ``/v1/trending`` when the
            request names none; default ``topology().ranking.default_brand``.

    Returns:
        The Starlette app (no network I/O happens until its lifespan starts).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url or settings().redis_url,
            decode_responses=True,
            max_connections=POOL_MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            socket_connect_timeout=SOCKET_CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
        )
        client = aioredis.Redis(connection_pool=pool)
        app.state.redis = client
        try:
            yield
        finally:
            await client.aclose()
            await pool.aclose()

    app = Starlette(
        routes=[
            Route("/v1/feeds/{user_id}", get_feed, methods=["GET"]),
            Route("/v1/content/{content_id}", get_content, methods=["GET"]),
            Route("/v1/profiles/{user_id}", get_profile, methods=["GET"]),
            Route("/v1/trending", get_trending, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={
            BadRequest: _bad_request,
            HTTPException: _http_error,
            RedisError: _redis_error,
        },
        lifespan=lifespan,
    )
    app.state.default_brand = default_brand or topology().ranking.default_brand
    return app
