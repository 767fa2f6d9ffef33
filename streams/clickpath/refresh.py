"""The click path's idle refresher: re-ranks stored feeds after item stats moved or items were
removed, so feeds converge to the final state (docs/ranking.md, "Fan-out on write").

Input:  the consumer's assigned reader.events partitions, run while no records arrive.
Keys:   reads catalogue/stats versions, ``fp:active:{partition}``, profiles and feeds; writes
        ``fp:feed:{user}`` (TTL kept), ``fp:active:{partition}`` (expired users dropped),
        ``fp:feeds:refreshed:{partition}`` and trims ``fp:audience:*``.
Output: nothing on Kafka: a refreshed feed only reflects newer item stats; feeds.updated keeps
        the last feed each profile change produced.
State:  the last audience trim time (:class:`Refresher`).
Guarantees: a feed is written only when its profile version is not older than the stored
        feed's, so a refresh never moves a feed backwards; a partition is marked
        ``"catalogue_version:stats_version"`` once all its users are done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from feedpipe.model.signals import COREAD_WINDOW, trend_epoch
from feedpipe.rank.rankers import rank_feeds
from feedpipe.store import audience as audience_store
from feedpipe.store import coreads as coreads_store
from feedpipe.store import feeds as feed_store
from feedpipe.store import partitions as partition_store
from feedpipe.store import profiles as profile_store
from feedpipe.store.feeds import FeedFormatError, decode_feed, encode_feed
from feedpipe.store.interning import ITEMS, intern
from feedpipe.store.profiles import ProfileFormatError, decode_profile
from feedpipe.topology import topology
from feedpipe.wire.ranked import feed_ids
from streams.clickpath.catalogue import CATALOGUE, REGISTRY, feed_json
from streams.clickpath.fold import coread_maps
from streams.runtime import in_thread, log, redis_client

DAY_MS = 86_400_000
REFRESH_CHUNK = 500
"""Users re-ranked per step (a new batch waits at most one step)."""
AUDIENCE_TRIM_S = 60.0
"""Seconds between two trims of the audience sets."""


async def rank_and_store(user_ids: Sequence[str], partition: int) -> int:
    """Rank ``user_ids`` with the current catalogue and store their feeds (TTL kept); return
    the feeds written. Users without a profile, with an unreadable one, or whose stored feed
    is newer or already reflects the current versions are left alone."""
    if not user_ids:
        return 0
    r = redis_client()
    await CATALOGUE.refresh()
    stats_version = CATALOGUE.stats_version or 0
    raws = await profile_store.read_raw(r, user_ids, feeds=True)
    n = len(user_ids)
    todo: list[tuple[str, dict[str, Any]]] = []
    for u, rp, rf in zip(user_ids, raws[:n], raws[n:], strict=True):
        if not rp:
            continue
        try:
            p = decode_profile(rp)
        except ProfileFormatError as exc:  # not rankable; the next profile write replaces it
            log.error("feeds: stored profile of %s is unreadable (%s); not ranked", u, exc)
            continue
        old: dict[str, Any] | None = None
        if rf:
            try:
                old = decode_feed(rf)
            except FeedFormatError as exc:  # unreadable: ranked anew and overwritten
                log.warning("feeds: stored feed of %s is unreadable (%s); re-ranking", u, exc)
        if old is not None:
            if old.get("profile_version", -1) > p["version"]:
                continue  # a replayed, older profile never overwrites a newer feed
            fields = ("profile_version", "catalogue_version", "stats_version")
            seen = tuple(old.get(f) for f in fields)
            if seen == (p["version"], CATALOGUE.version, stats_version):
                continue  # nothing changed since that feed was ranked
        todo.append((u, p))
    if not todo:
        return 0
    spec = topology().ranking
    # the co-reads of the users' last reads, as the batch ranks with (streams/clickpath/fold.py)
    cur = trend_epoch(CATALOGUE.event_ms or time.time() * 1000)
    reads = sorted({rd["content_id"] for _, p in todo
                    for rd in p.get("recent_reads", [])[:COREAD_WINDOW]})
    co = coread_maps([p for _, p in todo],
                     await coreads_store.read_state(r, partition, reads, (), (cur - 1, cur)))
    ranked = await in_thread(
        rank_feeds,
        [p for _, p in todo],
        CATALOGUE.matrix,
        CATALOGUE.stats,
        spec,
        REGISTRY.current(),
        512,
        CATALOGUE.sources(),
        CATALOGUE.trends,
        co,
    )
    docs = [
        feed_json(u, p, items, stats_version, CATALOGUE, c)
        for (u, p), items, c in zip(todo, ranked, co or [{} for _ in todo], strict=True)
    ]
    await intern(r, [c for doc in docs for c in feed_ids(doc["items"])])
    async with r.pipeline(transaction=True) as pipe:
        values = {
            u: encode_feed(doc, spec.feed_format, ITEMS)
            for (u, _), doc in zip(todo, docs, strict=True)
        }
        feed_store.queue_feeds(pipe, values, None)
        partition_store.queue_active(
            pipe, partition, {u: p.get("last_seen") or 0 for u, p in todo}
        )
        await pipe.execute()
    return len(docs)


async def feeds_holding(users: Sequence[str], content_ids: set[str]) -> list[str]:
    """The users of ``users`` whose stored feed lists one of ``content_ids``."""
    if not users or not content_ids:
        return []
    raws = await feed_store.read_raw(redis_client(), list(users))
    out = []
    for u, raw in zip(users, raws, strict=True):
        if raw is None:
            continue
        try:
            items = decode_feed(raw).get("items") or []
        except FeedFormatError:  # unreadable: re-ranked anyway
            out.append(u)
            continue
        if any(it.get("content_id") in content_ids for it in items):
            out.append(u)
    return out


class Refresher:
    """Re-ranks the active users of the consumer's partitions when the consumer is idle."""

    def __init__(self) -> None:
        self.trimmed_at = float("-inf")

    async def run(self, partitions: Sequence[int], batch_moved: Callable[[], bool]) -> int:
        """Re-rank active users of ``partitions`` after item stats moved or items were removed;
        return the feeds written. Stops early when ``batch_moved()`` says new records arrived
        (they come first). What is re-ranked:

        * item stats moved since the partition's mark: every active user (engagement drifts
          for everyone);
        * only the catalogue moved: *new* items reached their audience by fan-out on write, so
          nobody is re-ranked for them; items *removed* (unpublished) since the last full pass
          are taken out of the stored feeds that hold them (only those users are re-ranked).

        Users whose profile expired are dropped from the active set; audience-set members
        older than ``profiles.ttl_days`` are trimmed (at most every :data:`AUDIENCE_TRIM_S`).
        """
        r = redis_client()
        await self.trim_audience()
        version = CATALOGUE.version
        await CATALOGUE.refresh()
        if CATALOGUE.version != version:
            return 0  # the catalogue is still moving: wait for it to settle
        mark = f"{CATALOGUE.version}:{CATALOGUE.stats_version}"
        removed = set(CATALOGUE.removed)
        written = 0
        for partition in partitions:
            done = await partition_store.refreshed(r, partition)
            if done == mark:
                continue
            stats_moved = done is None or done.split(":")[-1] != str(CATALOGUE.stats_version)
            if not stats_moved and not removed:  # only additions: fan-out on write has them
                await partition_store.mark_refreshed(r, partition, mark)
                continue
            users = await partition_store.active_users(r, partition)
            for i in range(0, len(users), REFRESH_CHUNK):
                if batch_moved():
                    return written
                chunk = users[i : i + REFRESH_CHUNK]
                alive = await profile_store.existing(r, chunk)
                gone = [u for u, live in zip(chunk, alive, strict=True) if not live]
                await partition_store.drop_inactive(r, partition, gone)
                todo = [u for u, live in zip(chunk, alive, strict=True) if live]
                if not stats_moved:
                    todo = await feeds_holding(todo, removed)
                written += await rank_and_store(todo, partition)
            await partition_store.mark_refreshed(r, partition, mark)
        CATALOGUE.removed -= removed
        return written

    async def trim_audience(self) -> int:
        """Drop audience-set members registered more than ``profiles.ttl_days`` ago (their
        profile has expired or is about to: the same wall clock); at most every
        :data:`AUDIENCE_TRIM_S`. Returns the members removed."""
        now = time.monotonic()
        if now - self.trimmed_at < AUDIENCE_TRIM_S:
            return 0
        self.trimmed_at = now
        cutoff = time.time() * 1000 - topology().profiles.ttl_days * DAY_MS
        return await audience_store.trim(redis_client(), cutoff)
