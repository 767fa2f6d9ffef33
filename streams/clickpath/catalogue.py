"""The worker's view of the catalogue for ranking, and the feed document it ranks into.

:class:`Catalogue` (one per worker, :data:`CATALOGUE`) caches the candidate matrix
(:class:`feedpipe.model.profile.CandidateMatrix`), the item stats and the trending lists read
from Redis, reloading each when its version key moves (``catalogue_version``,
``stats_version``). :data:`REGISTRY` holds the ranking weights and experiments of topology.yaml,
re-read when the file changes. :func:`feed_json` builds the feed document stored in Redis
(feedpipe/store/feeds.py; its feeds.updated record is
:func:`feedpipe.wire.user_feed.user_feed_record`), :func:`feed_fingerprint` the identity
of a ranked list (a feed is republished only when it moves).
Reads only; state: the in-process caches above.
"""

from __future__ import annotations

import hashlib
import operator
import time
from collections.abc import Mapping, Sequence
from typing import Any

from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.signals import TrendSums, trend_epoch
from feedpipe.rank.candidates import CandidateInputs
from feedpipe.rank.fanout import digest
from feedpipe.rank.weights import WeightsRegistry
from feedpipe.store import content as content_store
from feedpipe.store import stats as stats_store
from feedpipe.store import trends as trends_store
from feedpipe.topology import topology
from feedpipe.wire.ranked import RankedFeed
from streams.runtime import in_thread, redis_client


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
        self.trends: TrendSums = {}
        self.event_ms = 0
        """Newest live event time (epoch ms) counted in the loaded stats (``stats_newest``, read
        with their version): the "now" of the co-read and trending windows. Taken from Redis,
        not from the records this process saw, so every worker ranks a stats version with
        the same windows however the partitions are spread and the events batched."""
        self.batch_ms = 0
        """Newest batch event time passed to :meth:`refresh` (a new epoch forces a reload)."""
        self.stats_loaded_at = 0.0

    async def refresh(self, stats_max_age_s: float = 0.0, event_ms: int | None = None) -> None:
        """Reload metas when catalogue:version moved, and stats when stats:version moved and
        the loaded stats are older than ``stats_max_age_s`` seconds (or when ``event_ms``, the
        newest event time of the caller's batch, entered another trending-window epoch).
        Trending-window sums (``trends``, rows = matrix rows) are read with the stats, for the
        epoch of :attr:`event_ms` (the stats' newest event time) and the one before, while a
        ``learned`` weight set serves."""
        r = redis_client()
        if event_ms is not None and event_ms > self.batch_ms:
            if trend_epoch(event_ms) != trend_epoch(self.batch_ms):
                self.stats_version = None
            self.batch_ms = event_ms
        cat_version, stats_version, newest_ms = await content_store.versions(r)
        if cat_version != self.version:
            brands = sorted(await content_store.brands(r))
            ids, added, celebrities = await content_store.read_catalogue(r, brands)
            if self.version is not None:
                self.removed |= {m.content_id for m in self.matrix.metas} - set(ids)
            self.celebrities = celebrities
            ids = [i for i in ids if i not in celebrities]
            found = await content_store.read_metas(r, ids)
            metas = [Meta.from_json(found[i]) for i in ids if i in found]
            self.matrix = await in_thread(CandidateMatrix, metas, added)
            self.version = cat_version
            self.stats_version = None
        stale = time.monotonic() - self.stats_loaded_at >= stats_max_age_s
        if stats_version != self.stats_version and (stale or self.stats_version is None):
            ids = [m.content_id for m in self.matrix.metas]
            self.stats = await stats_store.read_stats(r, ids)
            self.stats_version = stats_version
            self.event_ms = newest_ms
            self.stats_loaded_at = time.monotonic()
            spec = topology().ranking.candidates
            top = spec.trending_k if spec is not None else 0
            brands = sorted({m.brand for m in self.matrix.metas})
            self.trending = await stats_store.read_trending(r, brands, top)
            # Only a served learned set reads them (the writes always accumulate).
            self.trends = (await trends_store.read_trends(r, ids, self.event_ms)
                           if REGISTRY.current().serves("learned") else {})

    def sources(self) -> CandidateInputs | None:
        """Candidate generation inputs for :func:`feedpipe.rank.rankers.rank_users` (topology
        ``ranking.candidates``; None when it is not configured: every item is scored)."""
        spec = topology().ranking.candidates
        if spec is None:
            return None
        return CandidateInputs(spec, self.trending)


CATALOGUE = Catalogue()
REGISTRY = WeightsRegistry()
"""The worker's weights and experiments (topology.yaml, re-read when the file changes)."""


def feed_json(
    user_id: str,
    profile: dict[str, Any],
    items: Sequence[dict[str, Any]],
    stats_version: int,
    catalogue: Catalogue = CATALOGUE,
    coreads: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The feed document stored in Redis (:mod:`feedpipe.store.feeds`), sent via
    :func:`feedpipe.wire.user_feed.user_feed_record`.

    ``items``: one user's feed from :func:`feedpipe.rank.rankers.rank_feeds` (kept as is: the
    codecs read its columns) or a list of item dicts. Top-level ``ranker``
    is the ranker of the first item (``affinity`` for an empty feed). ``digest``: the user's
    digest for the read-time merge of celebrity items (:func:`feedpipe.rank.fanout.digest`;
    ``coreads``: the user's co-read scores, for the celebrity items' ``coread`` feature).
    """
    topo = topology()
    return {
        "user_id": user_id,
        "profile_version": profile["version"],
        "stats_version": stats_version,
        "catalogue_version": catalogue.version,
        "generated_at": profile.get("last_seen") or 0,
        "ranker": _first_ranker(items),
        "digest": digest(profile, topo.ranking, topo.fanout, catalogue.celebrities, coreads),
        "items": items,
    }


def _first_ranker(items: Sequence[dict[str, Any]]) -> str:
    """The ranker of a feed's first item (``affinity`` for an empty feed)."""
    if isinstance(items, RankedFeed):
        return items.first_ranker() or "affinity"
    return str(items[0].get("ranker", "affinity")) if items else "affinity"


_CONTENT_ID = operator.itemgetter("content_id")
_SERVED = operator.itemgetter("weight_set", "weight_version", "arm")


def feed_fingerprint(items: Sequence[dict[str, Any]]) -> str:
    """16 hex digits (BLAKE2b-64) of a ranked list: item ids in order, and the weight sets,
    versions and arms that ranked it. Scores are left out: they drift with every item-stats
    change, and a feed whose list did not move is not republished. ``items``: item dicts or a
    :class:`feedpipe.wire.ranked.RankedFeed` (read from its columns)."""
    h = hashlib.blake2b(digest_size=8)
    if isinstance(items, RankedFeed):
        h.update("\x1f".join(items.ids).encode())
        used = [items.servings[g] for g in items.first_seen()]
        served = {f"{s.weight_set}@{s.weight_version}/{s.arm}" for s in used}
        h.update("\x1e".join(sorted(served)).encode())
        return h.hexdigest()
    h.update("\x1f".join(map(_CONTENT_ID, items)).encode())
    try:
        triples = set(map(_SERVED, items))
    except KeyError:  # an item without the served fields (absent fields read as None)
        triples = {(it.get("weight_set"), it.get("weight_version"), it.get("arm"))
                   for it in items}
    served = {f"{ws}@{version}/{arm}" for ws, version, arm in triples}
    h.update("\x1e".join(sorted(served)).encode())
    return h.hexdigest()
