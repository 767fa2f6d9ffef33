"""``GET /v1/feeds/{user_id}``: the feed through the degradation ladder (:mod:`readapi.fallback`).

Rendered personalised pages are kept in the process's :class:`readapi.store.PageCache`, keyed
by :func:`page_key` and tagged with the stored feed bytes and the catalogue version.
:class:`FeedFastPath` answers page-cache hits before routing; :func:`get_feed` answers the
rest. Both give the same responses.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from readapi.caching import VARY_B, cached_json, etag_of, if_none_match, tagged_response
from readapi.fallback import (
    fallback_feed,
    feed_body,
    personalised_page,
    redis_unavailable,
    remember_brand,
    snapshot_feed,
    unavailable_reason,
)
from readapi.params import BadRequest, FeedQuery, api_id, encode_cursor, feed_params, path_id
from readapi.store import UNAVAILABLE, Json, Store, parse_feed

PageKey = tuple[str, int, str | None, bool, int, int, int]


def page_key(user_id: str, q: FeedQuery, celebrities_gen: int) -> PageKey:
    """Page-cache key of a personalised page: everything in the answer that is not the stored
    feed or the catalogue version (the cache checks those itself)."""
    return (user_id, q.limit, q.brand, q.explain, q.offset, q.served, celebrities_gen)


async def get_feed(request: Request) -> Response:
    """GET /v1/feeds/{user_id}: the degradation ladder (:mod:`readapi.fallback`)."""
    user_id = path_id(request, "user_id")
    q = feed_params(request.query_params)
    st = request.app.state
    store: Store = st.store
    served_brand = q.brand or st.default_brand
    remember_brand(st.brands_seen, served_brand)
    reason: str
    try:
        if q.level in (None, "personalised"):
            # FeedFastPath leaves its MGET result (or its exception) here
            pre = request.scope.get("state", {}).pop("feed_prefetch", None)
            if isinstance(pre, BaseException):
                raise pre
            raw, version = pre if pre is not None else await store.feed_raw(user_id)
            key = page_key(user_id, q, st.celebrities.gen)
            if raw is not None:
                hit = st.page_cache.page(key, raw, version)
                if hit is not None:
                    return _personalised_response(request, *hit)
            feed = parse_feed(raw)
            page = await personalised_page(
                store, st.celebrities, st.weights, user_id, feed, version, q
            )
            reason = "no_feed"
            if page is not None:
                items, nxt = page
                if items or q.level == "personalised":
                    cur = encode_cursor("personalised", nxt, q.served + len(items)) if nxt else None
                    doc = feed_body(user_id, "personalised", None, q.brand, items, cur, feed=feed)
                    rendered = orjson.dumps(doc)
                    etag = etag_of(rendered)
                    if raw is not None:
                        st.page_cache.keep(key, raw, version, rendered, etag)
                    return _personalised_response(request, rendered, etag)
                reason = "empty_after_filter"
        else:
            reason = "cursor"
        body = await fallback_feed(store, user_id, q, served_brand, reason)
        return _feed_response(request, body, reason)
    except UNAVAILABLE as exc:
        reason = unavailable_reason(exc)
    snap = store.snapshots.get(served_brand)
    if snap is None:
        return redis_unavailable(request, reason)
    return _feed_response(request, snapshot_feed(snap, user_id, q, served_brand, reason), reason)


def _log_source(request: Request, source: str, reason: str | None = None) -> None:
    """Record the ladder level (and the reason for leaving the personalised level) for the
    gateway's access log line."""
    state = request.scope.get("state")
    if state is not None:
        state["feed_source"] = source
        if reason is not None:
            state["fallback_reason"] = reason


def _personalised_response(request: Request, body: bytes, etag: str) -> Response:
    _log_source(request, "personalised")
    return tagged_response(
        request,
        body,
        etag,
        request.app.state.cache.personalised,
        {"X-Feed-Source": "personalised"},
    )


def _feed_response(request: Request, body: Json, reason: str) -> Response:
    """A fallback or snapshot answer (:func:`readapi.fallback.feed_body`), counted in
    ``feedpipe_api_feed_fallbacks_total``."""
    st = request.app.state
    source: str = body["source"]
    _log_source(request, source, reason)
    st.count_fallback(source, reason)
    cache_control = st.cache.snapshot if body["stale"] else st.cache.fallback
    headers = {"X-Feed-Source": source, "X-Feed-Fallback-Reason": reason}
    return cached_json(request, body, cache_control, headers)


class FeedFastPath:
    """ASGI layer in front of Starlette that answers ``GET /v1/feeds/{user_id}`` page-cache hits
    without routing, ``Request`` objects or exception middleware: one MGET, a dict lookup, two
    ASGI messages. Anything else -- another route, an invalid parameter, a miss, a Redis
    failure -- goes to Starlette unchanged, with the MGET's result (or its exception) left in
    ``scope["state"]["feed_prefetch"]`` so :func:`get_feed` does not read Redis twice. Same
    responses as :func:`get_feed` (tested).
    """

    PREFIX = "/v1/feeds/"

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state
        self.cache_control = app.state.cache.personalised.encode()

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
            q = feed_params(dict(parse_qsl(query, keep_blank_values=True)) if query else {})
        except (ValueError, BadRequest, UnicodeDecodeError):
            await self.app(scope, receive, send)
            return
        if store is None or q.level not in (None, "personalised"):
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
            st.page_cache.page(page_key(user_id, q, st.celebrities.gen), raw, version)
            if raw is not None
            else None
        )
        if hit is None:
            state["feed_prefetch"] = (raw, version)
            await self.app(scope, receive, send)
            return
        body, etag = hit
        state["feed_source"] = "personalised"
        headers = [
            (b"etag", etag.encode()),
            (b"cache-control", self.cache_control),
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
