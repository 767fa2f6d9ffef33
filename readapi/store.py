"""Every Redis read of the read endpoint, behind one circuit breaker, plus two in-memory views.

All key strings come from :mod:`feedpipe.store.keys`; the storage format of feeds, content and
profiles is decoded only here (:func:`parse_feed`, :func:`content_summary`), so a change of what
the pipeline stores is absorbed in this module.

In-memory views (one API process):

* **Content summaries**, the fields a feed item shows, per content id (``None`` for a vanished
  id). The cache is tagged with ``fp:catalogue:version``, which the enrich stage increments in
  the same MULTI/EXEC as every content write or delete (streams/stages/enrich.py
  ``materialise``); the version is read in the same MGET as the feed, and the whole cache is
  dropped when it moved,
  so a served summary is never older than the catalogue version the request saw. Entries also
  expire after :data:`SUMMARY_TTL_S` and the cache is cleared past :data:`SUMMARY_MAX` ids.
* **Trending snapshots**, the last trending (or latest) list read per brand; served while
  Redis is down or the circuit is open.
* **Interest vectors** of readers for the celebrity merge, per profile version
  (:mod:`readapi.interests`, :meth:`Store.interest`).

Errors: every Redis call goes through :meth:`Store.call`, which raises
:class:`readapi.guards.CircuitOpen` without calling Redis while the circuit is open, and
re-raises ``redis.exceptions.RedisError`` / ``OSError`` / ``TimeoutError`` after counting it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from cachetools import TTLCache
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feedpipe.model.interest import FIELD as INTEREST
from feedpipe.model.interest import interest_of
from feedpipe.model.item import Meta
from feedpipe.rank.fanout import CelebrityCache
from feedpipe.store import stats as stats_store
from feedpipe.store import trends as trends_store
from feedpipe.store.client import mget
from feedpipe.store.feeds import FeedFormatError, decode_feed
from feedpipe.store.interning import ITEMS, resolve
from feedpipe.store.keys import keys
from feedpipe.store.profiles import ProfileFormatError, decode_profile, stored_ordinals
from readapi.guards import CircuitBreaker, CircuitOpen
from readapi.interests import InterestCache, interest_key

Json = dict[str, Any]

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    OSError,
    TimeoutError,
    RedisClusterException,  # a Redis Cluster with no reachable node (not a RedisError)
)
"""What a failed Redis call raises (counted by the breaker)."""
UNAVAILABLE: tuple[type[BaseException], ...] = (CircuitOpen, *REDIS_ERRORS)
"""Redis cannot be used for this request: failed now, or the circuit is open."""
SUMMARY_FIELDS = ("content_id", "title", "summary", "url", "brand", "categories", "published_at")
SUMMARY_TTL_S = 60.0
"""Safety net on top of the catalogue-version tag: no summary is kept longer than this."""
SUMMARY_MAX = 50_000
"""Cached content ids before the cache is cleared (about 1 KB each: ~50 MB at most)."""
SNAPSHOT_BRANDS_MAX = 256
"""Brands whose trending snapshot is kept (default brand and topology brands always)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def parse_feed(raw: bytes | None) -> Json:
    """A stored feed (``fp:feed:{user}``: JSON or the compact binary form, decoded by
    :func:`feedpipe.store.feeds.decode_feed`) -> dict; ``{}`` when missing or unreadable.

    Shape: ``user_id``, ``profile_version``, ``generated_at`` (ms), ``ranker``, ``items``
    [{``content_id``, ``brand``, ``rank``, then explanation fields: ``score``, ``affinity``,
    ``recency``, ``engagement``, ``weights``, and whatever the ranker adds (``ranker``,
    ``weight_version``, ``arm``, ...)}]. A corrupt value reads as no feed (the ladder then
    serves trending) rather than a 5xx.
    """
    if raw is None:
        return {}
    try:
        return decode_feed(raw)
    except FeedFormatError:
        return {}


def content_summary(raw: bytes | None, content_id: str) -> Json | None:
    """The feed-item view of a stored content JSON; ``None`` when missing or unreadable.

    Keys: :data:`SUMMARY_FIELDS`, ``published_at`` as ISO-8601.
    """
    if raw is None:
        return None
    try:
        content = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(content, dict):
        return None
    out: Json = {f: content.get(f) for f in SUMMARY_FIELDS}
    out["content_id"] = content.get("content_id") or content_id
    out["published_at"] = iso_ms(content.get("published_at"))
    return out


