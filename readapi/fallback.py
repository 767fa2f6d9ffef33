"""The degradation ladder of ``GET /v1/feeds/{user_id}``.

Each request takes the highest level that can answer:

1. **personalised**: the user's ranked feed ``fp:feed:{user}`` with the process's cached
   celebrity items merged in (:func:`merge_celebrities`), optionally one brand, hydrated with
   content summaries (:func:`personalised_page`);
2. **trending**: the brand's newest trending epoch;
3. **latest**: the newest items of ``fp:catalogue:{brand}`` (always answers, maybe ``[]``):
   dated items newest first, then undated ones by ingestion time, newest first, never above a
   dated item (:func:`latest_page`; :func:`fallback_feed` for both);
4. while Redis fails or the circuit is open: the brand's last-known snapshot
   (``trending_snapshot`` / ``latest_snapshot``, ``stale: true``; :func:`snapshot_feed`); only
   when no snapshot exists is the answer 503 (:func:`redis_unavailable`).

The reason for leaving the personalised level is one of ``no_feed``, ``empty_after_filter``,
``cursor`` (a later page of a lower level), ``redis_unavailable`` and ``circuit_open``. A cursor
is pinned to the level that served its page. Snapshots are re-read by :func:`refresh_snapshots`
for the default brand, the topology's brands and the brands requested.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from feedpipe.rank.components import contributions
from feedpipe.rank.fanout import CelebrityCache, merge, score_celebrities
from feedpipe.rank.weights import WeightsRegistry
from feedpipe.topology import topology
from readapi.caching import json_error
from readapi.guards import CircuitBreaker, CircuitOpen
from readapi.params import LEVELS, MAX_OFFSET, FeedQuery, encode_cursor
from readapi.store import UNAVAILABLE, Json, Snapshot, Store, iso_ms

SLACK = 8
"""Extra candidates read per page so vanished content can be replaced without a second trip."""
UNDATED_FROM = 50_000
"""Cursor offsets from here on are positions in the latest level's second pass (undated items):
each pass reads at most this many catalogue entries (cursors hold five digits)."""
SEEN_BRANDS_MAX = 256
"""Requested brands remembered for the snapshot refresh."""
ENTRY_NON_EXPLAIN = frozenset({"content_id", "brand", "rank"})
"""Stored feed entry fields that are not part of an item's ``explain``."""

log = logging.getLogger("readapi")


def unavailable_reason(exc: BaseException) -> str:
    """The fallback reason of a Redis failure: ``circuit_open`` or ``redis_unavailable``."""
    return "circuit_open" if isinstance(exc, CircuitOpen) else "redis_unavailable"


def redis_unavailable(request: Request, reason: str | None) -> Response:
    """503 with ``Retry-After`` (seconds until the breaker lets a trial call through), the
    ``reason`` and the breaker's last error."""
    breaker: CircuitBreaker = request.app.state.store.breaker
    return json_error(
        request,
        503,
        "redis unavailable",
        {"Retry-After": str(breaker.retry_after_s())},
        reason=reason or "redis_unavailable",
        detail=breaker.last_error,
    )


def remember_brand(seen: set[str], brand: str) -> None:
    """Add a requested brand to the snapshot brands (at most :data:`SEEN_BRANDS_MAX`)."""
    if brand not in seen and len(seen) < SEEN_BRANDS_MAX:
        seen.add(brand)


# -- personalised ------------------------------------------------------------------------------


async def personalised_page(
    store: Store,
    celebrities: CelebrityCache,
    weights: WeightsRegistry,
    user_id: str,
    feed: Mapping[str, Any],
    version: bytes | None,
    q: FeedQuery,
) -> tuple[list[Json], int | None] | None:
    """The personalised page of ``q`` from the stored ``feed`` (celebrities merged when the
    cache holds any and the feed has a digest, then filtered to ``q.brand``): (items, next
    offset or None at the end); ``None`` when the feed has no entries at all."""
    entries: list[Json] = list(feed.get("items") or [])
    if len(celebrities) and feed.get("digest") is not None:
        entries = await merge_celebrities(
            store, celebrities, weights, user_id, feed, entries, version
        )
    if not entries:
        return None
    if q.brand is not None:
        entries = [e for e in entries if e.get("brand") == q.brand]
    return await _hydrate(store, entries, q.offset, q.served, q.limit, version, q.explain)


