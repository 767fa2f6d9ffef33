"""The read endpoint: a versioned JSON API over Redis only, built to sit behind a CDN.

The full contract (every route, parameter, response and schema) is the OpenAPI 3.1 document
served at ``/openapi.json`` (:mod:`readapi.openapi`); docs/api.md explains the behaviour.
Summary (all GET; JSON rendered with orjson; times ISO-8601 UTC; errors
``{"error", "request_id"}``):

``/v1/feeds/{user_id}?limit=20&brand=&explain=false&cursor=``
    The degradation ladder (the seeds' circuit-breaker design): **personalised** (the user's
    ranked feed ``fp:feed:{user}``, optionally one brand, hydrated with content summaries) ->
    **trending** (the brand's newest trending epoch) -> **latest** (newest items of
    ``fp:catalogue:{brand}``). While Redis fails or the circuit is open, the brand's
    last-known **snapshot** (``trending_snapshot`` / ``latest_snapshot``, ``stale: true``) is
    served; only when no snapshot exists is the answer 503. The level is in ``source`` and the
    ``X-Feed-Source`` header, the reason for leaving the personalised level in ``reason`` and
    ``X-Feed-Fallback-Reason`` (``no_feed``, ``empty_after_filter``, ``redis_unavailable``,
    ``circuit_open``). ``next_cursor`` is an opaque cursor pinned to the served level.
``/v1/content/{content_id}``, ``/v1/profiles/{user_id}`` (scope ``profiles:read``),
``/v1/trending?brand=&limit=``, ``/v1/experiments``, ``/v1/experiments/{experiment}``
(CTR per arm, scope ``admin``), ``/healthz`` (liveness), ``/readyz`` (readiness),
``/metrics`` (Prometheus), ``/openapi.json``.

Caching: every 200 carries a strong ``ETag`` (BLAKE2b-96 of the body) and ``Cache-Control``
(feeds ``public, max-age=A, s-maxage=2A, stale-while-revalidate=6A, stale-if-error=300`` with
A = ``settings().api_cache_max_age_s``; fallbacks and snapshots shorter; profiles and A/B
results ``private, no-cache``); ``If-None-Match`` with a matching tag gives 304. ``Vary:
X-API-Key, Authorization`` keeps a CDN from serving one key's answer to another key.

Status codes: 400 for an invalid id, parameter or cursor; 401/403/429 from
:mod:`readapi.gateway`; 404 unknown content/profile/experiment/route; 503 when Redis is needed,
fails, and no ladder level can answer (with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import redis.asyncio as aioredis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from feedpipe.model.profile import affinity_at
from feedpipe.rank.fanout import CelebrityCache, merge, score_celebrities
from feedpipe.rank.weights import WeightsRegistry
from feedpipe.settings import settings
from feedpipe.store.keys import safe_id
from feedpipe.topology import topology
from readapi import ops
from readapi.gateway import Gateway
from readapi.guards import STATE_CODES, CircuitBreaker, CircuitOpen
from readapi.keys import KeyFileError, KeyStore, keys_file
from readapi.openapi import openapi_document
from readapi.store import (
    REDIS_ERRORS,
    UNAVAILABLE,
    Json,
    PageCache,
    Snapshot,
    Store,
    iso_ms,
    parse_feed,
)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 99_999
"""Deepest cursor position (five digits; feeds hold ``ranking.feed_size`` items)."""
SLACK = 8
"""Extra candidates read per page so vanished content can be replaced without a second trip."""
TOP_AFFINITIES = 20
"""How many categories/topics the profile view lists."""
POOL_MAX_CONNECTIONS = 64
SNAPSHOT_INTERVAL_S = 5.0
"""How often the trending snapshots are re-read from Redis, s."""
KEYS_RELOAD_INTERVAL_S = 1.0
"""How often the keys file's mtime is checked, s (a new key works within ~1 s)."""
SEEN_BRANDS_MAX = 256
CONTENT_MAX_AGE_S = 30
TRENDING_MAX_AGE_S = 10
STALE_IF_ERROR_S = 300
Z95 = 1.959963984540054
"""Two-sided 95 % normal quantile for the Wilson interval."""

CONTENT_TIME_FIELDS = ("published_at", "updated_at", "enriched_at")
ENTRY_NON_EXPLAIN = frozenset({"content_id", "brand", "rank"})
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})
VARY = "X-API-Key, Authorization"
VARY_B = VARY.encode()

log = logging.getLogger("readapi")


