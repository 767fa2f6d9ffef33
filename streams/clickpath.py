"""The click path: reader events -> profiles -> feeds -> Redis, in whole batches (no Faust stream).

input:  reader.events (key user_id, value feedpipe.ReaderEvent), consumed with an aiokafka
        ``getmany`` loop under its own consumer group (:func:`consumer_group`: the app id plus
        ``.clickpath``), inside the Faust worker process (:class:`ClickPathService`)
output: profiles.updated and feeds.updated (compacted; key user_id): a profile per user per
        batch, a feed when the user's ranked list (ids, weight sets, arms) changed since the
        last one sent (:func:`feed_fingerprint`, kept in the profile as ``feed_fp``; score-only
        changes are stored in Redis but not republished), a tombstone (null value) per erased
        user; reader.events 'resolve' events for
        clicks whose item arrived while they were being written. Input
        'fanout' events (from the enrich stage's fan-out on write, feedpipe/rank/fanout.py) carry
        no profile signal: the user's feed is re-ranked and stored with the new item in the
        catalogue; each batch also writes the audience index (fp:audience:*) of its users
dlq:    reader.events.dlq (undecodable, invalid ids, unknown type, late events)
state:  Redis profile:{user}, feed:{user}, active:{partition}, stats:{item}, trending, pending,
        wm:profiles:reader.events:{partition} (docs/redis-keys.md)

Why not a Faust agent: Faust's per-event stream machinery costs ~17x against hand-written
consumers here (/work/shared/docs/faust-field-notes.md); this path decodes, applies, ranks and
writes a whole partition batch at once (one MULTI/EXEC, one numpy ranking call).

Guarantees (exactly-once *effects* in Redis, at-least-once on the output topics):

* each partition batch is applied in one MULTI/EXEC guarded by WATCH on the partition's offset
  watermark; records at or below it are skipped, so a batch redelivered after a crash (offsets
  are committed only after the Redis write and the output sends) changes nothing, and a zombie
  consumer that lost the partition fails on the WATCH;
* duplicates at *new* offsets (a source replayed twice, a non-idempotent producer retry) are
  dropped by event id (:func:`feedpipe.model.admission.admit_events`, fingerprints kept within the
  lateness bound ``profiles.allowed_lateness_hours``); events older than the bound go to the DLQ
  with reason ``late``;
* profile and feed are written in the same transaction, so a stored feed always reflects the
  stored profile; a redelivered batch republishes the current profile and feed (the crash may
  have hit between the Redis write and the sends), so consumers of the compacted topics see
  each state at least once;
* an ``erase`` event deletes the user's profile, feed, active-set entry and pending-click
  entries in the same transaction and sends tombstones to profiles.updated and feeds.updated.
  Item stats and trending are aggregates without user ids. reader.events itself is a
  delete-policy topic: its records age out with its retention (7 days).
* profiles and feeds carry a TTL (``profiles.ttl_days``, refreshed on every write): an idle
  user's keys expire; the next event starts a fresh profile and feed (the read endpoint serves
  trending in between).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from redis.exceptions import WatchError

from feedpipe.errors import SerializationError
from feedpipe.ids import event_id as make_event_id
from feedpipe.model.admission import admit_events
from feedpipe.model.item import Meta, add_item_signal
from feedpipe.model.profile import Profile, apply_events, new_profile
from feedpipe.monitoring import metrics
from feedpipe.rank.experiments import assign_arm, experiment_for
from feedpipe.rank.fanout import ZREM_ALL_SCRIPT, audience_writes
from feedpipe.rank.rankers import rank_users
from feedpipe.store.feeds import decode_feed, encode_feed
from feedpipe.store.interning import ITEMS, ItemTableError, intern, resolve
from feedpipe.store.keys import keys, safe_id
from feedpipe.store.profiles import (
    decode_profile,
    encode_profile,
    profile_ids,
    stored_ordinals,
    stored_profile,
)
from feedpipe.topology import ExperimentSpec, topology
from feedpipe.wire.codec import codec
from streams.feeds import CATALOGUE, REGISTRY, avro_feed, feed_json
from streams.runtime import (
    as_str,
    dead_letter_value,
    log,
    ms,
    reader_event,
    redis_client,
    until_redis_answers,
)

STAGE = "profiles"  # watermark keys are shared with the per-event Faust stage (same offsets)
TOPIC = "reader.events"
TYPES = frozenset({"impression", "click", "resolve", "erase", "fanout"})
DAY_MS = 86_400_000
STATS_MAX_AGE_S = 1.0  # s: item stats a batch ranks with are at most this stale
MAX_RECORDS = 20_000  # records per getmany call
POLL_MS = 200
REFRESH_IDLE_S = 2.0
REFRESH_CHUNK = 500
AUDIENCE_TRIM_S = 60.0  # s between two trims of the audience sets (idle refresher)

Send = Callable[[str, bytes, bytes | None], Awaitable[Any]]
"""``send(topic, key, value)``: queue one record; awaiting it returns a delivery awaitable."""


class RecordLike(Protocol):
    """What the click path needs of a consumed record (aiokafka ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record as plain data (a :class:`RecordLike`): for feeding
    :meth:`ClickPath.apply_batch` from outside a consumer (benchmarks, tests, replays)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def feed_fingerprint(items: Sequence[dict[str, Any]]) -> str:
    """16 hex digits (BLAKE2b-64) of a ranked list: item ids in order, and the weight sets,
    versions and arms that ranked it. Scores are left out: they drift with every item-stats
    change, and a feed whose list did not move is not republished (see ClickPath)."""
    h = hashlib.blake2b(digest_size=8)
    h.update("\x1f".join(it["content_id"] for it in items).encode())
    served = {f"{it.get('weight_set')}@{it.get('weight_version')}/{it.get('arm')}" for it in items}
    h.update("\x1e".join(sorted(served)).encode())
    return h.hexdigest()


def consumer_group(app_id: str) -> str:
    """The click path's consumer group for a Faust app id (e.g. ``feedpipe.clickpath``)."""
    return topology().stages["clickpath"].group(app_id)


def dead_letter_record(
    rec: RecordLike, code: str, reason: str, raw_event_id: str | None = None
) -> bytes:
    """A DeadLetter (schemas/dead_letter.avsc) for consumed record ``rec``."""
    return dead_letter_value(
        STAGE, rec.topic, rec.partition, rec.offset, rec.key, rec.value, code, reason,
        raw_event_id,
    )


class StateLost(RuntimeError):
    """A partition's offset watermark is missing while the log holds records older than the
    batch (Redis was wiped): nothing was applied; hold the partition until a rebuild."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"Redis state of {TOPIC}[{partition}] is gone (watermark missing)")
        self.partition = partition


@dataclass(slots=True)
class BatchResult:
    """Counts of one partition batch (for logs, metrics and the benchmark)."""

    records: int = 0
    applied: int = 0
    skipped_offsets: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    users: int = 0
    feeds: int = 0
    erased: int = 0
    pending_items: list[str] = field(default_factory=list)


_STATS_SCRIPT = """
for i, key in ipairs(KEYS) do
  local imps = tonumber(ARGV[2 * i - 1])
  local clicks = tonumber(ARGV[2 * i])
  if imps > 0 then redis.call('HINCRBY', key, 'impressions', imps) end
  if clicks > 0 then redis.call('HINCRBY', key, 'clicks', clicks) end
end
return 0
"""
_ZINCR_SCRIPT = """
for i = 1, #ARGV, 2 do redis.call('ZINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 0
"""
_SET_EX_SCRIPT = """
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1]) end
return 0
"""
_SADD_SCRIPT = """
local j = 1
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[j])
  redis.call('SADD', key, unpack(ARGV, j + 1, j + n))
  j = j + n + 1
