"""Stage 4, feeds: profile updates -> per-user ranked feeds (top-K with score breakdowns).

input:  profiles.updated (key user_id, value feedpipe.UserProfile), in batches; the record is
        a trigger, the current profile is read from Redis (always the newest state)
output: feeds.updated (compacted; key user_id, value feedpipe.UserFeed), one per user per batch
state:  Redis feed:{user} (JSON), active:{partition} (users with a feed, by last_seen),
        feeds:refreshed:{partition} ("catalogue:stats" versions the partition's feeds reflect)
ranking: feedpipe.rank.rankers.rank_users: per user and brand the weight set of the user's A/B arm
        (feedpipe.rank.experiments) or of the brand (topology.yaml rankers.brands), re-read without
        a restart (WeightsRegistry: a changed topology.yaml applies from the next batch);
        vectorised over a candidate matrix rebuilt when the catalogue version changes. Every
        item carries its score breakdown, ranker, weight set and version, arm and experiment.
guarantees: a feed is written only if its (profile version, stats version) is not older than
        the stored one, so replays never move a feed backwards. Item engagement changes with
        every reader batch; when the stats version moved and the stage is idle, a timer
        re-ranks the feeds of its partitions so feeds converge to the final state.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from faust.types import EventT, StreamT

from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.rank.candidates import CandidateInputs
from feedpipe.rank.fanout import digest
from feedpipe.rank.rankers import rank_users
from feedpipe.rank.weights import WeightsRegistry
from feedpipe.store.feeds import FeedFormatError, decode_feed, encode_feed
from feedpipe.store.interning import ITEMS, intern, resolve
from feedpipe.store.keys import keys
from feedpipe.store.profiles import ProfileFormatError, decode_profile, stored_ordinals
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.app import app, topic
from streams.runtime import as_str, by_partition, in_thread, log, redis_client, take_events

STAGE = "feeds"
BATCH = 2000
WITHIN_S = 0.2
REFRESH_INTERVAL_S = 2.0
REFRESH_CHUNK = 500
STATS_MAX_AGE_S = 1.0  # item stats used by a batch are at most this stale (the timer converges)


_STATS_READ = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'impressions', 'clicks')
  out[2 * i - 1] = v[1] or 0
  out[2 * i] = v[2] or 0
end
return out
"""


class Catalogue:
    """The worker's cached candidate matrix and item stats (rebuilt when their versions move).

    The matrix holds the catalogue minus the celebrity items (``fp:celebrity:{brand}``,
    feedpipe/rank/fanout.py): those are merged into feeds at read time, never stored in them.
    ``celebrities`` are their ids; ``removed`` accumulates ids that left the catalogue between
    two loads (unpublished), for the idle refresher to take out of stored feeds.
    """

    def __init__(self) -> None:
        self.version: int | None = None
        self.matrix = CandidateMatrix([])
        self.celebrities: set[str] = set()
        self.removed: set[str] = set()
        self.stats_version: int | None = None
        self.stats: dict[str, tuple[int, int]] = {}
        self.trending: dict[str, list[str]] = {}
        self.last_batch_at = 0.0
        self.stats_loaded_at = 0.0

    async def refresh(self, stats_max_age_s: float = 0.0) -> None:
        """Reload metas when catalogue:version moved, and stats when stats:version moved and
        the loaded stats are older than ``stats_max_age_s`` seconds."""
        r = redis_client()
        k = keys()
        cv, sv = await r.mget([k.catalogue_version(), k.stats_version()])
        cat_version = int(cv or 0)
        stats_version = int(sv or 0)
        if cat_version != self.version:
            ids: list[str] = []
            added: dict[str, float] = {}  # catalogue score: published, else first materialised
            celebrities: set[str] = set()
            for brand in sorted(await _brands()):
                got: list[Any] = await r.zrange(k.catalogue(brand), 0, -1, withscores=True)
                for x, at in got:
                    ids.append(as_str(x))
                    added[ids[-1]] = float(at)
                celebrities |= {as_str(x) for x in await r.zrange(k.celebrity(brand), 0, -1)}
            if self.version is not None:
                self.removed |= {m.content_id for m in self.matrix.metas} - set(ids)
            self.celebrities = celebrities
            ids = [i for i in ids if i not in celebrities]
            raw = await r.mget([k.meta(i) for i in ids]) if ids else []
            metas = [Meta.from_json(orjson.loads(m)) for m in raw if m]
            self.matrix = await in_thread(CandidateMatrix, metas, added)
            self.version = cat_version
            self.stats_version = None
        stale = time.monotonic() - self.stats_loaded_at >= stats_max_age_s
        if stats_version != self.stats_version and (stale or self.stats_version is None):
            ids = [m.content_id for m in self.matrix.metas]
            flat: list[Any] = []
            for lo in range(0, len(ids), 5000):  # one script call per 5,000 items, not 1 HMGET each
                part = ids[lo : lo + 5000]
                flat += await r.eval(_STATS_READ, len(part), *[k.stats(i) for i in part])
            self.stats = {
                i: (int(flat[2 * n] or 0), int(flat[2 * n + 1] or 0)) for n, i in enumerate(ids)
            }
            self.stats_version = stats_version
            self.stats_loaded_at = time.monotonic()
            self.trending = await _trending(sorted({m.brand for m in self.matrix.metas}))

    def sources(self) -> CandidateInputs | None:
        """Candidate generation inputs for :func:`feedpipe.rank.rankers.rank_users` (topology
        ``ranking.candidates``; None when it is not configured: every item is scored)."""
        spec = topology().ranking.candidates
        if spec is None:
            return None
        return CandidateInputs(spec, self.trending)


