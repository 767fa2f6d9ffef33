"""Fan-out on write, the celebrity switch and the read-time merge (docs/ranking.md, section
"Fan-out on write and the celebrity switch"; keys in docs/redis-keys.md).

Three parts, all pure except the Lua text run by the callers:

* **Interest (audience) index** (click path): a user's *interests* are the top
  ``fanout.interest_categories`` categories and ``fanout.interest_topics`` topics of the
  decayed affinities (facets ``c:{category}``, ``t:{topic}``). The user is a member of
  ``fp:audience:{brand}:{facet}`` (zset, score = wall-clock ms of the registration) for each
  candidate brand (:func:`feedpipe.rank.candidates.candidate_brands`) and each interest.
  :func:`audience_writes` says what to ZADD / ZREM for a batch's profiles; a registration is
  only rewritten when the interests or brands changed, or when it is older than
  ``fanout.audience_refresh_hours`` (so members idle for ``profiles.ttl_days`` can be trimmed
  by score, the same wall clock as the profile's Redis TTL).
* **Fan-out on write** (enrich): a newly materialised item's audience is the union of its
  brand's facet sets for its categories and topics (feedpipe.store.scripts.AUDIENCE, one
  atomic call that never ships a celebrity-sized member list). Audience <=
  ``fanout.celebrity_audience``: one ``fanout`` reader event per member and enrich batch
  (:func:`fanout_events`, coalesced: a user reached by several items of a batch gets one);
  larger: the item is a *celebrity* (``fp:celebrity:{brand}``), left out of the stored feeds
  and merged at read time.
* **Read-time merge** (read endpoint): the click path stores a small *digest* of the user in the
  feed document (:func:`digest`, < ~200 bytes); the read endpoint scores its cached celebrity
  items for the digest and the user's stored interest vector (read from the profile, not
  copied into the digest: no bytes added per feed) with
  :func:`feedpipe.rank.rankers.rank_users` itself (:func:`score_celebrities`: the same code,
  so the same content similarity, as the stored feeds) and merges them with the stored items
  by score under ``ranking.max_per_category`` (:func:`merge`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feedpipe.ids import event_id as make_event_id
from feedpipe.model.interest import FIELD as INTEREST
from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.profile import affinity_at
from feedpipe.model.signals import TrendSums
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.candidates import candidate_brands, diversify, primary_codes
from feedpipe.rank.rankers import rank_users
from feedpipe.rank.weights import RankingConfig
from feedpipe.store.keys import Keys
from feedpipe.topology import FanoutSpec, RankingSpec

CATEGORY = "c:"
TOPIC = "t:"
REST = "~"
"""Digest key holding the share outside the top labels: it matches no item, so the pseudo
profile normalises back to the stored shares (see :func:`pseudo_profile`)."""
SHARE_DECIMALS = 4
"""Digest shares are rounded to 4 decimals (affinity error <= 0.5 * 3 * 5e-5 per item)."""
READ_PREFIX = 12
"""Hex digits kept of each celebrity item the user read (48 bits: no collision in practice
among a brand's celebrity items; ~15 bytes each in the digest)."""
READ_MAX = 8
"""Celebrity items read kept in the digest (newest first)."""
SOURCE = "celebrity"
"""``source`` of a merged item (in the feed's explain)."""

# -- interests and the audience index ------------------------------------------------------
def top_labels(values: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` labels with the largest positive value, largest first, ties by label."""
    if k <= 0:
        return []
    ranked = sorted([(-v, lab) for lab, v in values.items() if v > 0])  # native tuple order
    return [lab for _, lab in ranked[:k]]


def interests(profile: Mapping[str, Any], spec: FanoutSpec) -> list[str]:
    """The user's interest facets, sorted: ``c:{category}`` for the top
    ``spec.interest_categories`` decayed categories, ``t:{topic}`` for the top
    ``spec.interest_topics`` topics (order by raw decayed value = order by share)."""
    cats = top_labels(profile.get("category_affinity") or {}, spec.interest_categories)
    tops = top_labels(profile.get("topic_affinity") or {}, spec.interest_topics)
    return sorted([CATEGORY + c for c in cats] + [TOPIC + t for t in tops])


@dataclass(slots=True)
class AudienceWrites:
    """Audience-index writes of one batch.

    Attributes:
        add: audience key -> {user_id: score (wall-clock ms)} to ZADD.
        remove: audience key -> user ids to ZREM.
        registered: users whose registration was (re)written.
    """

    add: dict[str, dict[str, float]] = field(default_factory=dict)
    remove: dict[str, list[str]] = field(default_factory=dict)
    registered: int = 0


def audience_writes(
    profiles: Mapping[str, dict[str, Any]],
    ranking: RankingSpec,
    spec: FanoutSpec,
    keys: Keys,
    now_ms: int,
    unchanged: Collection[str] = (),
) -> AudienceWrites:
    """What to write to the audience index for ``profiles`` (user -> profile, mutated).

    Each profile keeps its registration as ``aud = {"b": brands, "f": facets, "at": ms}``.
    It is rewritten (ZADD of every (brand, facet) with score ``now_ms``, ZREM of the pairs no
    longer held) when the brands or facets changed or ``at`` is older than
    ``spec.audience_refresh_hours``; otherwise nothing is written for the user. A profile
    without interests is not registered (and a former registration is removed).

    ``unchanged``: users whose affinities and brands did not move since their registration
    was written (a batch of impressions or fan-outs only: neither touches them). Their
    brands and facets are not recomputed while ``at`` is younger than the refresh age (they
    are the registered ones), nor for an unregistered user without affinities (no interests:
    nothing to register); on the live shape most users of a batch are such users. A
    change of ``fanout.interest_*`` or the ranking's brands reaches them at their next click
    or refresh.
    """
    out = AudienceWrites()
    refresh_ms = spec.audience_refresh_hours * HOUR_MS
    for u, p in profiles.items():
        if u in unchanged:
            aud = p.get("aud")
            if aud:
                if now_ms - float(aud.get("at") or 0) < refresh_ms:
                    continue
            elif not p.get("category_affinity") and not p.get("topic_affinity"):
                continue  # no interests and not registered: nothing to write
        facets = interests(p, spec)
        brands = candidate_brands(p, ranking) if facets else []
        old = p.get("aud") or {}
        old_b, old_f = list(old.get("b") or []), list(old.get("f") or [])
        same = old_b == brands and old_f == facets
        if same and (not facets or now_ms - float(old.get("at") or 0) < refresh_ms):
            continue
        new_pairs = {(b, f) for b in brands for f in facets}
        part = keys.partition_of(u)
        for b in old_b:
            for f in old_f:
                if (b, f) not in new_pairs:
                    out.remove.setdefault(keys.audience(b, f, part), []).append(u)
        for b, f in sorted(new_pairs):
            out.add.setdefault(keys.audience(b, f, part), {})[u] = float(now_ms)
        if facets:
            p["aud"] = {"b": brands, "f": facets, "at": now_ms}
        else:
            p.pop("aud", None)
        out.registered += 1
    return out


def item_facets(meta: Meta) -> list[str]:
    """The facets an item's audience is drawn from: its categories and topics."""
    return sorted({CATEGORY + c for c in meta.categories} | {TOPIC + t for t in meta.topics})


def audience_keys(meta: Meta, keys: Keys) -> list[list[str]]:
    """Per reader.events partition (the audience sets' shards, feedpipe/store/keys.py),
    ``[scratch key, facet set keys...]`` for the AUDIENCE script (feedpipe.store.scripts),
    merged by :func:`feedpipe.store.audience.sizes`."""
    facets = item_facets(meta)
    return [
        [keys.audience(meta.brand, "~scratch:" + meta.content_id, p)]
        + [keys.audience(meta.brand, f, p) for f in facets]
        for p in keys.partitions()
    ]


def parse_audience(reply: Sequence[Any]) -> tuple[int, list[str] | None]:
    """(audience size, members or None when over the threshold) from the AUDIENCE script
    (feedpipe.store.scripts)."""
    size = int(reply[0])
    if len(reply) < 2:
        return size, None
    return size, sorted(m.decode() if isinstance(m, bytes) else str(m) for m in reply[1])


def is_celebrity(audience_size: int, spec: FanoutSpec) -> bool:
    """True when an audience of ``audience_size`` users is too broad to fan out."""
    return audience_size > spec.celebrity_audience


def fanout_events(
    fanout: Mapping[str, tuple[Sequence[str], str]], at: Any
) -> list[dict[str, Any]]:
    """The ``fanout`` ReaderEvents (schemas/reader_event.avsc) of one enrich batch, coalesced:
    **one record per audience user**, however many of the batch's items reach that user.

    The click path re-ranks the user's whole feed on any ``fanout`` record, so one record per
    user has the same effect as one per (item, user) at a fraction of the records and re-ranks
    (a batch of 32 items whose overlapping audiences have ~600 users each would otherwise give
    ~20,000 records).

    Args:
        fanout: content_id -> (audience user ids, content_hash), as
            :func:`streams.stages.enrich.materialise` fills it.
        at: a datetime, the time of the fan-out.

    Returns:
        Records sorted by user id: ``content_id`` = the smallest of the user's items (the
        others are not named); ``event_id`` deterministic in (user, every (item, content
        version) pair of the user): ``sha256("fanout" \\x1f user \\x1f item:hash ...)``, so a
        redelivered enrich batch yields the same ids.
    """
    per_user: dict[str, list[str]] = {}
    for cid in sorted(fanout):
        members, content_hash = fanout[cid]
        for user in members:
            per_user.setdefault(user, []).append(f"{cid}:{content_hash}")
    return [
        {
            "event_id": make_event_id("fanout", user, *pairs),
            "type": "fanout",
            "user_id": user,
            "content_id": pairs[0].split(":", 1)[0],
            "occurred_at": at,
            "origin": "live",
        }
        for user, pairs in sorted(per_user.items())
    ]


# -- the digest (click path) and the pseudo profile (read endpoint) -------------------------
def digest(
    profile: Mapping[str, Any],
    ranking: RankingSpec,
    spec: FanoutSpec,
    celebrities: Iterable[str] = (),
    coreads: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The user digest stored in the feed document (key ``digest``) for the read-time merge.

    ``{"c": {category: share}, "t": {topic: share}, "ls": last_seen ms, "b": [brands],
    "cr": [12-hex prefixes of celebrity items in recent_reads]}``: the top
    ``interest_categories`` / ``interest_topics`` normalised shares
    (:func:`feedpipe.model.profile.affinity_at`) rounded to :data:`SHARE_DECIMALS`, the candidate
    brands (:func:`feedpipe.rank.candidates.candidate_brands`), at most :data:`READ_MAX` read
    celebrity items. ~150-200 bytes as JSON. With ``coreads`` (the user's co-read scores,
    :func:`feedpipe.store.coreads.user_coreads`) ``"co": {12-hex prefix: score}`` holds the
    :data:`READ_MAX` best-scored celebrity items (scores rounded to :data:`SHARE_DECIMALS`):
    the read endpoint has no co-read state and scores them from here (+~25 bytes each).
    """
    shares = affinity_at(profile, 0)
    cats = top_labels(shares["category"], spec.interest_categories)
    tops = top_labels(shares["topic"], spec.interest_topics)
    celeb = set(celebrities)
    read = []
    if celeb:
        for r in profile.get("recent_reads") or []:
            cid = r.get("content_id")
            if cid in celeb and cid[:READ_PREFIX] not in read:
                read.append(cid[:READ_PREFIX])
                if len(read) >= READ_MAX:
                    break
    out: dict[str, Any] = {
        "c": {c: round(shares["category"][c], SHARE_DECIMALS) for c in cats},
        "t": {t: round(shares["topic"][t], SHARE_DECIMALS) for t in tops},
        "ls": profile.get("last_seen") or 0,
        "b": candidate_brands(profile, ranking),
    }
    if read:
        out["cr"] = read
    if celeb and coreads:
        co = sorted(((-v, c) for c, v in coreads.items() if c in celeb and v > 0))[:READ_MAX]
        if co:
            out["co"] = {c[:READ_PREFIX]: round(-v, SHARE_DECIMALS) for v, c in co}
    return out


def digest_coreads(dg: Mapping[str, Any], read_ids: Mapping[str, str]) -> dict[str, float]:
    """The co-read scores of a digest's ``"co"`` (:func:`digest`) by full content id
    (``read_ids``: prefix -> content id); malformed entries are left out."""
    co = dg.get("co") or {}
    if not isinstance(co, Mapping):
        return {}
    out: dict[str, float] = {}
    for pre, v in co.items():
        full = read_ids.get(str(pre))
        if full is not None and isinstance(v, int | float) and v > 0:
            out[full] = float(v)
    return out


def _with_rest(shares: Mapping[str, Any]) -> dict[str, float]:
    out = {str(k): float(v) for k, v in shares.items() if isinstance(v, int | float) and v > 0}
    rest = 1.0 - math.fsum(out.values())
    if out and rest > 0:
        out[REST] = rest
    return out


def pseudo_profile(
    user_id: str,
    dg: Mapping[str, Any],
    read_ids: Mapping[str, str] | None = None,
    interest: str | None = None,
) -> dict[str, Any]:
    """A profile-shaped mapping for :func:`feedpipe.rank.rankers.rank_users` from a digest.

    Category/topic affinities are the digest shares plus the remainder under :data:`REST`
    (a label no item has), so ``affinity_at`` normalises back to the same shares; brands get
    one click each; ``recent_reads`` are the full ids (``read_ids``: prefix -> content id)
    of the read celebrity items; ``interest``: the user's stored interest vector (the
    profile's :data:`feedpipe.model.interest.FIELD` value, as stored) or None (similarity 0).

    Raises:
        ValueError: ``dg`` is not a mapping with the digest's shape.
    """
    if not isinstance(dg, Mapping):
        raise ValueError("feed digest is not an object")
    brands = dg.get("b") or []
    if not isinstance(brands, list):
        raise ValueError("feed digest: 'b' is not a list")
    ls = dg.get("ls") or 0
    if not isinstance(ls, int | float):
        raise ValueError("feed digest: 'ls' is not a number")
    cats, tops = dg.get("c") or {}, dg.get("t") or {}
    if not isinstance(cats, Mapping) or not isinstance(tops, Mapping):
        raise ValueError("feed digest: 'c' / 't' are not objects")
    reads = []
    for pre in dg.get("cr") or []:
        full = (read_ids or {}).get(str(pre))
        if full is not None:
            reads.append({"content_id": full, "at": 0})
    out = {
        "user_id": user_id,
        "category_affinity": _with_rest(cats),
        "topic_affinity": _with_rest(tops),
        "brands": {str(b): 1 for b in brands},
        "last_seen": ls,
        "recent_reads": reads,
    }
    if interest:
        out[INTEREST] = interest
    return out


# -- the read endpoint's celebrity cache and merge ------------------------------------------
class CelebrityCache:
    """The celebrity items of every brand with their ranking features and item stats, as held
    by one read-endpoint process (refreshed from Redis at most every ~1 s by the caller).

    ``gen`` increases whenever what is cached changed (ids, metas or stats of these items):
    it is part of the page-cache key, so a cached page never outlives the celebrity data it
    was merged with.
    """

    def __init__(self) -> None:
        self.version: bytes | None = None
        self.stats_version: bytes | None = None
        self.metas: list[Meta] = []
        self.matrix = CandidateMatrix([])
        self.stats: dict[str, tuple[int, int]] = {}
        self.trends: TrendSums = {}
        self.by_prefix: dict[str, str] = {}
        self.gen = 0
        self._ranking: tuple[int, RankingSpec] | None = None

    def __len__(self) -> int:
        return len(self.metas)

    def set_items(self, version: bytes | None, metas: Sequence[Meta]) -> None:
        """Replace the cached items (``version``: the ``fp:celebrity:version`` they reflect)."""
        self.version = version
        ordered = sorted(metas, key=lambda m: m.content_id)
        if ordered != self.metas:
            self.metas = ordered
            self.matrix = CandidateMatrix(ordered)
            self.by_prefix = {m.content_id[:READ_PREFIX]: m.content_id for m in ordered}
            self.stats = {k: v for k, v in self.stats.items() if k in self.matrix.index}
            self.trends = {}
            self.gen += 1

    def set_stats(self, stats_version: bytes | None, stats: Mapping[str, tuple[int, int]],
                  trends: TrendSums | None = None) -> None:
        """Replace the items' (impressions, clicks) read at ``stats_version``, and their
        trending-window sums (epoch -> (n, 4), rows in :attr:`metas` order,
        :func:`feedpipe.store.trends.read_trends`) when given."""
        self.stats_version = stats_version
        new = dict(stats)
        if new != self.stats:
            self.stats = new
            self.gen += 1
        if trends is not None:
            same = trends.keys() == self.trends.keys() and all(
                np.array_equal(v, self.trends[e]) for e, v in trends.items())
            if not same:
                self.trends = dict(trends)
                self.gen += 1

    def ranking_for(self, ranking: RankingSpec) -> RankingSpec:
        """``ranking`` with feed_size = every cached item and no category cap (scores only;
        :func:`merge` applies the cap to the merged list)."""
        n = max(1, len(self.metas))
        if self._ranking is None or self._ranking[0] != n:
            self._ranking = (n, ranking.model_copy(update={"feed_size": n, "max_per_category": 0}))
        return self._ranking[1]


def score_celebrities(
    user_id: str,
    dg: Mapping[str, Any],
    cache: CelebrityCache,
    ranking: RankingSpec,
    config: RankingConfig,
    interest: str | None = None,
) -> list[dict[str, Any]]:
    """Feed items for the user's celebrity candidates, best first, each with ``source``:
    ``"celebrity"`` and the same explanation fields as stored items.

    Scored by :func:`feedpipe.rank.rankers.rank_users` (the stored feeds' code) over the cached
    celebrity matrix for the digest's :func:`pseudo_profile`, with the cached trending windows,
    the digest's co-read scores (:func:`digest_coreads`) and ``interest``, the user's stored
    interest vector (the profile's ``interest`` value as :func:`feedpipe.store.profiles.
    decode_profile` returns it; None: the ``similarity`` feature is 0), so ``similarity`` is
    the click path's :func:`feedpipe.model.interest.similarity_rows` over the items' text
    vectors. Brands outside the digest's and items the digest lists as read are left out.
    ``config``: the weights in force (:meth:`feedpipe.rank.weights.WeightsRegistry.current`).

    Raises:
        ValueError: a malformed digest (the caller serves the stored feed unmerged).
    """
    if not len(cache):
        return []
    prof = pseudo_profile(user_id, dg, cache.by_prefix, interest)
    (items,) = rank_users(
        [prof], cache.matrix, cache.stats, cache.ranking_for(ranking), config,
        trends=cache.trends or None, coreads=[digest_coreads(dg, cache.by_prefix)],
    )
    for it in items:
        it["source"] = SOURCE
    return items


def merge(
    stored: Sequence[Mapping[str, Any]],
    stored_primary: Sequence[str | None],
    extra: Sequence[Mapping[str, Any]],
    extra_primary: Sequence[str | None],
    feed_size: int,
    per_category: int,
) -> list[dict[str, Any]]:
    """Merge stored feed items and scored celebrity items into one feed.

    All items are ordered by score descending, ties by content id (as
    :func:`feedpipe.rank.rankers.rank_users`), then :func:`feedpipe.rank.candidates.diversify`
    keeps ``feed_size`` with at most ``per_category`` per primary category (the item's first
    category; ``None`` = uncapped): the list :func:`rank_users` would have produced over the
    stored candidates plus the celebrity items. Ranks are renumbered 1..n; stored items keep
    their fields, merged ones carry ``source: "celebrity"``. Items already stored are not
    duplicated.
    """
    have = {str(e.get("content_id")) for e in stored}
    rows: list[Mapping[str, Any]] = list(stored)
    prim: list[str | None] = list(stored_primary)
    for it, p in zip(extra, extra_primary, strict=True):
        if str(it.get("content_id")) not in have:
            rows.append(it)
            prim.append(p)

    def key(i: int) -> tuple[float, str]:
        s = rows[i].get("score")
        score = float(s) if isinstance(s, int | float) else -math.inf
        return (-score, str(rows[i]["content_id"]))

    order = sorted(range(len(rows)), key=key)
    keep = diversify(order, primary_codes(prim), feed_size, per_category)
    return [{**rows[i], "rank": n} for n, i in enumerate(keep, start=1)]