PageEntry = tuple[bytes, bytes | None, bytes, str]
"""A rendered page: (stored feed bytes, catalogue version, body, etag)."""


def _entry_bytes(entry: PageEntry) -> int:
    return len(entry[0]) + len(entry[2])


class PageCache(TTLCache[tuple[Any, ...], PageEntry]):
    """Rendered personalised feed pages: a ``cachetools.TTLCache`` sized in bytes (stored feed
    bytes + rendered body per entry, least recently used evicted past ``max_bytes``).

    An entry is keyed by the request's parameters and is valid only while the stored feed
    bytes (compared in full) and the catalogue version are the ones it was rendered from, and
    for at most :data:`SUMMARY_TTL_S` -- the same validity as the content summaries it was
    built from. A hit skips parsing the feed, hydration, serialisation and the ETag hash.

    Args:
        max_bytes: budget for stored feed bytes + rendered bodies (default 64 MiB); a page
            larger than the whole budget is not kept.
    """

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        super().__init__(
            maxsize=max_bytes, ttl=SUMMARY_TTL_S, timer=time.monotonic, getsizeof=_entry_bytes
        )

    def page(self, key: tuple[Any, ...], raw: bytes, version: bytes | None
             ) -> tuple[bytes, str] | None:
        """(body, etag) when an entry for ``key`` was rendered from ``raw`` and ``version``."""
        try:
            hit = self[key]  # one lookup: ``get`` checks expiry twice and can raise between
        except KeyError:
            return None
        if hit[1] != version or hit[0] != raw:
            return None
        return hit[2], hit[3]

    def keep(
        self, key: tuple[Any, ...], raw: bytes, version: bytes | None, body: bytes, etag: str
    ) -> None:
        """Store a rendered page (replacing the key's entry; see the class docstring)."""
        self.pop(key, None)
        entry = (raw, version, body, etag)
        if _entry_bytes(entry) <= self.maxsize:
            self[key] = entry


@dataclass(frozen=True)
class Snapshot:
    """A brand's last-known list: ``source`` "trending" or "latest", ``epoch`` (trending only),
    ``items`` (summaries with ``score``, best first), ``taken_at`` (time.time() s)."""

    brand: str
    source: str
    epoch: int | None
    items: list[Json]
    taken_at: float

    @property
    def taken_at_iso(self) -> str | None:
        """``taken_at`` as an ISO-8601 string (:func:`iso_ms`)."""
        return iso_ms(int(self.taken_at * 1000))


