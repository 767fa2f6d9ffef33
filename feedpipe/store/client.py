"""Redis client construction for a single Redis or a Redis Cluster (``FEEDPIPE_REDIS_CLUSTER``),
and the few reads whose form differs between the two.

A single Redis: ``redis.Redis`` / ``redis.asyncio.Redis``. A cluster: redis-py's
``RedisCluster`` (sync and asyncio), which routes each command by its keys' slot, runs a
``pipeline(transaction=True)`` (WATCH, MULTI/EXEC) on one slot only and an ``EVAL`` on the slot
of its keys (redis-py docs, "Clustering"; Redis Cluster specification). The key layout keeps
every transaction and script on one slot (feedpipe/store/keys.py). A multi-key read across
slots (an ``MGET`` of several users' profiles) goes through :func:`mget`, which splits it per
slot on a cluster (``mget_nonatomic``) and stays one ``MGET`` on a single Redis.

The asyncio clients pack commands with hiredis (:class:`HiredisConnection`): redis-py's
asyncio connection packs every argument in Python, its blocking one already uses
``hiredis.pack_command``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from feedpipe.settings import settings

_PLAIN = frozenset((bytes, str, int, float))
"""Argument types ``hiredis.pack_command`` packs as redis-py's ``Encoder`` does (str as UTF-8,
int and float as their ``repr``); anything else (bool, bytearray, memoryview, None, other
types) goes through redis-py's own packer, which encodes or rejects it."""


class HiredisConnection(aioredis.Connection):
    """An asyncio TCP connection whose ``pack_command`` is ``hiredis.pack_command`` (C),
    modelled on redis-py's ``HiredisRespSerializer`` (redis/connection.py, the blocking
    client's packer): the first argument split on spaces (``"CONFIG GET"``), then one buffer.

    A command with an argument outside :data:`_PLAIN`, or a client whose encoding is not
    strict UTF-8, is packed by redis-py's ``Connection.pack_command`` (same bytes on the wire;
    ``redis.exceptions.DataError`` for an argument neither accepts).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """The RESP bytes of one command (a one-element list, as redis-py's packer returns)."""
        enc = self.encoder
        if (
            not args
            or not _PLAIN.issuperset(map(type, args))
            or enc.encoding not in ("utf-8", "utf8")
            or enc.encoding_errors != "strict"
        ):
            return super().pack_command(*args)
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class _HiredisCluster(AsyncRedisCluster):
    """``redis.asyncio.cluster.RedisCluster`` whose nodes' connections are
    :class:`HiredisConnection` (its constructor has no ``connection_class`` argument: the
    class goes into the ``connection_kwargs`` its nodes manager creates nodes with, and into the
    startup nodes, before any connection is opened). A TLS cluster keeps redis-py's class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.connection_kwargs.get("connection_class") is aioredis.Connection:
            self.connection_kwargs["connection_class"] = HiredisConnection
            self.nodes_manager.connection_kwargs["connection_class"] = HiredisConnection
            nodes = [*self.startup_nodes, *self.nodes_manager.startup_nodes.values()]
            for node in nodes:
                node.connection_class = HiredisConnection


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
        (False, True): _HiredisCluster,
        (False, False): aioredis.Redis,
    }
    if not blocking and not use_cluster:
        # a rediss:// or unix:// URL sets its own connection class (it wins over this one)
        kw.setdefault("connection_class", HiredisConnection)
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
