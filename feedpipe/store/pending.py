"""Storage of the ``pending_users`` family: ``fp:pending:{content_id}``, the users whose clicks
wait for an item that is not materialised yet (docs/redis-keys.md).

Writers: the click path adds (:func:`queue_add`) and removes erased users (:func:`queue_remove`)
inside its partition transaction; whoever releases the waiting clicks (the enrich stage after a
materialise, the click path after its own write) takes the members (:func:`take`: SMEMBERS +
DEL in one MULTI/EXEC, so each waiting user is released once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from feedpipe.store import scripts
from feedpipe.store.keys import keys


def queue_add(pipe: Any, pending: Mapping[str, Iterable[str]]) -> None:
    """Queue SADDs of content_id -> users (one SADD_MANY call)."""
    if not pending:
        return
    k = keys()
    cids = sorted(pending)
    groups = {c: sorted(pending[c]) for c in cids}
    pipe.eval(
        scripts.SADD_MANY,
        len(cids),
        *[k.pending_users(c) for c in cids],
        *[x for c in cids for x in (str(len(groups[c])), *groups[c])],
    )


def queue_remove(pipe: Any, user_id: str, content_ids: Iterable[str]) -> None:
    """Queue the removal of ``user_id`` from the pending sets of ``content_ids``."""
    k = keys()
    for cid in content_ids:
        pipe.srem(k.pending_users(cid), user_id)


async def take(r: Any, content_ids: Sequence[str]) -> list[list[bytes]]:
    """The waiting users of each of ``content_ids`` (sorted), the sets deleted in the same
    MULTI/EXEC."""
    if not content_ids:
        return []
    k = keys()
    async with r.pipeline(transaction=True) as pipe:
        for cid in content_ids:
            pipe.smembers(k.pending_users(cid))
            pipe.delete(k.pending_users(cid))
        res = await pipe.execute()
    return [sorted(users) for users in res[0::2]]