class BadRequest(Exception):
    """A request parameter is invalid; answered with 400 ``{"error": message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- request parsing ---------------------------------------------------------------------------


def api_id(value: str) -> str:
    """An id from a request (path value or ``brand``): :func:`feedpipe.store.keys.safe_id`
    (1-128 of ``[A-Za-z0-9_.-]``) and no ``..``: a dot-segment, which clients, proxies and CDNs
    may rewrite (RFC 3986, 5.2.4), so the cached URL and the Redis key could name different
    things. Checked before any Redis call.

    Raises:
        ValueError: the value is not such an id.
    """
    safe_id(value)
    if ".." in value:
        raise ValueError(f"invalid id {value[:40]!r}: '..' is not allowed")
    return value


def _path_id(request: Request, name: str) -> str:
    try:
        return api_id(str(request.path_params[name]))
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from exc


def _limit(qp: Mapping[str, str]) -> int:
    raw = qp.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"limit: expected an integer 1..{MAX_LIMIT}, got {raw[:20]!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: expected an integer 1..{MAX_LIMIT}, got {value}")
    return value


def _brand(qp: Mapping[str, str]) -> str | None:
    raw = qp.get("brand")
    if raw is None or raw == "":
        return None
    try:
        return api_id(raw)
    except ValueError as exc:
        raise BadRequest(f"brand: {exc}") from exc


def _flag(qp: Mapping[str, str], name: str) -> bool:
    raw = qp.get(name)
    if raw is None or raw == "":
        return False
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise BadRequest(f"{name}: expected true, false, 1 or 0, got {raw[:20]!r}")


LEVELS = ("personalised", "trending", "latest")


CURSOR_PATTERN = r"^(personalised|trending|latest)\.[0-9]{1,5}\.[0-9]{1,5}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(level: str, offset: int, rank: int) -> str:
    """Cursor ``"{level}.{offset}.{rank}"`` (clients treat it as opaque).

    ``offset`` is the position in the level's candidate list where the next page starts,
    ``rank`` the number of items already served (so ranks continue across pages). Readable
    rather than encoded on purpose: any string matching :data:`CURSOR_PATTERN` is a valid
    request (a crafted offset past the end gives an empty page), so the OpenAPI document can
    state the exact format.
    """
    return f"{level}.{offset}.{rank}"


def decode_cursor(raw: str) -> tuple[str, int, int]:
    """Inverse of :func:`encode_cursor`; raises :class:`BadRequest` for anything else."""
    if not _CURSOR.fullmatch(raw):  # fullmatch: '$' would let a trailing newline through
        raise BadRequest("cursor: not a cursor returned by this API")
    level, off, rank = raw.split(".")
    return level, int(off), int(rank)


def feed_params(
    qp: Mapping[str, str],
) -> tuple[int, str | None, bool, str | None, int, int]:
    """(limit, brand, explain, cursor level, offset, rank) of a feed request's query;
    raises :class:`BadRequest`."""
    return (_limit(qp), _brand(qp), _flag(qp, "explain"), *_cursor(qp))


def _cursor(qp: Mapping[str, str]) -> tuple[str | None, int, int]:
    raw = qp.get("cursor")
    if raw is None or raw == "":
        return None, 0, 0
    return decode_cursor(raw)


# -- responses ---------------------------------------------------------------------------------


def etag_of(body: bytes) -> str:
    """Strong entity tag: quoted hex BLAKE2b-96 of the body bytes."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def if_none_match(header: str | None, etag: str) -> bool:
    """True when an ``If-None-Match`` value matches ``etag`` (weak comparison, RFC 9110
    13.1.2: ``W/`` prefixes ignored, ``*`` matches)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    for tag in header.split(","):
        t = tag.strip()
        if t.startswith("W/"):
            t = t[2:]
        if t == etag:
            return True
    return False


def cached_json(
    request: Request,
    doc: Any,
    cache_control: str,
    extra: Mapping[str, str] | None = None,
) -> Response:
    """200 with ``doc`` as JSON, ETag, Cache-Control and Vary; 304 (no body) when the request's
    ``If-None-Match`` matches."""
    body = orjson.dumps(doc)
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": VARY}
    if extra:
        headers.update(extra)
    if if_none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def json_error(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None,
    **fields: Any,
) -> Response:
    """``{"error": message, "request_id", **fields}`` with ``Cache-Control: no-store``."""
    rid = request.scope.get("state", {}).get("request_id")
    body = orjson.dumps({"error": message, "request_id": rid, **fields})
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


# -- feeds -------------------------------------------------------------------------------------


async def _personalised_page(
    store: Store,
    entries: Sequence[Json],
    offset: int,
    served: int,
    limit: int,
    version: bytes | None,
    explain: bool,
) -> tuple[list[Json], int | None]:
    """Items ``rank served+1...`` from ``entries[offset:]``, vanished content skipped; return
    (items, next offset or None at the end)."""
    items: list[Json] = []
    pos = offset
    n = len(entries)
    while pos < n and len(items) < limit:
        window = entries[pos : pos + (limit - len(items)) + SLACK]
        sums = await store.summaries([str(e.get("content_id")) for e in window], version)
        for entry, summary in zip(window, sums, strict=True):
            if len(items) >= limit:
                break
            pos += 1
            if summary is None:
                continue
            item: Json = {"rank": served + len(items) + 1, **summary}
            if item["brand"] is None:
                item["brand"] = entry.get("brand")
            if explain:
                ex = {k: v for k, v in entry.items() if k not in ENTRY_NON_EXPLAIN}
                ex["feed_rank"] = entry.get("rank")
                item["explain"] = ex
            items.append(item)
    return items, (pos if pos < n else None)


async def merge_celebrities(
    st: Any, store: Store, user_id: str, feed: Mapping[str, Any], entries: list[Json],
    version: bytes | None,
) -> list[Json]:
    """The stored feed ``entries`` with the process's cached celebrity items merged in
    (feedpipe/rank/fanout.py): each scored for the feed's ``digest`` by
    :func:`feedpipe.rank.rankers.rank_users` (the stored feeds' code, weights of
    ``st.weights``), merged by score under ``ranking.max_per_category`` (primary categories of
    stored items from the content summaries, cached under ``version``), ``ranking.feed_size``
    kept. Merged items carry ``source: "celebrity"`` (shown by ``explain``). A malformed
    digest serves the stored entries unmerged (logged)."""
    cache: CelebrityCache = st.celebrities
    spec = topology().ranking
    try:
        extra = score_celebrities(user_id, feed["digest"], cache, spec, st.weights.current())
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("feed of %s: celebrity merge skipped: %s", user_id, exc)
        return entries
    if not extra:
        return entries
    sums = await store.summaries([str(e.get("content_id")) for e in entries], version)
    stored_primary = [
        (s.get("categories") or [None])[0] if s is not None else None for s in sums
    ]
    metas = cache.matrix.metas
    index = cache.matrix.index
    extra_primary = [
        (metas[index[it["content_id"]]].categories or (None,))[0] for it in extra
    ]
    return merge(
        entries, stored_primary, extra, extra_primary, spec.feed_size, spec.max_per_category
    )


def _number(items: list[Json], served: int, level: str, explain: bool) -> list[Json]:
    out = []
    for i, it in enumerate(items):
        item = {"rank": served + i + 1, **it}
        score = item.pop("score", None)
        if level == "trending":
            item["score"] = score
        if explain:
            item["explain"] = (
                {"level": level, "trending_score": score}
                if level == "trending"
                else {"level": level, "published_at": item.get("published_at")}
            )
        out.append(item)
    return out


async def _level_page(
    store: Store, level: str, brand: str, offset: int, served: int, limit: int, explain: bool
) -> tuple[int | None, list[Json], int | None]:
    """(epoch, items, next offset) of the trending or latest level."""
    want = limit + SLACK
    if level == "trending":
        epoch, pairs, version = await store.trending_ids(brand, offset, want)
    else:
        epoch = None
        version = await store.catalogue_version()
        pairs = await store.latest_ids(brand, offset, want)
    items, used = await store.ranked_items(pairs, version, limit)
    more = used < len(pairs) or len(pairs) == want
    nxt = offset + used if more and offset + used <= MAX_OFFSET else None
    return epoch, _number(items, served, level, explain), nxt


def _feed_body(
    user_id: str,
    source: str,
    reason: str | None,
    brand: str | None,
    items: list[Json],
    next_cursor: str | None,
    *,
    epoch: int | None = None,
    feed: Mapping[str, Any] | None = None,
    snapshot: Snapshot | None = None,
) -> Json:
    return {
        "user_id": user_id,
        "source": source,
        "fallback": source != "personalised",
        "reason": reason,
        "brand": brand,
        "epoch": epoch,
        "generated_at": iso_ms(feed.get("generated_at")) if feed else None,
        "ranker": feed.get("ranker") if feed is not None else source,
        "profile_version": feed.get("profile_version") if feed else None,
        "stale": snapshot is not None,
        "snapshot_at": (
            iso_ms(int(snapshot.taken_at * 1000)) if snapshot is not None else None
        ),
        "items": items,
        "next_cursor": next_cursor,
    }


async def get_feed(request: Request) -> Response:
    """GET /v1/feeds/{user_id}: the degradation ladder (module docstring)."""
    user_id = _path_id(request, "user_id")
    limit, brand, explain, level, offset, served = feed_params(request.query_params)
    st = request.app.state
    store: Store = st.store
    served_brand = brand or st.default_brand
    seen: set[str] = st.brands_seen
    if served_brand not in seen and len(seen) < SEEN_BRANDS_MAX:
        seen.add(served_brand)
    reason: str | None = None
    try:
        if level in (None, "personalised"):
            pre = request.scope.get("state", {}).pop("feed_prefetch", None)
            if isinstance(pre, BaseException):
                raise pre
            raw, version = pre if pre is not None else await store.feed_raw(user_id)
            page_key = (user_id, limit, brand, explain, offset, served, st.celebrities.gen)
            if raw is not None:
                hit = st.page_cache.get(page_key, raw, version)
                if hit is not None:
                    return _personalised_response(request, *hit)
            feed = parse_feed(raw)
            entries: list[Json] = list(feed.get("items") or [])
            if len(st.celebrities) and feed.get("digest") is not None:
                entries = await merge_celebrities(st, store, user_id, feed, entries, version)
            reason = "no_feed"
            if entries:
                if brand is not None:
                    entries = [e for e in entries if e.get("brand") == brand]
                items, nxt = await _personalised_page(
                    store, entries, offset, served, limit, version, explain
                )
                if items or level == "personalised":
                    cur = encode_cursor("personalised", nxt, served + len(items)) if nxt else None
                    doc = _feed_body(user_id, "personalised", None, brand, items, cur, feed=feed)
                    rendered = orjson.dumps(doc)
                    etag = etag_of(rendered)
                    if raw is not None:
                        st.page_cache.put(page_key, raw, version, rendered, etag)
                    return _personalised_response(request, rendered, etag)
                reason = "empty_after_filter"
        else:
            reason = "cursor"
        for lvl in ("trending", "latest"):
            if level not in (None, "personalised", lvl):
                continue
            off, srv = (offset, served) if level == lvl else (0, 0)
            epoch, items, nxt = await _level_page(
                store, lvl, served_brand, off, srv, limit, explain
            )
            if items or lvl == "latest" or level == lvl:
                cur = encode_cursor(lvl, nxt, srv + len(items)) if nxt is not None else None
                body = _feed_body(
                    user_id, lvl, reason, served_brand, items, cur, epoch=epoch
                )
                return _feed_response(request, body, reason)
        raise AssertionError("unreachable: the latest level always answers")
    except CircuitOpen:
        reason = "circuit_open"
    except REDIS_ERRORS:
        reason = "redis_unavailable"
    snap = store.snapshots.get(served_brand)
    if snap is None:
        return _redis_unavailable(request, reason)
    start = offset if level is not None and level == snap.source else 0
    srv = served if start else 0
    page = snap.items[start : start + limit]
    nxt = start + len(page)
    cur = encode_cursor(snap.source, nxt, srv + len(page)) if nxt < len(snap.items) else None
    body = _feed_body(
        user_id,
        f"{snap.source}_snapshot",
        reason,
        served_brand,
        _number(page, srv, snap.source, explain),
        cur,
        epoch=snap.epoch,
        snapshot=snap,
    )
    return _feed_response(request, body, reason)


def _personalised_response(request: Request, body: bytes, etag: str) -> Response:
    state = request.scope.get("state")
    if state is not None:
        state["feed_source"] = "personalised"
    headers = {
        "ETag": etag,
        "Cache-Control": request.app.state.cc_personalised,
        "Vary": VARY,
        "X-Feed-Source": "personalised",
    }
    if if_none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _feed_response(request: Request, body: Json, reason: str | None) -> Response:
    st = request.app.state
    source: str = body["source"]
    state = request.scope.get("state")
    if state is not None:
        state["feed_source"] = source
        state["fallback_reason"] = reason
    if source == "personalised":
        cache_control = st.cc_personalised
    else:
        st.count_fallback(source, reason or "none")
        cache_control = st.cc_snapshot if body["stale"] else st.cc_fallback
    headers = {"X-Feed-Source": source}
    if reason is not None:
        headers["X-Feed-Fallback-Reason"] = reason
    return cached_json(request, body, cache_control, headers)


def _redis_unavailable(request: Request, reason: str | None) -> Response:
    breaker: CircuitBreaker = request.app.state.store.breaker
    return json_error(
        request,
        503,
        "redis unavailable",
        {"Retry-After": str(breaker.retry_after_s())},
        reason=reason or "redis_unavailable",
        detail=breaker.last_error,
    )


# -- other resources ---------------------------------------------------------------------------


async def get_content(request: Request) -> Response:
    """GET /v1/content/{content_id}: the enriched content with ISO times; 404 when missing."""
    content_id = _path_id(request, "content_id")
    content = await _store(request).content(content_id)
    if content is None:
        return json_error(request, 404, "not found")
    for f in CONTENT_TIME_FIELDS:
        if f in content:
            content[f] = iso_ms(content[f])
    return cached_json(request, content, request.app.state.cc_content)


def _top(shares: Mapping[str, float], label: str, n: int = TOP_AFFINITIES) -> list[Json]:
    positive = [(k, v) for k, v in shares.items() if v > 0]
    ranked = sorted(positive, key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{label: k, "affinity": v} for k, v in ranked]


def present_profile(profile: Mapping[str, Any]) -> Json:
    """The public view of a stored profile.

    Keys: user_id, version, impressions, clicks, history_clicks, engagement_rate, first_seen,
    last_seen, affinity_at (ISO strings or null), top_categories ``[{"category", "affinity"}]``
    and top_topics ``[{"topic", "affinity"}]`` (top 20 positive shares from
    :func:`feedpipe.model.profile.affinity_at` at ``last_seen`` -- forward decay, Cormode et al.
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


async def get_profile(request: Request) -> Response:
    """GET /v1/profiles/{user_id}: :func:`present_profile` of the stored profile; 404."""
    user_id = _path_id(request, "user_id")
    profile = await _store(request).profile(user_id)
    if profile is None:
        return json_error(request, 404, "not found")
    return cached_json(request, present_profile(profile), "private, no-cache")


async def get_trending(request: Request) -> Response:
    """GET /v1/trending?brand=X&limit=20: the brand's newest trending epoch, best first; the
    brand's snapshot (``stale: true``) while Redis is unavailable."""
    brand = _brand(request.query_params) or request.app.state.default_brand
    limit = _limit(request.query_params)
    store = _store(request)
    try:
        epoch, pairs, version = await store.trending_ids(brand, 0, limit + SLACK)
        items, _ = await store.ranked_items(pairs, version, limit)
        stale, at = False, None
    except UNAVAILABLE as exc:
        snap = store.snapshots.get(brand)
        if snap is None or snap.source != "trending":
            return _redis_unavailable(
                request, "circuit_open" if isinstance(exc, CircuitOpen) else "redis_unavailable"
            )
        epoch, items, stale, at = snap.epoch, snap.items[:limit], True, snap.taken_at
    body = {
        "brand": brand,
        "epoch": epoch,
        "stale": stale,
        "snapshot_at": iso_ms(int(at * 1000)) if at is not None else None,
        "items": [{"rank": i + 1, **it} for i, it in enumerate(items)],
    }
    return cached_json(request, body, request.app.state.cc_trending)


def wilson_interval(clicks: int, impressions: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion (Wilson, JASA 22:209, 1927); ``None``
    without impressions. Returns (low, high) within [0, 1]."""
    if impressions <= 0:
        return None
    n = float(impressions)
    p = min(1.0, clicks / n)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def ab_results(experiment: str, fields: Mapping[str, str]) -> Json:
    """CTR per arm from an ``fp:ab:{experiment}`` hash.

    Fields ``{arm}:impressions`` and ``{arm}:clicks`` (non-negative integers) are read; any
    other field or a non-integer value is listed in ``ignored_fields`` instead of failing.
    Returns ``{"experiment", "arms": [{"arm", "impressions", "clicks", "ctr", "ctr_ci95"}],
    "ignored_fields"}``, arms sorted by name; ``ctr`` = clicks / impressions (``null`` without
    impressions), ``ctr_ci95`` the Wilson 95 % interval.
    """
    arms: dict[str, dict[str, int]] = {}
    ignored: list[str] = []
    for field, value in sorted(fields.items()):
        arm, _, metric = field.rpartition(":")
        try:
            count = int(value)
        except ValueError:
            count = -1
        if not arm or metric not in ("impressions", "clicks") or count < 0:
            ignored.append(field)
            continue
        arms.setdefault(arm, {"impressions": 0, "clicks": 0})[metric] = count
    out = []
    for arm, c in sorted(arms.items()):
        imps, clicks = c["impressions"], c["clicks"]
        ci = wilson_interval(clicks, imps)
        out.append(
            {
                "arm": arm,
                "impressions": imps,
                "clicks": clicks,
                "ctr": clicks / imps if imps else None,
                "ctr_ci95": list(ci) if ci else None,
            }
        )
    return {"experiment": experiment, "arms": out, "ignored_fields": ignored}


async def list_experiments(request: Request) -> Response:
    """GET /v1/experiments: ``{"experiments": [name, ...]}`` from ``fp:ab:experiments``."""
    names = await _store(request).experiments()
    return cached_json(request, {"experiments": names}, "private, no-cache")


async def get_experiment(request: Request) -> Response:
    """GET /v1/experiments/{experiment}: :func:`ab_results`; 404 for an unknown experiment."""
    name = _path_id(request, "experiment")
    fields = await _store(request).ab_counts(name)
    if fields is None:
        return json_error(request, 404, "not found")
    return cached_json(request, ab_results(name, fields), "private, no-cache")


async def healthz(request: Request) -> Response:
    """GET /healthz: liveness (the process answers); never touches Redis."""
    breaker = _store(request).breaker
    return Response(
        orjson.dumps({"status": "ok", "circuit": breaker.state}),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def readyz(request: Request) -> Response:
    """GET /readyz: 200 ``ready`` when Redis answers PING, 200 ``degraded`` when it does not but
    trending snapshots can still answer feeds, else 503 ``unavailable``."""
    store = _store(request)
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
    doc["circuit"] = store.breaker.state
    return Response(
        orjson.dumps(doc),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text exposition of this app's registry."""
    return Response(
        generate_latest(request.app.state.registry),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the OpenAPI 3.1 document (pre-serialised)."""
    body: bytes = request.app.state.openapi
    return Response(
        body, media_type="application/json", headers={"Cache-Control": "public, max-age=300"}
    )


# -- error handlers ----------------------------------------------------------------------------


async def _bad_request(request: Request, exc: Exception) -> Response:
    message = exc.message if isinstance(exc, BadRequest) else str(exc)
    return json_error(request, 400, message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = "not found" if exc.status_code == 404 else str(exc.detail)
    return json_error(request, exc.status_code, detail, exc.headers)


async def _redis_error(request: Request, exc: Exception) -> Response:
    reason = "circuit_open" if isinstance(exc, CircuitOpen) else "redis_unavailable"
    return _redis_unavailable(request, reason)


# -- fast path ---------------------------------------------------------------------------------


class FeedFastPath:
    """ASGI layer in front of Starlette that answers ``GET /v1/feeds/{user_id}`` page-cache hits
    (:class:`readapi.store.PageCache`) without routing, ``Request`` objects or exception
    middleware: one MGET, a dict lookup, two ASGI messages. Anything else -- another route, an
    invalid parameter, a miss, a Redis failure -- goes to Starlette unchanged, with the MGET's
    result (or its exception) left in ``scope["state"]["feed_prefetch"]`` so :func:`get_feed`
    does not read Redis twice. Same responses as :func:`get_feed` (tested).
    """

    PREFIX = "/v1/feeds/"

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "GET" or not path.startswith(self.PREFIX):
            await self.app(scope, receive, send)
            return
        st = self.state
        store: Store | None = getattr(st, "store", None)
        user_id = path[len(self.PREFIX) :]
        try:
            api_id(user_id)
            query = scope["query_string"].decode("latin-1")
            qp = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
            limit, brand, explain, level, offset, served = feed_params(qp)
        except (ValueError, BadRequest, UnicodeDecodeError):
            await self.app(scope, receive, send)
            return
        if store is None or level not in (None, "personalised"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            raw, version = await store.feed_raw(user_id)
        except UNAVAILABLE as exc:
            state["feed_prefetch"] = exc
            await self.app(scope, receive, send)
            return
        hit = (
            st.page_cache.get(
                (user_id, limit, brand, explain, offset, served, st.celebrities.gen), raw, version
            )
            if raw is not None
            else None
        )
        if hit is None:
            state["feed_prefetch"] = (raw, version)
            await self.app(scope, receive, send)
            return
        body, etag = hit
        state["feed_source"] = "personalised"
        etag_b = etag.encode()
        headers = [
            (b"etag", etag_b),
            (b"cache-control", st.cc_personalised_b),
            (b"vary", VARY_B),
            (b"x-feed-source", b"personalised"),
        ]
        inm = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                inm = value.decode("latin-1")
        if if_none_match(inm, etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# -- app ---------------------------------------------------------------------------------------


def _brands_to_snapshot(default_brand: str, seen: set[str]) -> list[str]:
    return sorted({default_brand, *topology().brands, *seen})


async def _maintain(app: Starlette) -> None:
    """Background loop: reload the keys file when it changes; refresh trending snapshots."""
    st = app.state
    store: Store = st.store
    last_snapshot = time.monotonic()
    while True:
        await asyncio.sleep(KEYS_RELOAD_INTERVAL_S)
        if st.keystore is not None:
            try:
                if st.keystore.reload_if_changed():
                    log.info("api keys reloaded: %d keys", len(st.keystore))
            except KeyFileError as exc:
                log.error("api keys not reloaded (previous keys stay): %s", exc)
        if time.monotonic() - last_snapshot >= SNAPSHOT_INTERVAL_S:
            last_snapshot = time.monotonic()
            await refresh_snapshots(app)
            st.snapshot_brands.set(len(store.snapshots))
        await refresh_celebrities(app)


async def refresh_celebrities(app: Starlette) -> None:
    """Refresh the process's celebrity cache (:meth:`readapi.store.Store.refresh_celebrities`);
    Redis failures are counted by the breaker and otherwise ignored (the cache stays)."""
    with suppress(*UNAVAILABLE):
        await app.state.store.refresh_celebrities(app.state.celebrities)


async def refresh_snapshots(app: Starlette) -> int:
    """Re-read every snapshot brand (default, topology brands, brands requested); return how
    many were refreshed. Redis failures are counted by the breaker and otherwise ignored."""
    st = app.state
    store: Store = st.store
    size = topology().ranking.trending_size
    done = 0
    for brand in _brands_to_snapshot(st.default_brand, st.brands_seen):
        try:
            if await store.refresh_snapshot(brand, size) is not None:
                done += 1
        except UNAVAILABLE:
            break
    return done


def create_app(
    redis_url: str | None = None,
    *,
    default_brand: str | None = None,
    keys_path: Path | None = None,
    require_keys: bool = True,
    cors_origins: Sequence[str] | None = None,
    redis_timeout_ms: int | None = None,
    breaker_failures: int | None = None,
    breaker_reset_s: float | None = None,
) -> ASGIApp:
    """Build the read endpoint (every argument defaults to its ``settings()`` value).

    Args:
        redis_url: Redis to read; the connection pool is created when the app starts
            (lifespan) and closed when it stops.
        default_brand: brand of the fallback levels and ``/v1/trending`` when a request names
            none; default ``topology().ranking.default_brand``.
        keys_path: API keys file (:mod:`readapi.keys`); default ``settings().api_keys_file`` or
            ``<state_dir>/api-keys.json``. Re-read within ~1 s when it changes.
        require_keys: False turns access control off (benchmarks of the bare path only).
        cors_origins: browser origins allowed (``["*"]`` for any); empty: no CORS headers.
        redis_timeout_ms: Redis socket and connect timeout, ms (a timeout is a breaker failure).
        breaker_failures, breaker_reset_s: circuit breaker thresholds (:mod:`readapi.guards`).

    Returns:
        The ASGI app: CORS (when configured) -> :class:`readapi.gateway.Gateway` -> Starlette.
        The Starlette app is reachable as ``.state``-carrying ``app.starlette``.
    """
    s = settings()
    timeout_s = (redis_timeout_ms or s.api_redis_timeout_ms) / 1000.0
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    fallbacks = Counter(
        "feedpipe_api_feed_fallbacks_total",
        "Feeds served below the personalised level, by level served and reason",
        ["source", "reason"],
        registry=registry,
    )
    redis_errors = Counter(
        "feedpipe_api_redis_errors_total",
        "Failed Redis calls of the read endpoint, by kind (timeout, connection, other)",
        ["kind"],
        registry=registry,
    )
    circuit_state = Gauge(
        "feedpipe_api_redis_circuit_state",
        "Redis circuit breaker state: 0 closed, 1 open, 2 half-open",
        registry=registry,
    )
    snapshot_brands = Gauge(
        "feedpipe_api_snapshot_brands",
        "Brands with a last-known trending/latest snapshot held in memory",
        registry=registry,
    )
    circuit_open_total = Counter(
        "feedpipe_api_redis_circuit_opened_total",
        "Times the Redis circuit breaker opened",
        registry=registry,
    )

    def on_change(state: str) -> None:
        circuit_state.set(STATE_CODES[state])
        if state == "open":
            circuit_open_total.inc()
            log.warning("redis circuit open: %s", breaker.last_error)
        else:
            log.warning("redis circuit %s", state)

    breaker = CircuitBreaker(
        breaker_failures or s.api_breaker_failures,
        breaker_reset_s or s.api_breaker_reset_s,
        on_change=on_change,
    )
    keystore: KeyStore | None = None
    if require_keys:
        keystore = KeyStore(keys_path or keys_file(s.state_dir, s.api_keys_file))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url or settings().redis_url,
            max_connections=POOL_MAX_CONNECTIONS,
            timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            **s.redis_kwargs(),  # AUTH and TLS (rediss://) of the settings
        )
        client = aioredis.Redis(connection_pool=pool)
        app.state.store = Store(client, breaker, lambda kind: redis_errors.labels(kind).inc())
        await refresh_snapshots(app)
        await refresh_celebrities(app)
        # Startup objects (modules, topology, app) move to the permanent generation, so the
        # collector's full passes do not walk them while requests wait (CPython gc.freeze; the
        # pattern Instagram described in "Dismissing Python Garbage Collection", 2017).
        gc.collect()
        gc.freeze()
        task = asyncio.create_task(_maintain(app))
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await client.aclose()
            await pool.aclose()

    routes: list[BaseRoute] = [
        Route("/v1/feeds/{user_id}", get_feed, methods=["GET"]),
        Route("/v1/content/{content_id}", get_content, methods=["GET"]),
        Route("/v1/profiles/{user_id}", get_profile, methods=["GET"]),
        Route("/v1/trending", get_trending, methods=["GET"]),
        Route("/v1/experiments", list_experiments, methods=["GET"]),
        Route("/v1/experiments/{experiment}", get_experiment, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *ops.routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            BadRequest: _bad_request,
            HTTPException: _http_error,
            CircuitOpen: _redis_error,
            **dict.fromkeys(REDIS_ERRORS, _redis_error),
        },
        lifespan=lifespan,
    )
    ma = max(0, s.api_cache_max_age_s)
    st = app.state
    st.default_brand = default_brand or topology().ranking.default_brand
    st.registry = registry
    st.keystore = keystore
    st.brands_seen = set()
    st.page_cache = PageCache()
    st.celebrities = CelebrityCache()
    st.weights = WeightsRegistry()
    st.snapshot_brands = snapshot_brands
    st.openapi = orjson.dumps(openapi_document())
    st.cc_personalised = (
        f"public, max-age={ma}, s-maxage={2 * ma}, stale-while-revalidate={6 * ma}, "
        f"stale-if-error={STALE_IF_ERROR_S}"
    )
    st.cc_personalised_b = st.cc_personalised.encode()
    short = min(ma, 2)
    st.cc_fallback = (
        f"public, max-age={short}, s-maxage={short}, stale-if-error={STALE_IF_ERROR_S}"
    )
    st.cc_snapshot = "public, max-age=1, s-maxage=1"
    st.cc_content = (
        f"public, max-age={CONTENT_MAX_AGE_S}, s-maxage={CONTENT_MAX_AGE_S}, "
        f"stale-if-error={STALE_IF_ERROR_S}"
    )
    st.cc_trending = f"public, max-age={TRENDING_MAX_AGE_S}, stale-if-error={STALE_IF_ERROR_S}"
    st.count_fallback = lambda source, reason: fallbacks.labels(source, reason).inc()

    open_paths = tuple(getattr(ops, "OPEN_PATHS", ()))
    outer: ASGIApp = Gateway(
        FeedFastPath(app), keystore, registry, open_paths, workers=s.api_workers
    )
    origins = list(
        cors_origins
        if cors_origins is not None
        else [o.strip() for o in s.api_cors_origins.split(",") if o.strip()]
    )
    if origins:
        outer = CORSMiddleware(
            outer,
            allow_origins=origins,
            allow_methods=["GET"],
            allow_headers=["X-API-Key", "Authorization", "If-None-Match", "X-Request-ID"],
            expose_headers=[
                "ETag",
                "Retry-After",
                "X-Request-ID",
                "X-Feed-Source",
                "X-Feed-Fallback-Reason",
            ],
            max_age=600,
        )
    outer.starlette = app  # type: ignore[attr-defined]
    outer.state = app.state  # type: ignore[attr-defined]
    return outer