end
return 0
"""
_MAX_SCRIPT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""


def _decode(
    records: Sequence[RecordLike],
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, bytes | None, bytes]]]:
    """Decode and validate; return ((offset, record) list, DLQ (offset, key, value) list)."""
    dec = codec("ReaderEvent").decode
    good: list[tuple[int, dict[str, Any]]] = []
    bad: list[tuple[int, bytes | None, bytes]] = []
    for r in records:
        try:
            rec = dec(r.value)
        except SerializationError as exc:
            bad.append((r.offset, r.key, dead_letter_record(r, "undecodable", str(exc))))
            continue
        typ = rec["type"]
        if typ not in TYPES:
            bad.append(
                (
                    r.offset,
                    r.key,
                    dead_letter_record(
                        r, "unknown_type", f"unknown reader event type {typ!r}", rec["event_id"]
                    ),
                )
            )
            continue
        try:
            safe_id(rec["user_id"])
            if typ != "erase":
                safe_id(rec["content_id"])
        except ValueError as exc:
            bad.append(
                (r.offset, r.key, dead_letter_record(r, "invalid_id", str(exc), rec["event_id"]))
            )
            continue
        good.append((r.offset, rec))
    return good, bad


class ClickPath:
    """Applies reader.events partition batches to Redis and sends the resulting records.

    Args:
        send: ``send(topic, key, value)`` coroutine queuing one output record and returning an
            awaitable of its delivery (aiokafka ``AIOKafkaProducer.send`` has this shape).
        publish: False skips the profiles.updated / feeds.updated records (benchmark variants
            that only measure the Redis side); DLQ, tombstones and resolves are always sent.
        strict: raise :class:`StateLost` instead of applying a batch to a partition whose
            watermark is missing while its first offset is past the log start
            (``log_start[partition]``, 0 when unknown): the live consumer loop sets it; a
            replay from the log start (tests, benchmarks, ``feedpipe rebuild``) does not.
    """

    def __init__(self, send: Send, publish: bool = True, strict: bool = False) -> None:
        self.send = send
        self.publish = publish
        self.strict = strict
        self.log_start: dict[int, int] = {}  # partition -> log start offset, when known
        self.metas: dict[str, Meta] = {}
        self.last_batch_at = 0.0
        self.trimmed_at = float("-inf")

    async def _metas(self, ids: Sequence[str]) -> dict[str, Meta]:
        """Ranking features of ``ids`` (cached once materialised; missing ids re-read)."""
        want = [c for c in ids if c not in self.metas]
        if want:
            k = keys()
            raws = await redis_client().mget([k.meta(c) for c in want])
            for c, m in zip(want, raws, strict=True):
                if m:
                    self.metas[c] = Meta.from_json(orjson.loads(m))
        return {c: self.metas[c] for c in ids if c in self.metas}

    async def apply_partition(
        self, partition: int, records: Sequence[RecordLike]
    ) -> tuple[BatchResult, list[Awaitable[Any]]]:
        """Apply one partition's records (offset order); return counts and pending deliveries.

        Bad records go to the DLQ. Never raises for bad input; Redis/Kafka errors propagate
        (the caller does not commit, so the batch is redelivered and applied exactly once).
        """
        res = BatchResult(records=len(records))
        if not records:
            return res, []
        r = redis_client()
        k = keys()
        topo = topology()
        spec, rspec = topo.profiles, topo.ranking
        deliveries: list[Awaitable[Any]] = []
        decoded, bad = _decode(records)
        by_offset = {rec.offset: rec for rec in records}
        last_offset = records[-1].offset
        wm_key = k.watermark(STAGE, TOPIC, partition)
        epoch_ms = rspec.trending_epoch_hours * 3_600_000
        half_ms = rspec.trending_half_life_hours * 3_600_000
        ttl_s = int(spec.ttl_days * 86_400)
        await CATALOGUE.refresh(STATS_MAX_AGE_S)
        stats_version = CATALOGUE.stats_version or 0
        sent_early = False
        while True:
            async with r.pipeline(transaction=True) as pipe:
                await pipe.watch(wm_key)
                raw_wm = await pipe.get(wm_key)
                if (
                    raw_wm is None
                    and self.strict
                    and records[0].offset > self.log_start.get(partition, 0)
                ):
                    # Redis lost the partition's state (e.g. FLUSHALL between the caller's
                    # hold check and this WATCH): applying to empty profiles would build wrong
                    # ones and move the watermark past what a rebuild must replay
                    await pipe.unwatch()
                    raise StateLost(partition)
                wm = int(raw_wm) if raw_wm is not None else -1
                # bad records above the watermark: DLQ'd once (a redelivery skips them too)
                dead = [(key, value) for off, key, value in bad if off > wm]
                fresh = [(off, rec) for off, rec in decoded if off > wm]
                res.skipped_offsets = len(decoded) - len(fresh)
                users = sorted({rec["user_id"] for _, rec in decoded})
                if not fresh:
                    await pipe.unwatch()
                    res.dead_letters = len(dead)
                    for key, value in dead:
                        deliveries.append(await self.send(f"{TOPIC}.dlq", key or b"", value))
                    if self.publish:
                        deliveries += await self._republish(users)
                    return res, deliveries
                per_user: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
                for off, rec in fresh:
                    per_user[rec["user_id"]].append((off, rec))
                uids = sorted(per_user)
                raw_profiles = await r.mget([*(k.profile(u) for u in uids), k.item_gen()])
                ITEMS.sync(raw_profiles.pop())  # the item-ordinal table
                # (feedpipe/store/interning.py)
                await resolve(r, stored_ordinals(raw_profiles))
                item_ids = sorted(
                    {
                        rec["content_id"]
                        for _, rec in fresh
                        if rec["type"] in ("click", "resolve")
                    }
                )
                metas = await self._metas(item_ids)
                profiles: dict[str, Profile] = {}
                erased: dict[str, Profile | None] = {}
                pending: dict[str, set[str]] = defaultdict(set)
                counted: list[tuple[dict[str, Any], bool]] = []  # (event, user is a bot)
                late: list[tuple[int, dict[str, Any]]] = []
                fanout_only: set[str] = set()  # re-ranked only: profile neither bumped nor sent
                duplicates = 0
                for u, raw in zip(uids, raw_profiles, strict=True):
                    evs = per_user[u]
                    old = stored_profile(u, raw, "clickpath")
                    cut = max(
                        (i for i, (_, rec) in enumerate(evs) if rec["type"] == "erase"), default=-1
                    )
                    if cut >= 0:  # right to erasure: nothing before the erase survives
                        erased[u] = old
                        old = None
                        evs = evs[cut + 1 :]
                        if not evs:
                            continue
                    if any(rec["type"] == "fanout" for _, rec in evs):
                        # fan-out on write (feedpipe/rank/fanout.py): no profile signal, the user is
                        # re-ranked below; a user without a profile (expired, erased) is skipped
                        evs = [(off, rec) for off, rec in evs if rec["type"] != "fanout"]
                        if not evs:
                            if old is not None:  # profile unchanged: same version, not sent
                                profiles[u] = old
                                fanout_only.add(u)
                            continue
                    events = [reader_event(rec) for _, rec in evs]
                    p = old or new_profile(
                        u, min(ev.at for ev in events) // DAY_MS * DAY_MS, spec
                    )
                    adm = admit_events(p, events, spec)
                    duplicates += len(adm.duplicates)
                    late_ids = {id(ev) for ev in adm.late}
                    for (off, rec), ev in zip(evs, events, strict=True):
                        if id(ev) in late_ids:
                            late.append((off, rec))
                    for cid in apply_events(p, adm.accepted, metas, spec):
                        pending[cid].add(u)
                    p["version"] += 1
                    profiles[u] = p
                    if adm.accepted:
                        accepted_ids = {id(ev) for ev in adm.accepted}
                        bot = bool(p.get("bot"))
                        counted += [
                            (rec, bot)
                            for (_, rec), ev in zip(evs, events, strict=True)
                            if id(ev) in accepted_ids
                        ]
                stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
                trending: dict[tuple[str, int], dict[str, float]] = defaultdict(
                    lambda: defaultdict(float)
                )
                cfg = REGISTRY.current()
                live = [
                    rec
                    for rec, bot in counted
                    if not bot
                    and rec["origin"] == "live"
                    and rec["type"] in ("impression", "click")
                ]
                ab = await self._ab_counts(live, cfg.experiments)
                for rec in live:  # bots are left out of every other reader's signals
                    cid = rec["content_id"]
                    add_item_signal(
                        stats, trending, rec["type"], cid, ms(rec["occurred_at"]) or 0,
                        metas.get(cid), epoch_ms, half_ms,
                    )
                ranked_users = sorted(profiles)
                ranked = rank_users(
                    [profiles[u] for u in ranked_users],
                    CATALOGUE.matrix,
                    CATALOGUE.stats,
                    rspec,
                    cfg,
                    sources=CATALOGUE.sources(),
                )
                feeds = {
                    u: feed_json(u, profiles[u], items, stats_version)
                    for u, items in zip(ranked_users, ranked, strict=True)
                }
                changed: set[str] = set()  # users whose ranked list moved: feeds.updated
                for u, items in zip(ranked_users, ranked, strict=True):
                    fp = feed_fingerprint(items)
                    if profiles[u].get("feed_fp") != fp:
                        profiles[u]["feed_fp"] = fp
                        changed.add(u)
                aud = audience_writes(profiles, rspec, topo.fanout, k, int(time.time() * 1000))
                aud_keys = (
                    [as_str(x) async for x in r.scan_iter(match=k.audience("*", "*"), count=1000)]
                    if erased
                    else []
                )
                try:  # ordinals for the ids the profiles and feeds store
                    await intern(
                        r,
                        [
                            *(c for u in ranked_users for c in profile_ids(profiles[u])),
                            *(it["content_id"] for items in ranked for it in items),
                        ],
                    )
                except ItemTableError:  # the ordinal table was wiped under us: redo the batch
                    log.warning("clickpath: item table reset (%s/%d); retrying", TOPIC, partition)
                    continue
                pipe.multi()
                active = k.active(partition)
                if aud_keys:  # erasure: the user leaves every audience set
                    pipe.eval(ZREM_ALL_SCRIPT, len(aud_keys), *aud_keys, *sorted(erased))
                for aud_key, aud_users in sorted(aud.remove.items()):
                    pipe.zrem(aud_key, *aud_users)
                for aud_key, aud_members in sorted(aud.add.items()):
                    pipe.zadd(aud_key, aud_members)
                for u, old_p in erased.items():
                    pipe.delete(k.profile(u), k.feed(u))
                    pipe.zrem(active, u)
                    for entry in (old_p or {}).get("pending", []):
                        pipe.srem(k.pending_users(entry["content_id"]), u)
                fmt = rspec.feed_format
                if ranked_users:  # one script call, not two SETs per user (client cost)
                    pipe.eval(
                        _SET_EX_SCRIPT,
                        2 * len(ranked_users),
                        *[k.profile(u) for u in ranked_users],
                        *[k.feed(u) for u in ranked_users],
                        ttl_s,
                        *[encode_profile(profiles[u], spec.profile_format) for u in ranked_users],
                        *[encode_feed(feeds[u], fmt, ITEMS) for u in ranked_users],
                    )
                if ranked_users:
                    pipe.zadd(active, {u: profiles[u].get("last_seen") or 0 for u in ranked_users})
                if stats:  # one script call instead of a HINCRBY per item (round-trip cost)
                    ids = sorted(stats)
                    pipe.eval(
                        _STATS_SCRIPT,
                        len(ids),
                        *[k.stats(c) for c in ids],
                        *[n for c in ids for n in stats[c]],
                    )
                for (brand, epoch), scores in trending.items():
                    members = sorted(scores)
                    pipe.eval(
                        _ZINCR_SCRIPT,
                        1,
                        k.trending(brand, epoch),
                        *[x for c in members for x in (repr(scores[c]), c)],
                    )
                    pipe.eval(_MAX_SCRIPT, 1, k.trending_epoch(brand), epoch)
                if pending:  # one script call, not an SADD per item
                    cids = sorted(pending)
                    pipe.eval(
                        _SADD_SCRIPT,
                        len(cids),
                        *[k.pending_users(c) for c in cids],
                        *[x for c in cids for x in (str(len(pending[c])), *sorted(pending[c]))],
                    )
                if stats:
                    pipe.incr(k.stats_version())
                if ab:
                    pipe.sadd(k.ab_experiments(), *sorted(ab))
                    for exp_name, fields in sorted(ab.items()):
                        for fld, n in sorted(fields.items()):
                            pipe.hincrby(k.ab(exp_name), fld, n)
                pipe.set(wm_key, last_offset)
                if not sent_early:
                    # DLQ records and erase tombstones are acknowledged *before* the EXEC moves
                    # the watermark: after it, a redelivery skips these offsets, so a crash in
                    # between would lose them (bad input dropped silently, an erasure left in
                    # the compacted topics). A retry after a WATCH failure does not resend.
                    early = await self._dead_and_tombstones(
                        dead, late, erased, profiles, by_offset, spec
                    )
                    if early:
                        await asyncio.gather(*early)
                    sent_early = True
                try:
                    await pipe.execute()
                except WatchError:
                    log.warning("clickpath: watermark of %s/%d moved; retrying", TOPIC, partition)
                    continue
                break
        res.dead_letters = len(dead) + len(late)
        res.applied = len(fresh) - len(late) - duplicates
        res.duplicates = duplicates
        res.users = len(profiles)
        res.feeds = len(feeds)
        res.erased = len(erased)
        # time-to-feed: the click's event time -> its user's profile and feed committed
        # (one transaction); history clicks of a replay land in the backfill counter
        now_ms = time.time() * 1000
        for rec, _bot in counted:
            if rec["type"] == "click" and rec["content_id"] and rec["user_id"] in feeds:
                metrics.observe_click_to_feed((now_ms - (ms(rec["occurred_at"]) or 0)) / 1000)
        if self.publish:
            deliveries += await self._publish(
                {u: p for u, p in profiles.items() if u not in fanout_only},
                {u: feeds[u] for u in changed},
            )
            # users whose records in this batch were all at or below the watermark (applied
            # before a crash that kept their outputs from being sent): send their stored state
            # again, as a wholly redelivered batch does
            stale = {rec["user_id"] for off, rec in decoded if off <= wm}
            deliveries += await self._republish(sorted(stale - set(profiles) - set(erased)))
        res.pending_items = sorted(pending)
        deliveries += await self._close_pending_race(res.pending_items)
        return res, deliveries

    async def _dead_and_tombstones(
        self,
        dead: Sequence[tuple[bytes | None, bytes]],
        late: Sequence[tuple[int, dict[str, Any]]],
        erased: Mapping[str, Any],
        profiles: Mapping[str, Profile],
        by_offset: Mapping[int, RecordLike],
        spec: Any,
    ) -> list[Awaitable[Any]]:
        """Send a batch's DLQ records (undecodable: ``dead``; ``late`` events, reason ``late``)
        and the tombstones (null values in profiles.updated and feeds.updated) of users erased
        in it and not active again after the erase; return their deliveries."""
        out: list[Awaitable[Any]] = []
        for key, value in dead:
            out.append(await self.send(f"{TOPIC}.dlq", key or b"", value))
        for off, rec in late:
            out.append(
                await self.send(
                    f"{TOPIC}.dlq",
                    rec["user_id"].encode(),
                    dead_letter_record(
                        by_offset[off],
                        "late",
                        f"event time {rec['occurred_at'].isoformat()} is more than "
                        f"{spec.allowed_lateness_hours:g} h behind the user's event-time "
                        "watermark (or older than every remembered event id)",
                        rec["event_id"],
                    ),
                )
            )
        for u in sorted(erased):
            if u in profiles:
                continue  # erased, then new activity in the same batch: the new state follows
            out.append(await self.send("profiles.updated", u.encode(), None))
            out.append(await self.send("feeds.updated", u.encode(), None))
        return out

    async def _ab_counts(
        self, live: Sequence[dict[str, Any]], experiments: Mapping[str, ExperimentSpec]
    ) -> dict[str, dict[str, int]]:
        """A/B counters of a batch's admitted live impressions and clicks (bots excluded).

        Attribution: an event on an item of brand B counts for the arm its user is assigned to
        (:func:`feedpipe.rank.experiments.assign_arm`, a pure hash of experiment and user) in the
        enabled experiment running on B; that is the arm whose ranker produced the user's feed
        of B, and anyone can recompute it from the event. Events on items whose metadata has
        not arrived yet have no known brand and are not attributed (they still count in the
        item stats). Returns experiment -> {"{arm}:impressions" | "{arm}:clicks": count}.
        """
        if not live or not any(spec.enabled for spec in experiments.values()):
            return {}
        metas = await self._metas(sorted({rec["content_id"] for rec in live}))
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for rec in live:
            meta = metas.get(rec["content_id"])
            found = experiment_for(experiments, meta.brand) if meta is not None else None
            if found is None:
                continue
            name, spec = found
            arm = assign_arm(name, spec, rec["user_id"])
            out[name][f"{arm}:{rec['type']}s"] += 1
        return {name: dict(fields) for name, fields in out.items()}

    async def _publish(
        self, profiles: dict[str, Profile], feeds: dict[str, dict[str, Any]]
    ) -> list[Awaitable[Any]]:
        """Send every profile of ``profiles`` and every feed of ``feeds`` (user order)."""
        enc_p = codec("UserProfile").encode
        enc_f = codec("UserFeed").encode
        out: list[Awaitable[Any]] = []
        for u in sorted(profiles.keys() | feeds.keys()):
            key = u.encode()
            profile = profiles.get(u)
            if profile is not None:
                out.append(await self.send("profiles.updated", key, enc_p(profile)))
            doc = feeds.get(u)
            if doc is not None:
                out.append(await self.send("feeds.updated", key, enc_f(avro_feed(doc))))
        return out

    async def _republish(self, users: list[str]) -> list[Awaitable[Any]]:
        """Send the stored profile and feed of ``users`` again (a redelivered batch)."""
        if not users:
            return []
        k = keys()
        r = redis_client()
        raws = await r.mget(
            [k.profile(u) for u in users] + [k.feed(u) for u in users] + [k.item_gen()]
        )
        ITEMS.sync(raws.pop())
        await resolve(r, stored_ordinals(raws))
        n = len(users)
        profiles = {u: decode_profile(p) for u, p in zip(users, raws[:n], strict=True) if p}
        feeds = {u: decode_feed(f) for u, f in zip(users, raws[n:], strict=True) if f}
        both = {u: p for u, p in profiles.items() if u in feeds}
        return await self._publish(both, feeds)

    async def _close_pending_race(self, content_ids: list[str]) -> list[Awaitable[Any]]:
        """Resolve clicks whose item was materialised between our read and our pending write.

        The enrich stage writes meta before it reads pending:{item}; we write pending:{item}
        before this check. Whichever runs second sees the other's write, so no click waits
        forever.
        """
        if not content_ids:
            return []
        r = redis_client()
        k = keys()
        exists = await r.mget([k.meta(c) for c in content_ids])
        arrived = [c for c, m in zip(content_ids, exists, strict=True) if m]
        if not arrived:
            return []
        async with r.pipeline(transaction=True) as pipe:
            for cid in arrived:
                pipe.smembers(k.pending_users(cid))
                pipe.delete(k.pending_users(cid))
            got = await pipe.execute()
        enc = codec("ReaderEvent").encode
        now = datetime.now(UTC)
        out: list[Awaitable[Any]] = []
        for cid, members in zip(arrived, got[0::2], strict=True):
            for raw_user in sorted(members):
                user = raw_user.decode()
                value = enc(
                    {
                        "event_id": make_event_id("resolve", user, cid),
                        "type": "resolve",
                        "user_id": user,
                        "content_id": cid,
                        "occurred_at": now,
                        "origin": "live",
                    }
                )
                out.append(await self.send(TOPIC, raw_user, value))
        return out

    async def apply_batch(
        self, batch: dict[int, Sequence[RecordLike]]
    ) -> tuple[list[BatchResult], list[Awaitable[Any]]]:
        """Apply several partitions' records (partition -> records in offset order)."""
        results: list[BatchResult] = []
        deliveries: list[Awaitable[Any]] = []
        for partition in sorted(batch):
            res, dels = await self.apply_partition(partition, batch[partition])
            results.append(res)
            deliveries += dels
        self.last_batch_at = time.monotonic()
        return results, deliveries

    async def refresh_feeds(
        self, partitions: Sequence[int], batch_moved: Callable[[], bool]
    ) -> int:
        """Re-rank active users of ``partitions`` after item stats moved or items were removed.

        Runs when the consumer is idle; stops early when ``batch_moved()`` says new records
        arrived (they come first). What is re-ranked (docs/ranking.md, "Fan-out on write"):

        * item stats moved since the partition's mark: every active user (engagement drifts
          for everyone; kept for convergence of the sample, not the design at scale);
        * only the catalogue moved: *new* items reached their audience by fan-out on write, so
          nobody is re-ranked for them; items *removed* (unpublished) since the last full pass
          are taken out of the stored feeds that hold them (only those users are re-ranked).

        Users whose profile expired are dropped from the active set; audience-set members
        older than ``profiles.ttl_days`` are trimmed (at most every :data:`AUDIENCE_TRIM_S`).
        Marks each finished partition with ``"catalogue_version:stats_version"``.
        """
        from streams.feeds import rank_and_store

        r = redis_client()
        k = keys()
        await self._trim_audience()
        version = CATALOGUE.version
        await CATALOGUE.refresh()
        if CATALOGUE.version != version:
            return 0  # the catalogue is still moving: wait for it to settle
        mark = f"{CATALOGUE.version}:{CATALOGUE.stats_version}"
        removed = set(CATALOGUE.removed)
        written = 0
        for partition in partitions:
            done = await r.get(k.feeds_refreshed(partition))
            if done is not None and as_str(done) == mark:
                continue
            stats_moved = done is None or as_str(done).split(":")[-1] != str(
                CATALOGUE.stats_version
            )
            if not stats_moved and not removed:  # only additions: fan-out on write has them
                await r.set(k.feeds_refreshed(partition), mark)
                continue
            users = [as_str(u) for u in await r.zrange(k.active(partition), 0, -1)]
            for i in range(0, len(users), REFRESH_CHUNK):
                if batch_moved():
                    return written
                chunk = users[i : i + REFRESH_CHUNK]
                alive = await r.mget([k.profile(u) for u in chunk])
                gone = [u for u, p in zip(chunk, alive, strict=True) if p is None]
                if gone:
                    await r.zrem(k.active(partition), *gone)
                todo = [u for u, p in zip(chunk, alive, strict=True) if p is not None]
                if not stats_moved:
                    todo = await _feeds_holding(todo, removed)
                written += await rank_and_store(todo, partition, publish=False)
            await r.set(k.feeds_refreshed(partition), mark)
        CATALOGUE.removed -= removed
        return written

    async def _trim_audience(self) -> int:
        """Drop audience-set members registered more than ``profiles.ttl_days`` ago (their
        profile has expired or is about to: the same wall clock); at most every
        :data:`AUDIENCE_TRIM_S`. Returns the members removed."""
        now = time.monotonic()
        if now - self.trimmed_at < AUDIENCE_TRIM_S:
            return 0
        self.trimmed_at = now
        r = redis_client()
        k = keys()
        cutoff = time.time() * 1000 - topology().profiles.ttl_days * DAY_MS
        names = [as_str(x) async for x in r.scan_iter(match=k.audience("*", "*"), count=1000)]
        removed = 0
        for lo in range(0, len(names), 500):
            async with r.pipeline(transaction=False) as pipe:
                for name in names[lo : lo + 500]:
                    pipe.zremrangebyscore(name, "-inf", f"({cutoff}")
                removed += sum(int(x) for x in await pipe.execute())
        return removed


