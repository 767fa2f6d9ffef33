"""Runtime helpers shared by the agents: the Redis client, DLQ records, batch grouping."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from faust.streams import Stream
from faust.types import EventT, StreamT

from feedpipe.codec import codec
from feedpipe.ids import event_id
from feedpipe.redis_keys import keys
from feedpipe.settings import settings

log = logging.getLogger("feedpipe.streams")
T = TypeVar("T")
DLQ_VALUE_MAX = 1 << 20  # bytes kept of a rejected record's value (1 MiB)


@cache
def redis_client() -> aioredis.Redis:
    """The worker's Redis client (one connection pool, created on first use)."""
    return aioredis.Redis.from_url(settings().redis_url, decode_responses=False)


def dead_letter(
    stage: str,
    event: EventT,
    code: str,
    reason: str,
    raw_event_id: str | None = None,
    origin: str | None = None,
) -> bytes:
    """Encode a DeadLetter record (schemas/dead_letter.avsc) for ``event``'s message."""
    msg = event.message
    value = msg.value if isinstance(msg.value, bytes) else b""
    return codec("DeadLetter").encode(
        {
            "stage": stage,
            "source_topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "reason": reason,
            "error_type": code,
            "raw_event_id": raw_event_id,
            "origin": origin,
            "key": msg.key if isinstance(msg.key, bytes) else None,
            "value": value[:DLQ_VALUE_MAX],
            "failed_at": datetime.now(UTC),
        }
    )


def by_partition(events: Sequence[EventT]) -> dict[tuple[str, int], list[EventT]]:
    """Group a batch by (topic, partition), keeping offset order within each group."""
    groups: dict[tuple[str, int], list[EventT]] = defaultdict(list)
    for e in events:
        groups[(e.message.topic, e.message.partition)].append(e)
    return groups


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound ``fn(*args)`` in the default executor so the event loop keeps heartbeating."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def take_events(
    stream: StreamT[Any], max_: int, within_s: float
) -> AsyncIterator[Sequence[EventT]]:
    """Batches of up to ``max_`` events, or fewer after ``within_s`` seconds (Stream.take_events).

    Events (not values) keep each message's topic, partition and offset, which the stages need
    for offset watermarks and DLQ records. They are acked after the batch's loop body ran.
    """
    return cast(Stream[Any], stream).take_events(max_, within=within_s)


def as_str(value: object) -> str:
    """Redis/Kafka key (bytes or str) -> str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def ms(dt: datetime | int | None) -> int | None:
    """Datetime (tz-aware) or epoch ms -> epoch ms; None stays None."""
    if dt is None or isinstance(dt, int):
        return dt
    return int(dt.timestamp() * 1000)


async def release_pending(content_ids: list[str]) -> int:
    """Send 'resolve' events for users whose clicks waited for ``content_ids``; return the count."""
    if not content_ids:
        return 0
    r = redis_client()
    k = keys()
    async with r.pipeline(transaction=True) as pipe:
        for cid in content_ids:
            pipe.smembers(k.pending_users(cid))
            pipe.delete(k.pending_users(cid))
        res = await pipe.execute()
    from streams.app import topic

    out = topic("reader.events")
    enc = codec("ReaderEvent").encode
    now = datetime.now(UTC)
    sent = 0
    for cid, users in zip(content_ids, res[0::2], strict=True):
        for u in sorted(users):
            user = u.decode()
            await out.send(
                key=u,
                value=enc(
                    {
                        "event_id": event_id("resolve", user, cid),
                        "type": "resolve",
                        "user_id": user,
                        "content_id": cid,
                        "occurred_at": now,
                        "origin": "live",
                    }
                ),
            )
            sent += 1
    return sent
