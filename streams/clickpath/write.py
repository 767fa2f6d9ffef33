"""The click path's writer: applies one partition batch to Redis in one MULTI/EXEC guarded by
the partition's offset watermark.

Input:  one reader.events partition batch (decoded, :mod:`streams.clickpath.records`).
Keys:   reads the watermark ``fp:{p<N>}:wm:profiles:reader.events`` (WATCHed), the users'
        profiles, the items' metas, the item-ordinal table; writes profile, feed, active,
        stats, stats_version, trending, trending_epoch, pending, ab, ab_experiments, audience
        and the watermark, each through its storage module (feedpipe/store/, docs/redis-keys.md);
        every key of the transaction carries the partition's hash tag ``{p<N>}`` (one Redis
        Cluster slot) when the batch's users are keyed to it by Kafka's key partitioner.
Output: the :class:`streams.clickpath.fold.Selection` of the batch and the
        :class:`streams.clickpath.fold.Plan` applied (None when every record was at or below
        the watermark: nothing was written).

Guarantees (exactly-once effects in Redis):

* WATCH on the watermark, then read it: records at or below it are skipped, so a batch
  redelivered after a crash changes nothing, and a zombie consumer that lost the partition
  fails on the WATCH (the batch is folded again from fresh reads);
* the profiles, feeds, counters, pending sets, audience changes and the new watermark are in
  one transaction: all or nothing;
* ``before_exec(plan)`` runs after the plan is queued and before EXEC: DLQ records and erase
  tombstones are acknowledged while the watermark still has its old value (after it, a
  redelivery would skip their offsets);
* strict mode (the live consumer): a missing watermark while the batch starts past the log
  start raises :class:`streams.clickpath.records.StateLost` (Redis lost its state; applying
  to empty profiles would build wrong ones and move the watermark past what a rebuild must
  replay).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from redis.exceptions import WatchError

from feedpipe.model.item import Meta
from feedpipe.model.signals import COREAD_WINDOW, trend_epoch
from feedpipe.store import audience as audience_store
from feedpipe.store import content as content_store
from feedpipe.store import coreads as coreads_store
from feedpipe.store import feeds as feed_store
from feedpipe.store import partitions as partition_store
from feedpipe.store import pending as pending_store
from feedpipe.store import profiles as profile_store
from feedpipe.store import stats as stats_store
from feedpipe.store import trends as trends_store
from feedpipe.store.feeds import encode_feed
from feedpipe.store.interning import ITEMS, ItemTableError, intern
from feedpipe.store.keys import keys
from feedpipe.store.profiles import encode_profile, stored_profile
from feedpipe.topology import Topology, topology
from streams.clickpath.catalogue import CATALOGUE, REGISTRY
from streams.clickpath.fold import Plan, Selection, fold, items_of, select, users_of
from streams.clickpath.records import STAGE, Decoded, RecordLike, Rejected, StateLost, stage
from streams.runtime import in_thread, log, ms, redis_client

STATS_MAX_AGE_S = 1.0
"""Seconds: the item stats a batch ranks with are at most this stale."""


class MetaCache:
    """The ranking features of items, cached once materialised (a meta changes only with a
    republish, which the catalogue reload picks up for ranking); missing ids are read again."""

    def __init__(self) -> None:
        self.metas: dict[str, Meta] = {}

    async def get(self, ids: Sequence[str]) -> dict[str, Meta]:
        """The features of the materialised items of ``ids``."""
        want = [c for c in ids if c not in self.metas]
        if want:
            found = await content_store.read_metas(redis_client(), want)
            self.metas.update({c: Meta.from_json(m) for c, m in found.items()})
        return {c: self.metas[c] for c in ids if c in self.metas}


def queue_plan(pipe: Any, plan: Plan, erased_from: Sequence[str], topo: Topology) -> None:
    """Queue the plan's writes on ``pipe`` (in MULTI), the watermark last."""
    spec, rspec = topo.profiles, topo.ranking
    partition = plan.partition
    aud = plan.audience
    audience_store.queue_writes(
        pipe,
        aud.add if aud is not None else {},
        aud.remove if aud is not None else {},
        plan.erased,
        erased_from,
    )
    for u, old in plan.erased.items():
        profile_store.queue_delete(pipe, u)
        feed_store.queue_delete(pipe, u)
        partition_store.queue_inactive(pipe, partition, u)
        waiting = [e["content_id"] for e in (old or {}).get("pending", [])]
        pending_store.queue_remove(pipe, u, waiting)
    users = sorted(plan.profiles)
    ttl_s = int(spec.ttl_days * 86_400)
    profile_store.queue_profiles(
        pipe,
        {
            u: encode_profile(
                plan.profiles[u], spec.profile_format, deflate=spec.profile_deflate
            )
            for u in users
        },
        ttl_s,
        sorted(plan.kept),
    )
    ranked = sorted(plan.feeds)
    feed_store.queue_feeds(
        pipe, {u: encode_feed(plan.feeds[u], rspec.feed_format, ITEMS) for u in ranked}, ttl_s
    )
    partition_store.queue_active(
        pipe, partition, {u: plan.profiles[u].get("last_seen") or 0 for u in users}
    )
    stats_store.queue_signals(pipe, partition, plan.stats, plan.trending, plan.newest_ms)
    trends_store.queue_trends(pipe, partition, plan.trends)
    coreads_store.queue_coreads(pipe, plan.coreads)
    pending_store.queue_add(pipe, plan.pending, int(spec.pending_ttl_hours * 3600))
    for u, cids in sorted(plan.unpend.items()):
        pending_store.queue_remove(pipe, u, cids)
    stats_store.queue_ab(pipe, partition, plan.ab)
    partition_store.queue_watermark(pipe, STAGE, stage().input, partition, plan.last_offset)


