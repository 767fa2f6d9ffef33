"""Storage of the ``pending_users`` family: ``fp:{p<N>}:pending:{content_id}``, the users of
reader.events partition N whose clicks wait for an item that is not materialised yet
(docs/redis-keys.md).

Writers: the click path adds (:func:`queue_add`, with a TTL: ``profiles.pending_ttl_hours``)
and removes erased users and expired clicks (:func:`queue_remove`) inside its partition
transaction, each user in its own partition's set (:meth:`feedpipe.store.keys.Keys.partition_of`,
the slot of that transaction); whoever releases
the waiting clicks (the enrich stage after a materialise, the click path after its own write)
takes the members (:func:`take`: SMEMBERS + DEL of one partition's sets in one script call
per partition, so each waiting user is released once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from feedpipe.store import scripts
from feedpipe.store.keys import keys


def queue_add(pipe: Any, pending: Mapping[str, Iterable[str]], ttl_s: int) -> None:
    """Queue SADDs of content_id -> users, each user to its partition's set, and an EXPIRE of
    ``ttl_s`` seconds on each set written (``profiles.pending_ttl_hours``: a set of an item that
    never arrives goes away; its clicks leave the profiles after the same time in event time,
    to the DLQ, feedpipe.model.profile.apply_events). One SADD_MANY call."""
    if not pending:
        return
    k = keys()
    groups: dict[str, list[str]] = {}
    for cid in sorted(pending):
        for u in sorted(pending[cid]):
            groups.setdefault(k.pending_users(cid, k.partition_of(u)), []).append(u)
    names = sorted(groups)
    pipe.eval(
        scripts.SADD_MANY,
        len(names),
        *names,
        ttl_s,
        *[x for n in names for x in (str(len(groups[n])), *groups[n])],
    )


def queue_remove(pipe: Any, user_id: str, content_ids: Iterable[str]) -> None:
    """Queue the removal of ``user_id`` from the pending sets of ``content_ids``."""
    k = keys()
    part = k.partition_of(user_id)
    for cid in content_ids:
        pipe.srem(k.pending_users(cid, part), user_id)


async def take(r: Any, content_ids: Sequence[str]) -> list[list[bytes]]:
    """The waiting users of each of ``content_ids`` (sorted): each partition's sets read and
    deleted by one TAKE_SETS script call (atomic, one slot), so each user is taken once; the
    partitions' calls in one pipeline."""
    if not content_ids:
        return []
    k = keys()
    async with r.pipeline(transaction=False) as pipe:
        for part in k.partitions():
            names = [k.pending_users(cid, part) for cid in content_ids]
            pipe.eval(scripts.TAKE_SETS, len(names), *names)
        replies = await pipe.execute()
    users: list[set[bytes]] = [set() for _ in content_ids]
    for reply in replies:
        for i, got in enumerate(users):
            got |= set(reply[i])
    return [sorted(u) for u in users]
