"""Right to erasure: an ``erase`` reader event removes everything of the user, on real Redis and
real Kafka (the click path, streams/clickpath/)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis
from clickpath_support import T0, Sent, apply, reader, records, seed_catalogue, with_path
from pipeline import consume_all, run_store

from feedpipe.ids import content_id, event_id
from feedpipe.store import stats as stats_store
from feedpipe.store.keys import keys
from feedpipe.store.profiles import read_sync
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration

COMPACTED = ("profiles.updated", "feeds.updated")


def erase(user: str) -> bytes:
    """An erase event for ``user`` (content_id empty: it names no item)."""
    return codec("ReaderEvent").encode(
        {
            "event_id": event_id("erase", user),
            "type": "erase",
            "user_id": user,
            "content_id": "",
            "occurred_at": T0 + timedelta(hours=1),
            "origin": "live",
        }
    )


def _b(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def readable_mentions(r: redis.Redis, needle: bytes) -> list[str]:
    """Every Redis key whose name, string value or members/fields mention ``needle``."""
    found: list[str] = []
    for key in r.scan_iter(count=1000):
        if needle in _b(key):
            found.append(_b(key).decode())
            continue
        kind = r.type(key)
        parts: list[Any]
        if kind == b"string":
            parts = [r.get(key) or b""]
        elif kind == b"set":
            parts = list(r.smembers(key))
        elif kind == b"zset":
            parts = list(r.zrange(key, 0, -1))
        elif kind == b"hash":
            parts = [f for kv in r.hgetall(key).items() for f in kv]
        elif kind == b"list":
            parts = list(r.lrange(key, 0, -1))
        else:
            parts = []
        if any(needle in _b(x) for x in parts):
            found.append(_b(key).decode())
    return found


def last_values(bootstrap: str, topic: str, key: bytes) -> list[bytes | None]:
    """Values of every record of ``topic`` with ``key``, oldest first."""
    return [m.value() for m in consume_all(bootstrap, topic) if m.key() == key]


def test_erase_leaves_nothing_of_the_user_readable(
    kafka_bootstrap: str, topics_applied: Any, redis_client: redis.Redis
) -> None:
    k = keys()
    sports, news = seed_catalogue(redis_client, ["sports", "news"])
    user = f"E{uuid.uuid4().hex[:10]}"
    part = k.partition_of(user)  # the batch is the user's partition, as Kafka routes it
    other = next(
        o for o in (f"O{uuid.uuid4().hex[:10]}" for _ in range(1000)) if k.partition_of(o) == part
    )
    waiting = content_id("clickpath-test", "not-yet")  # a click that waits: pending:{item}
    values = [
        reader(user, "impression", sports, T0),
        reader(user, "click", sports, T0),
        reader(user, "click", waiting, T0 + timedelta(minutes=1)),
        reader(other, "click", news, T0),
    ]

    async def body(path: Any, sent: Sent) -> None:
        await apply(path, records(user, values, 0, part))
        assert readable_mentions(redis_client, user.encode())  # the user is there
        assert redis_client.sismember(k.pending_users(waiting, k.partition_of(user)), user)
        res = await apply(path, records(user, [erase(user)], len(values), part))
        assert res.erased == 1
        # a redelivery of the events before the erase must not bring the user back
        await apply(path, records(user, values, 0, part))

    sent = asyncio.run(with_path(kafka_bootstrap, body))
    assert readable_mentions(redis_client, user.encode()) == []
    assert redis_client.exists(k.profile(other)) and redis_client.exists(k.feed(other))
    # item aggregates without user ids stay: the erased user's live events were counted
    assert run_store(stats_store.read_stats, [sports])[sports][1] == 1
    for topic in COMPACTED:
        vals = last_values(kafka_bootstrap, topic, user.encode())
        assert vals and vals[-1] is None, topic  # the newest record of the key is a tombstone
        assert any(v is not None for v in vals)  # there was state to erase
        assert (topic, user.encode(), None) in sent
    assert (read_sync(redis_client, other)[0] or {})["clicks"] == 1