async def _trending(brands: list[str]) -> dict[str, list[str]]:
    """brand -> the top ``ranking.candidates.trending_k`` ids of its newest trending epoch
    (``fp:trending:{brand}:{epoch}``, the zsets the click path writes), best first."""
    spec = topology().ranking.candidates
    if spec is None or spec.trending_k <= 0 or not brands:
        return {}
    r = redis_client()
    k = keys()
    epochs = await r.mget([k.trending_epoch(b) for b in brands])
    out: dict[str, list[str]] = {}
    for brand, epoch in zip(brands, epochs, strict=True):
        if epoch is not None:
            got = await r.zrevrange(k.trending(brand, int(epoch)), 0, spec.trending_k - 1)
            out[brand] = [as_str(x) for x in got]
    return out


async def _brands() -> set[str]:
    r = redis_client()
    prefix = keys().catalogue("")
    return {
        as_str(key)[len(prefix) :]
        async for key in r.scan_iter(match=prefix + "*", count=1000)
        if as_str(key) != keys().catalogue_version()
    }


CATALOGUE = Catalogue()
REGISTRY = WeightsRegistry()
"""The worker's weights and experiments (topology.yaml, re-read when the file changes)."""

_AVRO_ITEM = frozenset(
    ("content_id", "brand", "rank", "score", "weights", "ranker", "weight_set",
     "weight_version", "arm", "experiment", "sources")
)
"""Feed item fields that are not score components (``sources``: candidate sources, kept in
Redis and the API's explanation only; not a UserFeed field)."""
_AFFINITY = ("affinity", "recency", "engagement")


def feed_json(
    user_id: str, profile: dict[str, Any], items: list[dict[str, Any]], stats_version: int
) -> dict[str, Any]:
    """The feed document stored in Redis (:mod:`feedpipe.store.feeds`), sent via :func:`avro_feed`.

    ``items``: one user's list from :func:`feedpipe.rank.rankers.rank_users`. Top-level ``ranker``
    is the ranker of the first item (``affinity`` for an empty feed). ``digest``: the user's
    digest for the read-time merge of celebrity items (:func:`feedpipe.rank.fanout.digest`).
    """
    topo = topology()
    return {
        "user_id": user_id,
        "profile_version": profile["version"],
        "stats_version": stats_version,
        "catalogue_version": CATALOGUE.version,
        "generated_at": profile.get("last_seen") or 0,
        "ranker": items[0].get("ranker", "affinity") if items else "affinity",
        "digest": digest(profile, topo.ranking, topo.fanout, CATALOGUE.celebrities),
        "items": items,
    }


def avro_feed(doc: dict[str, Any]) -> dict[str, Any]:
    """A feed document as a feedpipe.UserFeed record (schemas/user_feed.avsc).

    The Avro writer takes each schema field from the dict (a missing field takes its schema
    default, extra keys such as ``stats_version`` are ignored), so the document and its
    affinity-ranker items are passed as they are (no copy: this runs for every feed of every
    batch). Items of other rankers get ``affinity``/``recency``/``engagement`` = 0.0 and their
    components in ``components``.
    """
    items = doc["items"]
    if all("affinity" in it for it in items):
        return doc
    out = []
    for it in items:
        if "affinity" in it:
            out.append(it)
            continue
        comps = {k: it[k] for k in it.keys() - _AVRO_ITEM}
        out.append({**it, "components": comps, **dict.fromkeys(_AFFINITY, 0.0)})
    return {**doc, "items": out}


