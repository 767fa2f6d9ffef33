"""Helpers for tests of the batch click path (streams/clickpath/) on real Redis and Kafka:
encoded reader events, consumed-record batches, a seeded catalogue and a ClickPath whose sends
go to the session broker and are also kept in a list."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import redis

from feedpipe.ids import content_id, event_id
from feedpipe.store.keys import keys
from feedpipe.store.profiles import read_sync
from feedpipe.wire.codec import codec

if TYPE_CHECKING:
    from streams.clickpath.records import Record

T0 = datetime(2019, 11, 12, 9, 0, tzinfo=UTC)


def stored_profile(r: redis.Redis, user: str) -> dict[str, Any]:
    """The user's stored profile, decoded (feedpipe/store/profiles.py); {} when missing."""
    return read_sync(r, user)[0] or {}


def stored_feed(r: redis.Redis, user: str) -> dict[str, Any]:
    """The user's stored feed, decoded (feedpipe/store/feeds.py); {} when missing."""
    return read_sync(r, user)[1] or {}

def reader(
    user: str,
    typ: str,
    cid: str,
    at: datetime,
    origin: str = "live",
    eid: str | None = None,
    dwell_ms: int | None = None,
) -> bytes:
    """An encoded ReaderEvent."""
    return codec("ReaderEvent").encode(
        {
            "event_id": eid or event_id(user, typ, cid, at.isoformat()),
            "type": typ,
            "user_id": user,
            "content_id": cid,
            "occurred_at": at,
            "origin": origin,
            "dwell_ms": dwell_ms,
        }
    )


def records(
    user: str, values: list[bytes], first_offset: int, partition: int | None = None
) -> list[Record]:
    """Records of ``values`` at consecutive offsets from ``first_offset``, in ``partition``
    (default: the user's, as producers key them; a Redis Cluster run refuses the others)."""
    from streams.clickpath.records import Record  # after the fixtures (settings from env)

    if partition is None:
        partition = keys().partition_of(user)

    return [
        Record("reader.events", partition, first_offset + i, user.encode(), v)
        for i, v in enumerate(values)
    ]


def user_in(partition: int) -> str:
    """A fresh user id of reader.events ``partition`` (murmur2 of the id)."""
    while True:
        u = f"U{uuid.uuid4().hex[:8]}"
        if keys().partition_of(u) == partition:
            return u


def seed_catalogue(r: redis.Redis, categories: list[str]) -> list[str]:
    """Write metas and a mind catalogue (one item per category); return the content ids."""
    k = keys()
    ids = []
    for i, cat in enumerate(categories):
        cid = content_id("clickpath-test", f"item{i}")
        ids.append(cid)
        meta = {
            "content_id": cid,
            "brand": "mind",
            "categories": [cat],
            "topics": [cat],
            "published_at": None,
        }
        r.set(k.meta(cid), orjson.dumps(meta))
        # catalogue score = when the item was added (the enrich stage's clock): at T0, so the
        # items are fresh candidates for events around T0 (feedpipe/rank/candidates.py)
        r.zadd(k.catalogue("mind"), {cid: T0.timestamp() * 1000 + i})
    r.incr(k.catalogue_version())
    return ids


Sent = list[tuple[str, bytes, bytes | None]]


async def with_path(
    kafka_bootstrap: str, body: Callable[[Any, Sent], Awaitable[None]], publish: bool = True
) -> Sent:
    """Run ``body(path, sent)`` with a ClickPath whose sends go to the real broker."""
    from aiokafka import AIOKafkaProducer

    from streams import runtime
    from streams.clickpath.catalogue import CATALOGUE
    from streams.clickpath.path import ClickPath

    runtime.redis_client.cache_clear()
    CATALOGUE.version = None  # a fresh catalogue per test (Redis was flushed)
    sent: Sent = []
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()

    async def send(topic: str, key: bytes, value: bytes | None) -> Awaitable[Any]:
        sent.append((topic, key, value))
        return await producer.send(topic, key=key, value=value)

    try:
        await body(ClickPath(send, publish=publish), sent)
        await producer.flush()
    finally:
        await producer.stop()
        runtime.redis_client.cache_clear()
        CATALOGUE.version = CATALOGUE.stats_version = None  # later tests load their own
    return sent


async def apply(path: Any, recs: list[Record]) -> Any:
    """Apply one partition batch and wait for its deliveries; return the BatchResult."""
    res, deliveries = await path.apply_partition(recs[0].partition, recs)
    await asyncio.gather(*deliveries)
    return res
