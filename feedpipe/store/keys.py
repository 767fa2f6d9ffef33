"""The Redis key layout, built from topology.yaml ``redis.keys`` (spec: docs/redis-keys.md).

Every Redis key feedpipe reads or writes is made here; no other module formats key strings.
User ids and content ids are validated before they become part of a key
(:func:`safe_id`), so a request path can never address another key.
"""

from __future__ import annotations

import re
from functools import cache

from feedpipe.topology import Topology, topology

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def safe_id(value: str) -> str:
    """Return ``value`` if it is a safe key part (1-128 of ``[A-Za-z0-9_.-]``).

    Raises:
        ValueError: the value is empty, too long or has other characters (e.g. ':' or '*').
    """
    if not _SAFE.fullmatch(value):  # not match: '$' accepts a trailing newline
        raise ValueError(f"invalid id {value[:40]!r}: expected 1-128 chars of [A-Za-z0-9_.-]")
    return value


class Keys:
    """Key builder for one topology (``keys()`` gives the repository's)."""

    def __init__(self, topo: Topology) -> None:
        self.prefix = topo.redis.prefix
        self._t = topo.redis.keys

    def _fmt(self, name: str, **parts: object) -> str:
        return self._t[name].format(prefix=self.prefix, **parts)

    def content(self, content_id: str) -> str:
        """String: JSON of the enriched content."""
        return self._fmt("content", content_id=content_id)

    def catalogue(self, brand: str) -> str:
        """Zset: content_id -> published_at (ms; first-seen time when unknown)."""
        return self._fmt("catalogue", brand=brand)

    def catalogue_version(self) -> str:
        """Int: bumped on every catalogue change."""
        return self._fmt("catalogue_version")

    def profile(self, user_id: str) -> str:
        """String: JSON of the user's profile."""
        return self._fmt("profile", user_id=user_id)

    def feed(self, user_id: str) -> str:
        """String: JSON of the user's ranked feed."""
        return self._fmt("feed", user_id=user_id)

    def trending(self, brand: str, epoch: int) -> str:
        """Zset: content_id -> forward-decayed click weight within ``epoch``."""
        return self._fmt("trending", brand=brand, epoch=epoch)

    def trending_epoch(self, brand: str) -> str:
        """Int: newest trending epoch of ``brand`` (epoch = event ms // trending_epoch_hours)."""
        return self._fmt("trending_epoch", brand=brand)

    def trend_windows(self, epoch: int) -> str:
        """Hash: ``{content_id}:c1|i1|c24|i24`` -> forward-decayed sums of trending-window
        ``epoch`` (feedpipe/model/signals.py)."""
        return self._fmt("trend_windows", epoch=epoch)

    def stats(self, content_id: str) -> str:
        """Hash: impressions, clicks (live events only)."""
        return self._fmt("stats", content_id=content_id)

    def stats_version(self) -> str:
        """Int: bumped by every profiles batch that changed item stats."""
        return self._fmt("stats_version")

    def active(self, partition: int) -> str:
        """Zset: user_id -> last_seen ms, for users of that reader.events partition."""
        return self._fmt("active", partition=partition)

    def watermark(self, stage: str, topic: str, partition: int) -> str:
        """Int: last offset of ``topic``/``partition`` whose effects ``stage`` applied."""
        return self._fmt("watermark", stage=stage, topic=topic, partition=partition)

    def rebuilding(self, topic: str, partition: int) -> str:
        """String (rebuild start time, ISO): present while ``feedpipe rebuild`` replays that
        partition; the live click path holds the partition's batches meanwhile
        (ops/rebuild.py)."""
        return self._fmt("rebuilding", topic=topic, partition=partition)

    def meta(self, content_id: str) -> str:
        """String: JSON of a content item's ranking features (see streams/stages/enrich.py)."""
        return self._fmt("meta", content_id=content_id)

    def pending_users(self, content_id: str) -> str:
        """Set: user ids with a click waiting for ``content_id``."""
        return self._fmt("pending_users", content_id=content_id)

    def feeds_refreshed(self, partition: int) -> str:
        """String: "catalogue_version:stats_version" the partition's feeds were ranked with."""
        return self._fmt("feeds_refreshed", partition=partition)

    def ab_experiments(self) -> str:
        """Set: names of the experiments that have A/B counts."""
        return self._fmt("ab_experiments")

    def ab(self, experiment: str) -> str:
        """Hash: ``{arm}:impressions``, ``{arm}:clicks`` (ints) of one experiment."""
        return self._fmt("ab", experiment=experiment)

    def item_ord(self) -> str:
        """Hash: content_id -> item ordinal (decimal uint32), feedpipe/store/interning.py."""
        return self._fmt("item_ord")

    def item_id(self) -> str:
        """Hash: item ordinal (decimal) -> content_id (the inverse of item_ord)."""
        return self._fmt("item_id")

    def item_gen(self) -> str:
        """String: generation token (decimal uint32) of the item ordinal table."""
        return self._fmt("item_gen")

    def ops_snapshot(self) -> str:
        """String: JSON of the worker's latest ops snapshot (feedpipe/monitoring/snapshot.py)."""
        return self._fmt("ops_snapshot")

    def ops_history(self) -> str:
        """List: compact ops points (JSON), newest first, capped at OPS_HISTORY_LEN."""
        return self._fmt("ops_history")

    def audience(self, brand: str, facet: str) -> str:
        """Zset: user_id -> registration time (wall-clock ms) of the users of ``brand`` whose
        interests hold ``facet`` (``c:{category}`` or ``t:{topic}``), feedpipe/rank/fanout.py."""
        return self._fmt("audience", brand=brand, facet=facet)

    def celebrity(self, brand: str) -> str:
        """Zset: content_id -> published_at ms of ``brand``'s celebrity items (audience too
        large to fan out; merged into feeds at read time)."""
        return self._fmt("celebrity", brand=brand)

    def celebrity_version(self) -> str:
        """Int: bumped by every change of a celebrity set (the read endpoint's cache tag)."""
        return self._fmt("celebrity_version")


@cache
def keys() -> Keys:
    """Key builder of the repository's topology."""
    return Keys(topology())
