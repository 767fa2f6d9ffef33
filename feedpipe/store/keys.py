"""The Redis key layout, built from topology.yaml ``redis.keys`` (spec: docs/redis-keys.md).

Every Redis key feedpipe reads or writes is made here; no other module formats key strings.
User ids and content ids are validated before they become part of a key
(:func:`safe_id`), so a request path can never address another key.

Hash tags (Redis Cluster): every template has a ``{tag}`` part, filled with a Redis Cluster
hash tag (``{...}``: only that part is hashed to a slot, Redis Cluster specification, "Hash
tags"), so keys written together in one MULTI/EXEC or one Lua script share a slot. A single
Redis ignores the tags. The groups:

* ``{p<N>}``, N a ``reader.events`` partition: the click path's partition transaction.
  Per-user keys (profile, feed, audience entries, pending entries) take the user's partition,
  :meth:`Keys.partition_of` (the Kafka key partitioner, murmur2 of the user id, as feedpipe's
  producers key reader events), so a reader finds them without a scan. Per-partition keys
  (watermark, active, refresh mark, rebuild hold) take their partition. Aggregates over all
  users (item stats, trending, A/B counters, stats version) are sharded: each batch writes its
  partition's shard, readers sum the shards of :meth:`Keys.partitions` (feedpipe/store/stats.py).
* ``{cat}``: the catalogue (content, meta, catalogue, celebrity and their versions), written
  by the enrich stage's batch transaction.
* ``{item}``: the item-ordinal table (one Lua script).
* ``{ops}``: the ops snapshot and history (one MULTI/EXEC).

A new family: add its template (with ``{tag}``) to topology.yaml, and a method here that
passes ``tag=`` one of the groups above: the group of the transaction that writes it (a
per-user key: ``self._user_tag(user_id)``; a key updated by every partition batch: a shard
per partition, ``self._part_tag(partition)``, summed by its reader).
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

from aiokafka.partitioner import murmur2

from feedpipe.topology import Topology, topology

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")

CATALOGUE_TAG = "{cat}"
"""Hash tag of the catalogue group."""
ITEM_TAG = "{item}"
"""Hash tag of the item-ordinal table."""
OPS_TAG = "{ops}"
"""Hash tag of the ops families."""
PARTITIONED_STAGE = "clickpath"
"""The stage whose input topic's partitions tag the click path's keys (topology.yaml)."""


def safe_id(value: str) -> str:
    """Return ``value`` if it is a safe key part (1-128 of ``[A-Za-z0-9_.-]``).

    Raises:
        ValueError: the value is empty, too long or has other characters (e.g. ':' or '*').
    """
    if not _SAFE.fullmatch(value):  # not match: '$' accepts a trailing newline
        raise ValueError(f"invalid id {value[:40]!r}: expected 1-128 chars of [A-Za-z0-9_.-]")
    return value


def key_partition(key: str, partitions: int) -> int:
    """The partition (0..``partitions``-1) Kafka's default key partitioner gives ``key``:
    ``(murmur2(utf-8 key) & 0x7fffffff) % partitions`` (the Java client's
    ``Utils.toPositive(Utils.murmur2(key)) % numPartitions``; librdkafka ``murmur2_random``,
    aiokafka ``DefaultPartitioner``)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class Keys:
    """Key builder for one topology (``keys()`` gives the repository's)."""

    def __init__(self, topo: Topology) -> None:
        self.prefix = topo.redis.prefix
        self._t = topo.redis.keys
        self.n_partitions = topo.topics[topo.stages[PARTITIONED_STAGE].input].partitions
        self._partition_of = lru_cache(maxsize=1 << 16)(self._compute_partition)

    def _fmt(self, name: str, **parts: object) -> str:
        return self._t[name].format(prefix=self.prefix, **parts)

    def _compute_partition(self, user_id: str) -> int:
        return key_partition(user_id, self.n_partitions)

    def partition_of(self, user_id: str) -> int:
        """The reader.events partition of ``user_id`` (:func:`key_partition`; cached)."""
        return self._partition_of(user_id)

    def partitions(self) -> range:
        """Every reader.events partition: the shards an aggregate's reader sums."""
        return range(self.n_partitions)

    @staticmethod
    def _part_tag(partition: int) -> str:
        return f"{{p{partition}}}"

    def _user_tag(self, user_id: str) -> str:
        return f"{{p{self.partition_of(user_id)}}}"

    def content(self, content_id: str) -> str:
        """String: JSON of the enriched content."""
        return self._fmt("content", tag=CATALOGUE_TAG, content_id=content_id)

    def catalogue(self, brand: str) -> str:
        """Zset: content_id -> published_at (ms; first-seen time when unknown)."""
        return self._fmt("catalogue", tag=CATALOGUE_TAG, brand=brand)

    def catalogue_version(self) -> str:
        """Int: bumped on every catalogue change."""
        return self._fmt("catalogue_version", tag=CATALOGUE_TAG)

    def profile(self, user_id: str) -> str:
        """String: the user's profile (tag: the user's partition)."""
        return self._fmt("profile", tag=self._user_tag(user_id), user_id=user_id)

    def feed(self, user_id: str) -> str:
        """String: the user's ranked feed (tag: the user's partition)."""
        return self._fmt("feed", tag=self._user_tag(user_id), user_id=user_id)

    def trending(self, brand: str, epoch: int, partition: int) -> str:
        """Zset: content_id -> forward-decayed click weight within ``epoch``; the shard of
        ``partition`` (the brand's trending is the sum over :meth:`partitions`)."""
        return self._fmt("trending", tag=self._part_tag(partition), brand=brand, epoch=epoch)

    def trending_epoch(self, brand: str, partition: int) -> str:
        """Int: newest trending epoch of ``brand`` in ``partition``'s shard
        (epoch = event ms // trending_epoch_hours)."""
        return self._fmt("trending_epoch", tag=self._part_tag(partition), brand=brand)

    def trend_windows(self, epoch: int, partition: int) -> str:
        """Hash: ``{content_id}:c1|i1|c24|i24`` -> forward-decayed sums of trending-window
        ``epoch`` (feedpipe/model/signals.py) counted by ``partition``'s batches (the item's
        sums are the sum over :meth:`partitions`)."""
        return self._fmt("trend_windows", tag=self._part_tag(partition), epoch=epoch)

    def coreads(self, epoch: int, partition: int) -> str:
        """Hash: content id X -> JSON ``{Y: count}`` of "read X, then Y" counted by
        ``partition``'s batches in trending-window ``epoch`` (at most 50 Y per X;
        feedpipe/store/coreads.py; an item's co-reads are the sum over :meth:`partitions`)."""
        return self._fmt("coreads", tag=self._part_tag(partition), epoch=epoch)

    def stats(self, content_id: str, partition: int) -> str:
        """Hash: impressions, clicks (live events only) counted by ``partition``'s batches
        (the item's stats are the sum over :meth:`partitions`)."""
        return self._fmt("stats", tag=self._part_tag(partition), content_id=content_id)

    def stats_version(self, partition: int) -> str:
        """Int: bumped by every batch of ``partition`` that changed item stats (the stats
        version is the sum over :meth:`partitions`)."""
        return self._fmt("stats_version", tag=self._part_tag(partition))

    def stats_newest(self, partition: int) -> str:
        """Int: the newest live event time (epoch ms) counted in ``partition``'s stats, moved
        forward in the batch that bumps :meth:`stats_version` (the newest event time of the
        stats is the max over :meth:`partitions`)."""
        return self._fmt("stats_newest", tag=self._part_tag(partition))

    def active(self, partition: int) -> str:
        """Zset: user_id -> last_seen ms, for users of that reader.events partition."""
        return self._fmt("active", tag=self._part_tag(partition))

    def watermark(self, stage: str, topic: str, partition: int) -> str:
        """Int: last offset of ``topic``/``partition`` whose effects ``stage`` applied."""
        return self._fmt("watermark", tag=self._part_tag(partition), stage=stage, topic=topic)

    def rebuilding(self, topic: str, partition: int) -> str:
        """String (rebuild start time, ISO): present while ``feedpipe rebuild`` replays that
        partition; the live click path holds the partition's batches meanwhile
        (ops/rebuild.py)."""
        return self._fmt("rebuilding", tag=self._part_tag(partition), topic=topic)

    def meta(self, content_id: str) -> str:
        """String: JSON of a content item's ranking features (see streams/stages/enrich.py)."""
        return self._fmt("meta", tag=CATALOGUE_TAG, content_id=content_id)

    def pending_users(self, content_id: str, partition: int) -> str:
        """Set: user ids of ``partition`` with a click waiting for ``content_id``."""
        return self._fmt("pending_users", tag=self._part_tag(partition), content_id=content_id)

    def feeds_refreshed(self, partition: int) -> str:
        """String: "catalogue_version:stats_version" the partition's feeds were ranked with."""
        return self._fmt("feeds_refreshed", tag=self._part_tag(partition))

    def ab_experiments(self, partition: int) -> str:
        """Set: names of the experiments that have A/B counts in ``partition``'s shard."""
        return self._fmt("ab_experiments", tag=self._part_tag(partition))

    def ab(self, experiment: str, partition: int) -> str:
        """Hash: ``{arm}:impressions``, ``{arm}:clicks`` (ints) of one experiment counted by
        ``partition``'s batches (the counts are the sum over :meth:`partitions`)."""
        return self._fmt("ab", tag=self._part_tag(partition), experiment=experiment)

    def item_ord(self) -> str:
        """Hash: content_id -> item ordinal (decimal uint32), feedpipe/store/interning.py."""
        return self._fmt("item_ord", tag=ITEM_TAG)

    def item_id(self) -> str:
        """Hash: item ordinal (decimal) -> content_id (the inverse of item_ord)."""
        return self._fmt("item_id", tag=ITEM_TAG)

    def item_gen(self) -> str:
        """String: generation token (decimal uint32) of the item ordinal table."""
        return self._fmt("item_gen", tag=ITEM_TAG)

    def ops_snapshot(self) -> str:
        """String: JSON of the worker's latest ops snapshot (feedpipe/monitoring/snapshot.py)."""
        return self._fmt("ops_snapshot", tag=OPS_TAG)

    def ops_history(self) -> str:
        """List: compact ops points (JSON), newest first, capped at OPS_HISTORY_LEN."""
        return self._fmt("ops_history", tag=OPS_TAG)

    def audience(self, brand: str, facet: str, partition: int) -> str:
        """Zset: user_id -> registration time (wall-clock ms) of the users of ``partition``
        (:meth:`partition_of`) and ``brand`` whose interests hold ``facet`` (``c:{category}``
        or ``t:{topic}``), feedpipe/rank/fanout.py; an audience is the union over
        :meth:`partitions`."""
        return self._fmt("audience", tag=self._part_tag(partition), brand=brand, facet=facet)

    def celebrity(self, brand: str) -> str:
        """Zset: content_id -> published_at ms of ``brand``'s celebrity items (audience too
        large to fan out; merged into feeds at read time)."""
        return self._fmt("celebrity", tag=CATALOGUE_TAG, brand=brand)

    def celebrity_version(self) -> str:
        """Int: bumped by every change of a celebrity set (the read endpoint's cache tag)."""
        return self._fmt("celebrity_version", tag=CATALOGUE_TAG)


@cache
def keys() -> Keys:
    """Key builder of the repository's topology."""
    return Keys(topology())
