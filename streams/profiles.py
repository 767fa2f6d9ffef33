"""Stage 3, profiles: reader events -> rolling user profiles, item stats and trending.

input:  reader.events (key user_id, value feedpipe.ReaderEvent), in batches (stream.take_events)
output: profiles.updated (compacted; key user_id, value feedpipe.UserProfile): one record per
        user per batch; reader.events 'resolve' events when a click's item arrived meanwhile
dlq:    reader.events.dlq (undecodable records, ids that cannot be Redis key parts)
state:  Redis: profile:{user}, stats:{item}, trending:{brand}:{epoch}, pending:{item},
        wm:profiles:reader.events:{partition} (docs/redis-keys.md)
guarantees: effectively-once on Redis. Each partition's batch is applied in one MULTI/EXEC
        guarded by WATCH on that partition's offset watermark, and events at or below the
        watermark are skipped, so redelivery after a crash (at-least-once input) never
        double-counts. Profile maths is commutative (feedpipe.model.profile: forward decay), so
        late and out-of-order events give the same profile. Clicks on items not materialised
        yet are kept in the profile's ``pending`` list and applied on a 'resolve' event.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
from faust.types import EventT, StreamT
from redis.exceptions import WatchError

from feedpipe.errors import SerializationError
from feedpipe.model.item import Meta, add_item_signal
from feedpipe.model.profile import Event, Profile, apply_events, new_profile
from feedpipe.store.interning import ITEMS, intern, resolve
from feedpipe.store.keys import keys, safe_id
from feedpipe.store.profiles import (
    decode_profile,
    encode_profile,
    profile_ids,
    stored_ordinals,
    stored_profile,
)
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.app import app, topic
from streams.runtime import (
    by_partition,
    dead_letter,
    log,
    ms,
    reader_event,
    redis_client,
    release_pending,
    take_events,
)

STAGE = "profiles"
BATCH = 2000
WITHIN_S = 0.2
DAY_MS = 86_400_000


async def _apply_partition(
    topic_name: str, partition: int, events: list[EventT], dlq: Any
) -> tuple[list[str], dict[str, Profile]]:
    """Apply one partition's events; return (user ids to publish, profiles this call wrote)."""
    r = redis_client()
    k = keys()
    topo = topology()
    spec, rspec = topo.profiles, topo.ranking
    dec = codec("ReaderEvent").decode
    decoded: list[tuple[int, dict[str, Any]]] = []
    for e in events:
        try:
            rec = dec(e.message.value)
            safe_id(rec["user_id"])
            safe_id(rec["content_id"])
        except (SerializationError, ValueError) as exc:
            code = "undecodable" if isinstance(exc, SerializationError) else "invalid_id"
            await dlq.send(key=e.message.key, value=dead_letter(STAGE, e, code, str(exc)))
            continue
        if rec["type"] not in ("impression", "click", "resolve"):
            await dlq.send(
                key=e.message.key,
                value=dead_letter(
                    STAGE,
                    e,
                    "unknown_type",
                    f"unknown reader event type {rec['type']!r}",
                    rec["event_id"],
                ),
            )
            continue
        decoded.append((e.message.offset, rec))
    last_offset = events[-1].message.offset
    wm_key = k.watermark(STAGE, topic_name, partition)
    epoch_ms = rspec.trending_epoch_hours * 3_600_000
    half_ms = rspec.trending_half_life_hours * 3_600_000
    while True:
        async with r.pipeline(transaction=True) as pipe:
            await pipe.watch(wm_key)
            raw_wm = await pipe.get(wm_key)
            wm = int(raw_wm) if raw_wm is not None else -1
            fresh = [rec for off, rec in decoded if off > wm]
            users = sorted({rec["user_id"] for _, rec in decoded})
            if not fresh:
                await pipe.unwatch()
                return users, {}  # replayed batch: republish current profiles, change nothing
            per_user: dict[str, list[Event]] = defaultdict(list)
            for rec in fresh:
                per_user[rec["user_id"]].append(reader_event(rec))
            item_ids = sorted(
                {
                    ev.content_id
                    for evs in per_user.values()
                    for ev in evs
                    if ev.type != "impression"
                }
            )
            uids = sorted(per_user)
            raw_profiles = await r.mget([*(k.profile(u) for u in uids), k.item_gen()])
            ITEMS.sync(raw_profiles.pop())  # item ordinals (feedpipe/store/interning.py)
            await resolve(r, stored_ordinals(raw_profiles))
            raw_metas = await r.mget([k.meta(c) for c in item_ids]) if item_ids else []
            metas = {
                c: Meta.from_json(orjson.loads(m))
                for c, m in zip(item_ids, raw_metas, strict=True)
                if m
            }
            profiles: dict[str, Profile] = {}
            pending: dict[str, set[str]] = defaultdict(set)
            for u, raw in zip(uids, raw_profiles, strict=True):
                evs = per_user[u]
                p = stored_profile(u, raw, "profiles") or new_profile(
                    u, min(ev.at for ev in evs) // DAY_MS * DAY_MS, spec
                )
                for cid in apply_events(p, evs, metas, spec):
                    pending[cid].add(u)
                p["version"] += 1
                profiles[u] = p
            # item stats and trending from live events
            stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            trending: dict[tuple[str, int], dict[str, float]] = defaultdict(
                lambda: defaultdict(float)
            )
            for rec in fresh:
                if rec["origin"] != "live" or rec["type"] == "resolve":
                    continue
                cid = rec["content_id"]
                add_item_signal(
                    stats, trending, rec["type"], cid, ms(rec["occurred_at"]) or 0,
                    metas.get(cid), epoch_ms, half_ms,
                )
            await intern(r, [c for p in profiles.values() for c in profile_ids(p)])
            pipe.multi()
            for u, p in profiles.items():
                pipe.set(k.profile(u), encode_profile(p, spec.profile_format))
            for cid, (imps, clicks) in stats.items():
                if imps:
                    pipe.hincrby(k.stats(cid), "impressions", imps)
                if clicks:
                    pipe.hincrby(k.stats(cid), "clicks", clicks)
            for (brand, epoch), scores in trending.items():
                for cid, w in scores.items():
                    pipe.zincrby(k.trending(brand, epoch), w, cid)
                # newest epoch only moves forward
                pipe.eval(_MAX_SCRIPT, 1, k.trending_epoch(brand), epoch)
            for cid, us in pending.items():
                pipe.sadd(k.pending_users(cid), *sorted(us))
            if stats:
                pipe.incr(k.stats_version())
            pipe.set(wm_key, last_offset)
            try:
                await pipe.execute()
            except WatchError:
                log.warning(
                    "profiles: watermark of %s/%d moved; retrying batch", topic_name, partition
                )
                continue
            break
    await _close_pending_race(list(pending))
    return users, profiles