async def apply(
    partition: int,
    records: Sequence[RecordLike],
    decoded: Decoded,
    bad: Rejected,
    metas: MetaCache,
    before_exec: Callable[[Plan], Awaitable[None]],
    *,
    strict: bool = False,
    log_start: Mapping[int, int] | None = None,
) -> tuple[Selection, Plan | None]:
    """Apply one partition batch (``records`` in offset order, ``decoded``/``bad`` their
    :func:`streams.clickpath.records.decode`) under the watermark (module docstring).

    Raises:
        StateLost: ``strict`` and the watermark is missing while ``records`` start past the
            log start (``log_start[partition]``, 0 when unknown): nothing was applied.
        redis.exceptions.RedisError: Redis failed (nothing committed: the caller retries).
    """
    r = redis_client()
    k = keys()
    topo = topology()
    topic = stage().input
    wm_key = k.watermark(STAGE, topic, partition)
    await CATALOGUE.refresh(STATS_MAX_AGE_S,
                            ms(decoded[-1][1].get("occurred_at")) if decoded else None)
    while True:
        async with r.pipeline(transaction=True) as pipe:
            await pipe.watch(wm_key)
            raw_wm = await pipe.get(wm_key)
            if (
                raw_wm is None
                and strict
                and records[0].offset > (log_start or {}).get(partition, 0)
            ):
                await pipe.unwatch()
                raise StateLost(partition)
            wm = int(raw_wm) if raw_wm is not None else -1
            sel = select(decoded, bad, wm, records[-1].offset)
            if not sel.fresh:
                await pipe.unwatch()
                return sel, None
            # every record above the watermark (the usual case): the batch's users
            uids = sel.users if len(sel.fresh) == len(decoded) else users_of(sel.fresh)
            raws = await profile_store.read_raw(r, uids)
            stored = {
                u: stored_profile(u, raw, "clickpath") for u, raw in zip(uids, raws, strict=True)
            }
            cfg = REGISTRY.current()
            found = await metas.get(items_of(sel.fresh, cfg.experiments))
            now_ms = int(time.time() * 1000)
            # the windows' clock: the loaded stats' newest event time, or this batch's newest
            # live event when later (its stats are not written yet; a feed ranked so is
            # stamped with an older stats version, so the idle refresher re-ranks it)
            live_ms = max((ms(rec["occurred_at"]) or 0 for _, rec in sel.fresh
                           if rec["origin"] == "live" and rec["type"] in ("impression", "click")),
                          default=0)
            co = await read_coreads(r, partition, sel, stored,
                                    max(CATALOGUE.event_ms, live_ms) or now_ms)
            # in a thread: a partition batch of many users ranks for seconds on a loaded
            # machine, and the consumer's heartbeats run on this event loop
            plan = await in_thread(
                fold, partition, sel, stored, found, CATALOGUE, cfg, topo, k, now_ms, co
            )
            erased_from = await audience_store.user_keys(r, plan.erased)
            try:  # ordinals for the ids the profiles and feeds store
                await intern(r, plan.interned_ids())
            except ItemTableError:  # the ordinal table was wiped under us: redo the batch
                log.warning("clickpath: item table reset (%s/%d); retrying", topic, partition)
                continue
            pipe.multi()
            queue_plan(pipe, plan, erased_from, topo)
            await before_exec(plan)
            try:
                await pipe.execute()
            except WatchError:
                log.warning("clickpath: watermark of %s/%d moved; retrying", topic, partition)
                continue
            return sel, plan