async def _feeds_holding(users: list[str], content_ids: set[str]) -> list[str]:
    """The users of ``users`` whose stored feed lists one of ``content_ids``."""
    if not users or not content_ids:
        return []
    k = keys()
    r = redis_client()
    raws = await r.mget([*(k.feed(u) for u in users), k.item_gen()])
    ITEMS.sync(raws.pop())  # interned feeds name item ordinals (feedpipe/store/interning.py)
    await resolve(r, stored_ordinals(raws))
    out = []
    for u, raw in zip(users, raws, strict=True):
        if raw is None:
            continue
        try:
            items = decode_feed(raw).get("items") or []
        except ValueError:  # FeedFormatError: unreadable, re-ranked anyway
            out.append(u)
            continue
        if any(it.get("content_id") in content_ids for it in items):
            out.append(u)
    return out


async def held_partitions(
    consumer: Any, got: Mapping[Any, Sequence[RecordLike]], log_start: dict[int, int]
) -> set[Any]:
    """The partitions of a ``getmany`` result the click path must not apply now (one MGET;
    ``beginning_offsets`` only for partitions without a watermark):

    * a ``feedpipe rebuild`` replays the partition (``fp:rebuild:reader.events:{p}`` present;
      ops/rebuild.py): applying newer records first would move the watermark past the
      records the rebuild has not replayed yet, which it would then skip;
    * the partition's watermark is missing although the log holds records older than the
      batch: Redis lost its state (FLUSHALL, a new empty instance). Applying the batch to empty
      profiles would build wrong ones; the partition waits for a rebuild. (A new deployment
      starts at the log start and is not held.)

    ``log_start`` (partition -> log start offset) is updated with the offsets it looked up.
    """
    if not got:
        return set()
    r = redis_client()
    k = keys()
    tps = list(got)
    vals = await r.mget(
        [k.watermark(STAGE, TOPIC, tp.partition) for tp in tps]
        + [k.rebuilding(TOPIC, tp.partition) for tp in tps]
    )
    n = len(tps)
    missing = [tp for tp, wm in zip(tps, vals[:n], strict=True) if wm is None]
    starts = await consumer.beginning_offsets(missing) if missing else {}
    log_start.update({tp.partition: off for tp, off in starts.items()})
    held = set()
    for tp, wm, rebuilding in zip(tps, vals[:n], vals[n:], strict=True):
        if rebuilding is not None or (wm is None and got[tp][0].offset > starts[tp]):
            held.add(tp)
    return held


