"""Storage of the per-partition families of the click path: ``watermark``, ``active``,
``feeds_refreshed`` and ``rebuilding`` (docs/redis-keys.md).

All keys of partition N carry its hash tag ``{p<N>}`` (feedpipe/store/keys.py), the slot of the
partition transaction.

* ``fp:{p<N>}:wm:{stage}:{topic}``: the last offset whose effects are applied; set in the
  partition transaction (:func:`queue_watermark`), WATCHed by it (the exactly-once guard);
* ``fp:{p<N>}:active``: users of a partition with a stored feed, by last_seen
  (:func:`queue_active`, :func:`queue_inactive`; read by the idle refresher);
* ``fp:{p<N>}:feeds:refreshed``: ``"catalogue_version:stats_version"`` the partition's
  feeds reflect (:func:`mark_refreshed`);
* ``fp:{p<N>}:rebuild:{topic}``: set by ``feedpipe rebuild`` while it replays that
  partition (:func:`hold`, :func:`release`); the live click path applies nothing there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from feedpipe.store.client import mget
from feedpipe.store.keys import keys


def queue_watermark(pipe: Any, stage: str, topic: str, partition: int, offset: int) -> None:
    """Queue the SET of the partition's offset watermark."""
    pipe.set(keys().watermark(stage, topic, partition), offset)


def queue_active(pipe: Any, partition: int, last_seen: Mapping[str, float]) -> None:
    """Queue ZADD of user -> last_seen ms to the partition's active set."""
    if last_seen:
        pipe.zadd(keys().active(partition), dict(last_seen))


def queue_inactive(pipe: Any, partition: int, user_id: str) -> None:
    """Queue the removal of ``user_id`` from the partition's active set."""
    pipe.zrem(keys().active(partition), user_id)


async def active_users(r: Any, partition: int) -> list[str]:
    """The users of the partition's active set (by last_seen)."""
    got = await r.zrange(keys().active(partition), 0, -1)
    return [x.decode() if isinstance(x, bytes) else str(x) for x in got]


async def drop_inactive(r: Any, partition: int, users: Sequence[str]) -> None:
    """Remove ``users`` (their profile expired) from the partition's active set."""
    if users:
        await r.zrem(keys().active(partition), *users)


async def refreshed(r: Any, partition: int) -> str | None:
    """The partition's refresh mark, or None."""
    raw = await r.get(keys().feeds_refreshed(partition))
    return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)


async def mark_refreshed(r: Any, partition: int, mark: str) -> None:
    """Set the partition's refresh mark."""
    await r.set(keys().feeds_refreshed(partition), mark)


async def hold(r: Any, topic: str, partitions: Iterable[int], since: str) -> None:
    """Set the rebuild hold of ``partitions`` of ``topic`` (value: when it started)."""
    k = keys()
    async with r.pipeline(transaction=False) as pipe:
        for p in partitions:
            pipe.set(k.rebuilding(topic, p), since)
        await pipe.execute()


async def release(r: Any, topic: str, partitions: Iterable[int]) -> None:
    """Delete the rebuild holds of ``partitions`` of ``topic``."""
    k = keys()
    await r.delete(*[k.rebuilding(topic, p) for p in partitions])


async def watermarks_and_holds(
    r: Any, stage: str, topic: str, partitions: Sequence[int]
) -> tuple[list[Any], list[Any]]:
    """(watermark, rebuild hold) raw values of ``partitions``, one MGET (one per slot on a
    cluster)."""
    k = keys()
    vals = await mget(
        r,
        [k.watermark(stage, topic, p) for p in partitions]
        + [k.rebuilding(topic, p) for p in partitions]
    )
    n = len(partitions)
    return vals[:n], vals[n:]
