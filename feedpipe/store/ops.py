"""Storage of the ops families: ``ops_snapshot`` (the worker's latest ops snapshot, JSON) and
``ops_history`` (a ring of compact points, newest first) (docs/redis-keys.md).

Writer: the worker's ops timer (feedpipe.monitoring.exporter). Reader: the read endpoint's ops
page.
"""

from __future__ import annotations

from typing import Any

import orjson

from feedpipe.store.keys import keys


async def publish(r: Any, snapshot: dict[str, Any], point: dict[str, Any], ring: int) -> None:
    """SET the snapshot and push ``point`` on the ring capped at ``ring`` entries (one
    MULTI/EXEC)."""
    k = keys()
    async with r.pipeline(transaction=True) as pipe:
        pipe.set(k.ops_snapshot(), orjson.dumps(snapshot))
        pipe.lpush(k.ops_history(), orjson.dumps(point))
        pipe.ltrim(k.ops_history(), 0, ring - 1)
        await pipe.execute()