async def read_coreads(r: Any, partition: int, sel: Selection,
                       stored: Mapping[str, Any], event_ms: int) -> coreads_store.CoReadState:
    """The co-read rows the fold of ``sel`` counts into and ranks with
    (:func:`feedpipe.store.coreads.read_state`): from the partition's shard of the epochs of the
    batch's clicks, the rows the clicks may update (the clicked items and the stored reads of
    the clicking users that can precede a click); from every shard of the epoch of ``event_ms``
    (the newest event time seen) and the one before, the rows of the newest
    :data:`feedpipe.model.signals.COREAD_WINDOW` reads of the users the batch re-ranks (those
    with an event other than an impression) after the batch."""
    ids: set[str] = set()
    write_epochs: set[int] = set()
    first_click: dict[str, int] = {}  # user -> earliest click time of the batch
    clicks: dict[str, list[tuple[int, str]]] = {}  # user -> (at, content id) of the batch
    ranked: set[str] = set()  # users with only impressions are not re-ranked (fold.py)
    for _, rec in sel.fresh:
        if rec["type"] != "impression":
            ranked.add(rec["user_id"])
        if rec["type"] == "click" and rec["content_id"]:
            at = ms(rec["occurred_at"]) or 0
            ids.add(rec["content_id"])
            write_epochs.add(trend_epoch(at))
            u = rec["user_id"]
            first_click[u] = min(at, first_click.get(u, at))
            clicks.setdefault(u, []).append((at, rec["content_id"]))
    score: set[str] = set()  # the newest reads after the batch: what the users rank with
    for u in ranked:
        reads = (stored.get(u) or {}).get("recent_reads", [])  # newest first
        # a late click's prior reads can be older than the newest ones: read those too
        t = first_click.get(u)
        if t is not None:
            n = sum(1 for rd in reads if rd["at"] >= t)
            ids.update(rd["content_id"] for rd in reads[: n + COREAD_WINDOW])
        newest = sorted({*((rd["at"], rd["content_id"]) for rd in reads[:COREAD_WINDOW]),
                         *clicks.get(u, [])})[-COREAD_WINDOW:]
        score.update(cid for _, cid in newest)
    cur = trend_epoch(event_ms)
    return await coreads_store.read_state(r, partition, sorted(ids), write_epochs, (cur - 1, cur),
                                          sorted(score))