class Store:
    """Redis reads of the read endpoint (see the module docstring).

    Args:
        client: an asyncio Redis client with ``decode_responses=False``.
        breaker: the circuit breaker every call goes through.
        on_error: called with an error kind ("timeout", "connection", "other") per failure.
        interests: the interest-vector cache (default: :class:`readapi.interests.InterestCache`
            with its default bounds).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        breaker: CircuitBreaker,
        on_error: Callable[[str], None] | None = None,
        interests: InterestCache | None = None,
    ) -> None:
        self.client = client
        self.breaker = breaker
        self._on_error = on_error
        self.interests = interests if interests is not None else InterestCache()
        self._summaries: dict[str, Json | None] = {}
        self._summaries_version: bytes | None = None
        self._summaries_at = 0.0
        self.snapshots: dict[str, Snapshot] = {}

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """``await fn(*args, **kwargs)`` through the breaker (see the module docstring)."""
        breaker = self.breaker
        breaker.before_call()
        try:
            result = await fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            breaker.failure(exc)
            if self._on_error is not None:
                kind = (
                    "timeout"
                    if isinstance(exc, RedisTimeoutError | TimeoutError)
                    else "connection"
                    if isinstance(exc, OSError) or "onnect" in type(exc).__name__
                    else "other"
                )
                self._on_error(kind)
            raise
        breaker.success()
        return result

    # -- feeds and content summaries -----------------------------------------------------------

    async def feed_raw(self, user_id: str) -> tuple[bytes | None, bytes | None]:
        """(stored feed bytes or ``None``, catalogue version) in one round trip (MGET, with the
        item-table generation); decode the feed with :func:`parse_feed`. The item ordinals of
        an interned feed that the process has not cached yet are read with one more call
        (:func:`feedpipe.store.interning.resolve`; none in steady state)."""
        k = keys()
        raw, version, gen = await self.call(
            mget, self.client, [k.feed(user_id), k.catalogue_version(), k.item_gen()]
        )
        ITEMS.sync(gen)
        await self._resolve([raw])
        return raw, version

    async def _resolve(self, raws: Sequence[bytes | None]) -> None:
        """Cache the content ids of the item ordinals named by ``raws`` (through the breaker)."""
        ords = stored_ordinals(raws)
        if ords and ITEMS.unknown_ordinals(ords):
            await self.call(resolve, self.client, ords)

    async def catalogue_version(self) -> bytes | None:
        """The current ``fp:catalogue:version`` (raw bytes, ``None`` before the first write)."""
        version: bytes | None = await self.call(self.client.get, keys().catalogue_version())
        return version

    async def summaries(
        self, content_ids: Sequence[str], version: bytes | None
    ) -> list[Json | None]:
        """Summary per id (``None`` where the content vanished), cached under ``version``;
        the ids not cached are read with one MGET."""
        now = time.monotonic()
        cache = self._summaries
        if (
            version != self._summaries_version
            or now - self._summaries_at > SUMMARY_TTL_S
            or len(cache) > SUMMARY_MAX
        ):
            cache.clear()
            self._summaries_version = version
            self._summaries_at = now
        missing = [cid for cid in content_ids if cid not in cache]
        if missing:
            k = keys()
            raws = await self.call(self.client.mget, [k.content(cid) for cid in missing])
            for cid, raw in zip(missing, raws, strict=True):
                cache[cid] = content_summary(raw, cid)
        return [cache[cid] for cid in content_ids]

    # -- celebrity items (read-time merge, feedpipe/rank/fanout.py) ---------------------------

    async def _celebrity_brands(self) -> list[str]:
        k = keys()
        prefix = k.celebrity("")
        skip = k.celebrity_version()
        found = [
            key.decode()
            async for key in self.client.scan_iter(match=prefix + "*", count=1000)
            if key.decode() != skip
        ]
        return sorted(name[len(prefix) :] for name in found)

    async def _celebrity_ids(self, brands: Sequence[str]) -> list[str]:
        """The celebrity content ids of ``brands``, in brand order: one pipeline of ZRANGEs
        (one round trip on a single Redis; on a cluster, one per node holding a key)."""
        if not brands:
            return []
        k = keys()
        pipe = self.client.pipeline(transaction=False)
        for brand in brands:
            pipe.zrange(k.celebrity(brand), 0, -1)
        got = await pipe.execute()
        return [x.decode() for members in got for x in members]

    async def refresh_celebrities(self, cache: CelebrityCache) -> None:
        """Bring ``cache`` up to date: the celebrity items of every brand (ids and metas) when
        ``fp:celebrity:version`` moved (the brands' sets in one pipeline, their metas in one
        MGET), their item stats when ``fp:stats:version`` moved. One MGET when nothing moved;
        called by the endpoint's background loop (about every 1 s), never on the request
        path."""
        k = keys()
        names = [k.celebrity_version(), *(k.stats_version(p) for p in k.partitions())]
        cv, *svs = await self.call(mget, self.client, names)
        sv = str(sum(int(v or 0) for v in svs)).encode()
        if cv != cache.version:
            brands = await self.call(self._celebrity_brands)
            ids = await self.call(self._celebrity_ids, brands)
            raws = await self.call(mget, self.client, [k.meta(i) for i in ids])
            metas = []
            for raw in raws:
                if raw is None:
                    continue
                try:
                    metas.append(Meta.from_json(orjson.loads(raw)))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # an unreadable meta is left out of the merge
            before = cache.gen
            cache.set_items(cv, metas)
            if cache.gen != before:
                cache.stats_version = None  # new items: read their stats now
        if len(cache) and sv != cache.stats_version:
            ids = [m.content_id for m in cache.metas]
            stats = await self.call(stats_store.read_stats, self.client, ids)
            # trending windows at the wall clock's epoch (live events carry about that time)
            trends = await self.call(trends_store.read_trends, self.client, ids,
                                     time.time() * 1000)
            cache.set_stats(sv, stats, trends)

    # -- trending and latest -------------------------------------------------------------------

    async def trending_ids(
        self, brand: str, offset: int, count: int
    ) -> tuple[int | None, list[tuple[str, float]], bytes | None]:
        """(epoch, [(content_id, score)] best first from ``offset``, catalogue version) of the
        brand's newest trending epoch; epoch ``None`` and ``[]`` when it has none."""
        version = await self.catalogue_version()
        epoch, pairs = await self.call(stats_store.trending_page, self.client, brand, offset, count)
        return epoch, pairs, version

    async def latest_ids(self, brand: str, offset: int, count: int) -> list[tuple[str, float]]:
        """[(content_id, published_at ms)] newest first from ``offset`` of the brand's
        catalogue zset."""
        pairs = await self.call(
            self.client.zrevrange, keys().catalogue(brand), offset, offset + count - 1,
            withscores=True,
        )
        return [(m.decode(), float(s)) for m, s in pairs]

    async def ranked_items(
        self, pairs: Sequence[tuple[str, float]], version: bytes | None, limit: int
    ) -> tuple[list[Json], int]:
        """Hydrate ``pairs`` in order, skipping vanished ids, up to ``limit`` items; return
        (items ``{**summary, "score"}``, number of pairs consumed)."""
        sums = await self.summaries([cid for cid, _ in pairs], version)
        items: list[Json] = []
        used = 0
        for (_, score), summary in zip(pairs, sums, strict=True):
            if len(items) >= limit:
                break
            used += 1
            if summary is not None:
                items.append({**summary, "score": score})
        return items, used

    def remember(self, brand: str, source: str, epoch: int | None, items: list[Json]) -> None:
        """Keep ``items`` as the brand's last-known list (bounded number of brands)."""
        if brand not in self.snapshots and len(self.snapshots) >= SNAPSHOT_BRANDS_MAX:
            return
        self.snapshots[brand] = Snapshot(brand, source, epoch, items, time.time())

    async def refresh_snapshot(self, brand: str, size: int) -> Snapshot | None:
        """Read the brand's trending top ``size`` (or its ``size`` newest items when trending is
        empty) and keep it as its snapshot; returns it (``None`` when both are empty)."""
        epoch, pairs, version = await self.trending_ids(brand, 0, size)
        items, _ = await self.ranked_items(pairs, version, size)
        source = "trending"
        if not items:
            epoch, source = None, "latest"
            latest = await self.latest_ids(brand, 0, size)
            items, _ = await self.ranked_items(latest, version, size)
        if not items:
            return None
        self.remember(brand, source, epoch, items)
        return self.snapshots.get(brand)

    # -- single reads --------------------------------------------------------------------------

    async def content(self, content_id: str) -> Json | None:
        """The stored content JSON (times still in ms), or ``None``."""
        raw = await self.call(self.client.get, keys().content(content_id))
        if raw is None:
            return None
        doc = orjson.loads(raw)
        return doc if isinstance(doc, dict) else None

    async def profile(self, user_id: str) -> Json | None:
        """The stored profile JSON, or ``None``."""
        k = keys()
        raw, gen = await self.call(mget, self.client, [k.profile(user_id), k.item_gen()])
        if raw is None:
            return None
        ITEMS.sync(gen)
        await self._resolve([raw])
        try:
            return decode_profile(raw)
        except ProfileFormatError:
            return None

    async def interest(self, user_id: str, feed: Mapping[str, Any]) -> str | None:
        """The reader's interest vector as stored (the profile's ``interest`` value, what
        :func:`feedpipe.rank.fanout.score_celebrities` takes) for the stored ``feed`` just read;
        ``None`` without a profile or a vector, or for an unreadable one (logged and counted by
        :func:`feedpipe.model.interest.interest_of`). Cached per profile version
        (:mod:`readapi.interests`): a hit reads nothing from Redis, a miss reads and decodes the
        profile (:meth:`profile`). Raises what the store raises."""
        key = interest_key(user_id, feed)
        if key is not None:
            try:
                return self.interests[key]
            except KeyError:
                pass  # absent or expired
        profile = await self.profile(user_id)
        stored = profile.get(INTEREST) if profile is not None else None
        value = stored if isinstance(stored, str) and profile and interest_of(profile) else None
        if key is not None:
            self.interests.keep(key, value)
        return value

    async def experiments(self) -> list[str]:
        """Names in any partition's ``fp:{pN}:ab:experiments``, sorted."""
        names: list[str] = await self.call(stats_store.experiments, self.client)
        return names

    async def ab_counts(self, experiment: str) -> Mapping[str, str] | None:
        """The experiment's counters summed over the partitions (field -> value, decoded), or
        ``None`` for an unknown one."""
        counts = await self.call(stats_store.ab_counts, self.client, experiment)
        return None if counts is None else {f: str(n) for f, n in counts.items()}

    async def ping(self) -> None:
        """PING Redis (through the breaker)."""
        await self.call(self.client.ping)