async def _hydrate(
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
                contrib = contributions(entry)
                if contrib is not None:
                    ex["contributions"] = contrib
                item["explain"] = ex
            items.append(item)
    return items, (pos if pos < n else None)


async def merge_celebrities(
    store: Store,
    cache: CelebrityCache,
    weights: WeightsRegistry,
    user_id: str,
    feed: Mapping[str, Any],
    entries: list[Json],
    version: bytes | None,
) -> list[Json]:
    """The stored feed ``entries`` with the process's cached celebrity items merged in
    (:mod:`feedpipe.rank.fanout`): each scored for the feed's ``digest`` and the user's stored
    interest vector (:meth:`readapi.store.Store.interest`: cached per profile version, else one
    more read, the profile; none or unreadable: similarity 0) by
    :func:`feedpipe.rank.rankers.rank_users` (the stored feeds' code, current ``weights``),
    merged by score under ``ranking.max_per_category`` (primary categories of stored items
    from the content summaries, cached under ``version``), ``ranking.feed_size`` kept. Merged
    items carry ``source: "celebrity"`` (shown by ``explain``). A malformed digest serves the
    stored entries unmerged (logged)."""
    spec = topology().ranking
    interest = await store.interest(user_id, feed)
    try:
        extra = score_celebrities(
            user_id, feed["digest"], cache, spec, weights.current(), interest
        )
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


# -- trending and latest -----------------------------------------------------------------------


def number_items(items: list[Json], served: int, level: str, explain: bool) -> list[Json]:
    """Ranked items of the trending or latest level (``{**summary, "score"}``): ranks from
    ``served + 1``; ``score`` kept for trending only; ``explain`` gives the level and the
    trending score or publication time."""
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


async def latest_page(
    store: Store, brand: str, offset: int, limit: int
) -> tuple[list[Json], int | None]:
    """(items ``{**summary, "score"}``, next offset) of the latest level from cursor ``offset``.

    The catalogue zset scores an item by its publication time, or by its ingestion time when it
    has none, so undated items would sort among (usually above) dated ones. The level reads the
    zset newest first in two passes: the first serves only dated items (``published_at`` set),
    the second, from offset :data:`UNDATED_FROM`, only undated ones, so every undated item comes
    after every dated one, the undated ordered by ingestion time. Reads go in batches of
    ``limit + SLACK`` until the page is full or a pass ends; the next offset is None after the
    second pass. Raises what the store raises.
    """
    undated = offset >= UNDATED_FROM
    pos = offset - UNDATED_FROM if undated else offset
    version = await store.catalogue_version()
    want = limit + SLACK
    items: list[Json] = []
    while len(items) < limit and pos < UNDATED_FROM:
        asked = min(want, UNDATED_FROM - pos)
        pairs = await store.latest_ids(brand, pos, asked)
        sums = await store.summaries([cid for cid, _ in pairs], version)
        for (_, score), summary in zip(pairs, sums, strict=True):
            if len(items) >= limit:
                break
            pos += 1
            if summary is not None and (summary.get("published_at") is None) == undated:
                items.append({**summary, "score": score})
        if len(items) < limit and len(pairs) < asked:  # this pass reached the catalogue's end
            if undated:
                return items, None
            undated, pos = True, 0
    if pos >= UNDATED_FROM:
        return items, None if undated else UNDATED_FROM
    return items, pos + (UNDATED_FROM if undated else 0)


async def level_page(
    store: Store, level: str, brand: str, offset: int, served: int, limit: int, explain: bool
) -> tuple[int | None, list[Json], int | None]:
    """(epoch, numbered items, next offset) of the trending or latest level."""
    if level == "latest":
        items, nxt = await latest_page(store, brand, offset, limit)
        return None, number_items(items, served, level, explain), nxt
    want = limit + SLACK
    epoch, pairs, version = await store.trending_ids(brand, offset, want)
    items, used = await store.ranked_items(pairs, version, limit)
    more = used < len(pairs) or len(pairs) == want
    nxt = offset + used if more and offset + used <= MAX_OFFSET else None
    return epoch, number_items(items, served, level, explain), nxt


async def fallback_feed(
    store: Store, user_id: str, q: FeedQuery, brand: str, reason: str | None
) -> Json:
    """The feed body from the trending level, else the latest level (which always answers);
    a cursor pinned to one of them reads only that level, from its offset."""
    for lvl in LEVELS[1:]:
        if q.level not in (None, "personalised", lvl):
            continue
        off, srv = (q.offset, q.served) if q.level == lvl else (0, 0)
        epoch, items, nxt = await level_page(store, lvl, brand, off, srv, q.limit, q.explain)
        if items or lvl == "latest" or q.level == lvl:
            cur = encode_cursor(lvl, nxt, srv + len(items)) if nxt is not None else None
            return feed_body(user_id, lvl, reason, brand, items, cur, epoch=epoch)
    raise AssertionError("unreachable: the latest level always answers")


def snapshot_feed(
    snap: Snapshot, user_id: str, q: FeedQuery, brand: str, reason: str | None
) -> Json:
    """The feed body from the brand's last-known snapshot (``stale: true``); a cursor pinned
    to the snapshot's level continues from its offset."""
    start = q.offset if q.level is not None and q.level == snap.source else 0
    srv = q.served if start else 0
    page = snap.items[start : start + q.limit]
    nxt = start + len(page)
    cur = encode_cursor(snap.source, nxt, srv + len(page)) if nxt < len(snap.items) else None
    return feed_body(
        user_id,
        f"{snap.source}_snapshot",
        reason,
        brand,
        number_items(page, srv, snap.source, q.explain),
        cur,
        epoch=snap.epoch,
        snapshot=snap,
    )


def feed_body(
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
    """The JSON document of a feed answer at any level."""
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
        "snapshot_at": snapshot.taken_at_iso if snapshot is not None else None,
        "items": items,
        "next_cursor": next_cursor,
    }


# -- in-memory state ---------------------------------------------------------------------------


async def refresh_snapshots(store: Store, brands: Iterable[str]) -> int:
    """Re-read the snapshot of each brand (``ranking.trending_size`` items); return how many
    were refreshed. A Redis failure stops the pass (counted by the breaker, otherwise
    ignored: the old snapshots stay)."""
    size = topology().ranking.trending_size
    done = 0
    for brand in brands:
        try:
            if await store.refresh_snapshot(brand, size) is not None:
                done += 1
        except UNAVAILABLE:
            break
    return done


def snapshot_brands(default_brand: str, seen: Iterable[str]) -> list[str]:
    """The brands kept as snapshots: the default brand, the topology's brands and those seen."""
    return sorted({default_brand, *topology().brands, *seen})


async def refresh_celebrities(store: Store, cache: CelebrityCache) -> None:
    """Refresh the process's celebrity cache (:meth:`readapi.store.Store.refresh_celebrities`);
    Redis failures are counted by the breaker and otherwise ignored (the cache stays)."""
    with suppress(*UNAVAILABLE):
        await store.refresh_celebrities(cache)
