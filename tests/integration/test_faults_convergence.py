"""The fault suite's convergence wait (ops/faults/reads.py ``wait_feeds_converged``) reads every
partition's refresh mark in one batch, on a single Redis and on a Redis Cluster (three local
masters): no GET per partition, MGETs only (one per slot on the cluster, in one pipeline per
node), counted by the servers' own ``INFO commandstats``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from feedpipe import settings as settings_module
from feedpipe.store.client import is_cluster, sync_client
from feedpipe.store.keys import keys
from feedpipe.topology import topology
from ops.faults.reads import wait_feeds_converged

pytestmark = pytest.mark.integration


def _nodes(r: Any) -> list[Any]:
    if is_cluster(r):
        return [n.redis_connection for n in r.get_nodes()]
    return [r]


def _calls(r: Any, command: str) -> int:
    total = 0
    for node in _nodes(r):
        stats = node.info("commandstats").get(f"cmdstat_{command}")
        total += int(stats["calls"]) if stats else 0
    return total


@pytest.fixture(params=["single", "cluster"])
def redis_of(request: pytest.FixtureRequest) -> Iterator[tuple[str, bool]]:
    if request.param == "single":
        url = request.getfixturevalue("redis_url")
        yield url, bool(settings_module.settings().redis_cluster)
        return
    url = request.getfixturevalue("redis_cluster_url")
    mp = pytest.MonkeyPatch()
    mp.setenv("FEEDPIPE_REDIS_CLUSTER", "1")
    settings_module.settings.cache_clear()
    try:
        yield url, True
    finally:
        mp.undo()
        settings_module.settings.cache_clear()


def test_each_poll_reads_all_partitions_in_one_batch(redis_of: tuple[str, bool]) -> None:
    url, cluster = redis_of
    r = sync_client(url, cluster=cluster)
    k = keys()
    topo = topology()
    parts = range(topo.topics[topo.stages["clickpath"].input].partitions)
    assert len(parts) >= 2
    written = [k.catalogue_version(), *(k.stats_version(p) for p in parts),
               *(k.feeds_refreshed(p) for p in parts)]
    before = {n: r.get(n) for n in written}  # the session's Redis: restored afterwards
    try:
        r.set(k.catalogue_version(), 7)
        for p in parts:
            r.set(k.stats_version(p), 1)
        for p in parts:
            r.set(k.feeds_refreshed(p), f"7:{len(parts)}")
        gets, mgets = _calls(r, "get"), _calls(r, "mget")
        wait_feeds_converged(url, timeout_s=10)  # converged: returns after its first poll
        assert _calls(r, "get") == gets  # no GET per partition
        slots = len({r.keyslot(n) for n in written}) if cluster else 1
        assert 1 <= _calls(r, "mget") - mgets <= slots
        r.set(k.feeds_refreshed(parts[-1]), "6:0")  # one partition behind: not converged
        with pytest.raises(TimeoutError):
            wait_feeds_converged(url, timeout_s=1)
    finally:
        for name, value in before.items():  # one by one: the keys live in several slots
            if value is None:
                r.delete(name)
            else:
                r.set(name, value)