_MAX_SCRIPT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""


async def _close_pending_race(content_ids: list[str]) -> None:
    """Resolve clicks whose item was materialised between our read and our pending write.

    The enrich stage writes meta before it reads pending:{item}; we write pending:{item} before
    this check. Whichever runs second sees the other's write, so no click waits forever.
    """
    if not content_ids:
        return
    r = redis_client()
    k = keys()
    exists = await r.mget([k.meta(c) for c in content_ids])
    arrived = [c for c, m in zip(content_ids, exists, strict=True) if m]
    if not arrived:
        return
    await release_pending(arrived)


async def publish_profiles(user_ids: list[str], written: dict[str, Profile]) -> None:
    """Send the current profile of each user to profiles.updated (one record per user).

    Profiles this batch just wrote are taken from ``written``; the others (users whose events
    were all at or below the watermark, i.e. redelivered) are read back from Redis.
    """
    missing = [u for u in user_ids if u not in written]
    current = dict(written)
    if missing:
        k = keys()
        r = redis_client()
        raws = await r.mget([*(k.profile(u) for u in missing), k.item_gen()])
        ITEMS.sync(raws.pop())
        await resolve(r, stored_ordinals(raws))
        current.update(
            {u: decode_profile(raw) for u, raw in zip(missing, raws, strict=True) if raw}
        )
    out = topic("profiles.updated")
    enc = codec("UserProfile").encode
    for u in user_ids:
        if u in current:
            await out.send(key=u.encode(), value=enc(current[u]))


@app.agent(topic("reader.events"), name=STAGE)
async def profiles_agent(stream: StreamT[Any]) -> None:
    """Apply reader events in batches, per partition, and publish the changed profiles."""
    dlq = topic(topology().stages["clickpath"].dead_letters())
    async for events in take_events(stream, BATCH, WITHIN_S):
        for (topic_name, partition), evs in by_partition(list(events)).items():
            users, written = await _apply_partition(topic_name, partition, evs, dlq)
            await publish_profiles(users, written)


import streams.clickpath  # noqa: E402,F401  (registers the batch click path on the app)
