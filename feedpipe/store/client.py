"""Redis client construction for a single Redis or a Redis Cluster (``FEEDPIPE_REDIS_CLUSTER``),
and the few reads whose form differs between the two.

A single Redis: ``redis.Redis`` / ``redis.asyncio.Redis``. A cluster: redis-py's
``RedisCluster`` (sync and asyncio), which routes each command by its keys' slot, runs a
``pipeline(transaction=True)`` (WATCH, MULTI/EXEC) on one slot only and an ``EVAL`` on the slot
of its keys (redis-py docs, "Clustering"; Redis Cluster specification). The key layout keeps
every transaction and script on one slot (feedpipe/store/keys.py). A multi-key read across
slots (an ``MGET`` of several users' profiles) goes through :func:`mget`, which splits it per
slot on a cluster (``mget_nonatomic``) and stays one ``MGET`` on a single Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from feedpipe.settings import settings


def is_cluster(r: Any) -> bool:
    """True when ``r`` is a (sync or asyncio) Redis Cluster client."""
    return isinstance(r, RedisCluster | AsyncRedisCluster)


def _from_url(blocking: bool, url: str | None, cluster: bool | None, kwargs: Any) -> Any:
    s = settings()
    kw: dict[str, Any] = {"decode_responses": False, **s.redis_kwargs(), **kwargs}
    use_cluster = s.redis_cluster if cluster is None else cluster
    kinds: dict[tuple[bool, bool], Any] = {
        (True, True): RedisCluster,
        (True, False): redis.Redis,
        (False, True): AsyncRedisCluster,
        (False, False): aioredis.Redis,
    }
    return kinds[blocking, use_cluster].from_url(url or s.redis_url, **kw)


def async_client(url: str | None = None, cluster: bool | None = None, **kwargs: Any) -> Any:
    """An asyncio client on ``url`` (default ``settings().redis_url``): ``RedisCluster`` when
    ``cluster`` (default ``settings().redis_cluster``), else ``Redis``; ``kwargs`` (with
    ``settings().redis_kwargs()``) go to ``from_url``. ``decode_responses`` is False unless
    given."""
    return _from_url(False, url, cluster, kwargs)


def sync_client(url: str | None = None, cluster: bool | None = None, **kwargs: Any) -> Any:
    """A blocking client (``redis.cluster.RedisCluster`` or ``redis.Redis``), as
    :func:`async_client`."""
    return _from_url(True, url, cluster, kwargs)


async def mget(r: Any, names: Sequence[str]) -> list[Any]:
    """The values of ``names`` (None where missing), in order: one ``MGET`` on a single Redis,
    one per slot on a cluster (not atomic across slots)."""
    if not names:
        return []
    if is_cluster(r):
        return list(await r.mget_nonatomic(list(names)))
    return list(await r.mget(list(names)))


def mget_sync(r: Any, names: Sequence[str]) -> list[Any]:
    """:func:`mget` for a blocking client."""
    if not names:
        return []
    if is_cluster(r):
        return list(r.mget_nonatomic(list(names)))
    return list(r.mget(list(names)))