async def run_consumer(
    bootstrap: str,
    group: str,
    stop: asyncio.Event,
    *,
    publish: bool = True,
    on_batch: Callable[[list[BatchResult], float], None] | None = None,
    producer_client: str = "librdkafka",
) -> None:
    """The click path's consume-apply-commit loop until ``stop`` is set.

    aiokafka consumer (group ``group``, manual commits, earliest offsets) and an idempotent
    producer (acks=all): ``producer_client`` ``"librdkafka"`` (default,
    :class:`streams.delivery.AsyncProducer`, confluent-kafka) or ``"aiokafka"``
    (``AIOKafkaProducer``; kept for ``bench/bench_clicks.py``, which measures both). Each
    ``getmany`` batch is applied per partition, its output records' deliveries awaited (a
    failed delivery raises: nothing is committed), then its offsets committed.
    ``on_batch(results, seconds)`` is called after each batch (metrics, benchmark).
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.delivery import AsyncProducer

    security = settings().aiokafka_config()  # TLS / SASL of the settings (empty: plaintext)
    consumer = AIOKafkaConsumer(
        TOPIC,
        **security,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    producer: AIOKafkaProducer | AsyncProducer
    if producer_client == "aiokafka":
        producer = AIOKafkaProducer(
            **security,
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )
    elif producer_client == "librdkafka":
        producer = AsyncProducer(bootstrap)  # same acks=all + idempotence, C send path
    else:
        raise ValueError(f"unknown producer client {producer_client!r}")
    await producer.start()
    await consumer.start()

    if isinstance(producer, AsyncProducer):
        send: Send = producer.send
    else:
        aio = producer

        async def send(topic_name: str, key: bytes, value: bytes | None) -> Awaitable[Any]:
            return await aio.send(topic_name, key=key, value=value)

    path = ClickPath(send, publish=publish, strict=True)
    held_logged = 0.0
    try:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            held = await until_redis_answers(
                "clickpath: hold", held_partitions, consumer, got, path.log_start
            )
            if held:
                # a rebuild replays these partitions, or their Redis state is gone: apply
                # nothing there (fetch the same records again later) until it is rebuilt
                for tp in held:
                    consumer.seek(tp, got[tp][0].offset)
                got = {tp: recs for tp, recs in got.items() if tp not in held}
                if time.monotonic() - held_logged > 30:
                    held_logged = time.monotonic()
                    log.warning(
                        "clickpath: holding %s of %s: a rebuild runs, or Redis lost their state "
                        "(watermark missing while the log has older records): run "
                        "`feedpipe rebuild`", sorted(tp.partition for tp in held), TOPIC,
                    )
                if not got:
                    await asyncio.sleep(1.0)
                    continue
            if not got:
                if time.monotonic() - path.last_batch_at >= REFRESH_IDLE_S:
                    # runs between getmany calls: a long refresh delays new records by at most
                    # one chunk (REFRESH_CHUNK users) after stop is set
                    parts = sorted(tp.partition for tp in consumer.assignment())
                    await until_redis_answers(
                        "clickpath: refresh", path.refresh_feeds, parts, stop.is_set
                    )
                    path.last_batch_at = time.monotonic()
                continue
            t0 = time.perf_counter()
            batch = {tp.partition: recs for tp, recs in got.items()}
            # a batch that failed on a Redis outage is applied again once Redis answers: the
            # offset watermark skips the partitions (and records) already applied
            try:
                results, deliveries = await until_redis_answers(
                    "clickpath: apply batch", path.apply_batch, batch
                )
            except StateLost as lost:
                log.warning("clickpath: %s; holding the batch", lost)
                for tp, recs in got.items():  # fetched again; the hold check decides then
                    consumer.seek(tp, recs[0].offset)
                continue
            if deliveries:
                await asyncio.gather(*deliveries)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in got.items()})
            seconds = time.perf_counter() - t0
            n = sum(res.records for res in results)
            metrics.observe_batch(STAGE, n, seconds)
            metrics.observe_events_in(STAGE, n)
            for res in results:
                if res.dead_letters:
                    metrics.observe_dlq(STAGE, "rejected")
            if on_batch is not None:
                on_batch(results, seconds)
    finally:
        await consumer.stop()
        await producer.stop()


# -- inside the Faust worker ----------------------------------------------------------------

from mode import Service  # noqa: E402

from feedpipe.settings import settings  # noqa: E402
from streams.app import app  # noqa: E402

FAUST_STAGES = ("profiles", "feeds")  # the per-event agents this path replaces


def batch_mode() -> bool:
    """True when topology ``profiles.click_path`` is ``batch`` (the default)."""
    return True


@app.on_worker_init.connect  # type: ignore[arg-type]
def _drop_per_event_agents(sender: Any, **_: Any) -> None:
    """In batch mode, the worker does not start the per-event profiles and feeds agents (they
    stay registered: ``agent.test_context()`` and ``click_path: faust`` still use them)."""
    if batch_mode():
        for name in FAUST_STAGES:
            app.agents.pop(name, None)


@app.service
class ClickPathService(Service):
    """Runs :func:`run_consumer` in the worker process while the worker runs (batch mode)."""

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    async def on_start(self) -> None:
        """Start the consume loop (batch mode only)."""
        if not batch_mode():
            return
        s = settings()
        self._stop.clear()
        self._task = asyncio.ensure_future(
            run_consumer(s.kafka_bootstrap, consumer_group(s.app_id), self._stop)
        )
        self._task.add_done_callback(_log_exit)

    async def on_stop(self) -> None:
        """Finish the current batch, commit, close the consumer and producer."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=15)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception:  # already logged by _log_exit
                pass


_CRASHES: set[asyncio.Future[None]] = set()  # keeps the crash task referenced until it runs


def _log_exit(task: asyncio.Future[None]) -> None:
    """An unexpected exception out of the consume loop crashes the worker (fail loudly: a
    worker without its click path would look alive while no reader event is applied; its
    supervisor restarts it and the watermark makes the restart exact)."""
    exc = task.exception() if not task.cancelled() else None
    if exc is not None:
        log.error("clickpath: consumer loop failed; crashing the worker", exc_info=exc)
        _CRASHES.add(asyncio.ensure_future(app.crash(exc)))
