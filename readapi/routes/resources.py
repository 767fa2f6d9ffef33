"""Single resources of the read endpoint: ``/v1/content/{content_id}``,
``/v1/profiles/{user_id}`` (scope ``profiles:read``) and ``/v1/trending``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from feedpipe.model.profile import affinity_at
from readapi.caching import PRIVATE, cached_json, json_error
from readapi.fallback import level_page, number_items, redis_unavailable, unavailable_reason
from readapi.params import brand_param, limit_param, path_id
from readapi.routes import store_of
from readapi.store import UNAVAILABLE, Json, Snapshot, iso_ms

CONTENT_TIME_FIELDS = ("published_at", "updated_at", "enriched_at")
TOP_AFFINITIES = 20
"""How many categories/topics the profile view lists."""


async def get_content(request: Request) -> Response:
    """GET /v1/content/{content_id}: the enriched content with ISO times; 404 when missing."""
    content_id = path_id(request, "content_id")
    content = await store_of(request).content(content_id)
    if content is None:
        return json_error(request, 404, "not found")
    for f in CONTENT_TIME_FIELDS:
        if f in content:
            content[f] = iso_ms(content[f])
    return cached_json(request, content, request.app.state.cache.content)


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
    user_id = path_id(request, "user_id")
    profile = await store_of(request).profile(user_id)
    if profile is None:
        return json_error(request, 404, "not found")
    return cached_json(request, present_profile(profile), PRIVATE)


async def get_trending(request: Request) -> Response:
    """GET /v1/trending?brand=X&limit=20: the brand's newest trending epoch, best first (the
    feed's trending level without cursor or explanations); the brand's trending snapshot
    (``stale: true``) while Redis is unavailable."""
    brand = brand_param(request.query_params) or request.app.state.default_brand
    limit = limit_param(request.query_params)
    store = store_of(request)
    snap: Snapshot | None = None
    try:
        epoch, items, _ = await level_page(store, "trending", brand, 0, 0, limit, False)
    except UNAVAILABLE as exc:
        snap = store.snapshots.get(brand)
        if snap is None or snap.source != "trending":
            return redis_unavailable(request, unavailable_reason(exc))
        epoch, items = snap.epoch, number_items(snap.items[:limit], 0, "trending", False)
    body = {
        "brand": brand,
        "epoch": epoch,
        "stale": snap is not None,
        "snapshot_at": snap.taken_at_iso if snap is not None else None,
        "items": items,
    }
    return cached_json(request, body, request.app.state.cache.trending)