async def rank_and_store(
    user_ids: list[str], partition: int, publish: bool, stats_max_age_s: float = 0.0
) -> int:
    """Rank ``user_ids`` with the current catalogue and store their feeds; return feeds written."""
    if not user_ids:
        return 0
    r = redis_client()
    k = keys()
    await CATALOGUE.refresh(stats_max_age_s)
    stats_version = CATALOGUE.stats_version or 0
    raw_profiles = await r.mget([*(k.profile(u) for u in user_ids), k.item_gen()])
    ITEMS.sync(raw_profiles.pop())  # item ordinals of compact values (feedpipe/store/interning.py)
    raw_feeds = await r.mget([k.feed(u) for u in user_ids])
    await resolve(r, stored_ordinals([*raw_profiles, *raw_feeds]))
    todo: list[tuple[str, dict[str, Any]]] = []
    for u, rp, rf in zip(user_ids, raw_profiles, raw_feeds, strict=True):
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
    ranked = await in_thread(
        rank_users,
        [p for _, p in todo],
        CATALOGUE.matrix,
        CATALOGUE.stats,
        spec,
        REGISTRY.current(),
        512,
        CATALOGUE.sources(),
    )
    docs = [
        feed_json(u, p, items, stats_version) for (u, p), items in zip(todo, ranked, strict=True)
    ]
    await intern(r, [it["content_id"] for doc in docs for it in doc["items"]])
    async with r.pipeline(transaction=True) as pipe:
        for (u, p), doc in zip(todo, docs, strict=True):
            pipe.set(k.feed(u), encode_feed(doc, spec.feed_format, ITEMS), keepttl=True)
            pipe.zadd(k.active(partition), {u: p.get("last_seen") or 0})
        await pipe.execute()
    if publish:
        out = topic("feeds.updated")
        enc = codec("UserFeed").encode
        for doc in docs:
            await out.send(key=doc["user_id"].encode(), value=enc(avro_feed(doc)))
    return len(docs)


@app.agent(topic("profiles.updated"), name=STAGE)
async def feeds_agent(stream: StreamT[Any]) -> None:
    """Re-rank the feeds of the users whose profiles changed in the batch."""
    async for events in take_events(stream, BATCH, WITHIN_S):
        groups: dict[tuple[str, int], list[EventT]] = by_partition(list(events))
        t0 = time.perf_counter()
        n = 0
        for (_, partition), evs in groups.items():
            users = sorted({as_str(e.message.key) for e in evs if e.message.key})
            n += await rank_and_store(
                users, partition, publish=True, stats_max_age_s=STATS_MAX_AGE_S
            )
        log.debug("feeds: %d events, %d feeds in %.3f s", len(events), n, time.perf_counter() - t0)
        CATALOGUE.last_batch_at = time.monotonic()


@app.timer(interval=REFRESH_INTERVAL_S)
async def refresh_stale_feeds() -> None:
    """When idle and item stats moved, re-rank this worker's active users (converges feeds).

    Per-event (``click_path: faust``) mode only: the batch click path has its own refresher.
    A Redis outage skips the tick (an exception out of a Faust timer crashes the worker).
    """
    from streams.clickpath import batch_mode
    from streams.runtime import REDIS_OUTAGE

    if batch_mode() or time.monotonic() - CATALOGUE.last_batch_at < REFRESH_INTERVAL_S:
        return
    try:
        await _refresh_stale_feeds()
    except REDIS_OUTAGE as exc:
        log.warning("feeds: refresh skipped, Redis unreachable (%s: %s)", type(exc).__name__, exc)


async def _refresh_stale_feeds() -> None:
    r = redis_client()
    k = keys()
    version = CATALOGUE.version
    await CATALOGUE.refresh()
    if CATALOGUE.version != version:
        return  # the catalogue is still moving: wait for it to settle
    mark = f"{CATALOGUE.version}:{CATALOGUE.stats_version}"
    started = CATALOGUE.last_batch_at
    assigned = sorted(
        tp.partition for tp in app.assignor.assigned_actives() if tp.topic == "profiles.updated"
    )
    for partition in assigned:
        done = await r.get(k.feeds_refreshed(partition))
        if done is not None and as_str(done) == mark:
            continue
        users = [as_str(u) for u in await r.zrange(k.active(partition), 0, -1)]
        written = 0
        for i in range(0, len(users), REFRESH_CHUNK):
            if CATALOGUE.last_batch_at != started:
                return  # new profile updates arrived: they come first; resume when idle again
            # refreshed feeds only reflect newer item stats: Redis is updated, and the compacted
            # feeds.updated topic keeps the last feed each profile change produced
            written += await rank_and_store(users[i : i + REFRESH_CHUNK], partition, publish=False)
        await r.set(k.feeds_refreshed(partition), mark)
        log.info(
            "feeds: refreshed %d feeds of partition %d at catalogue:stats %s",
            written,
            partition,
            mark,
        )
