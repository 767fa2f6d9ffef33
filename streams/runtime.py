"""Runtime helpers shared by the worker's stages (the normalise and enrich agents, the click
path): the Redis client and its outage wait, DLQ records, batch grouping, resolve events.

Instrumentation (feedpipe.monitoring.metrics) is built in here so every stage gets it without
code of its own: :func:`take_events` counts events in, times each batch (processing time per
batch and per event) and records freshness (Kafka record time -> batch done) per agent;
:func:`dead_letter` counts DLQ records by stage and reason; the Redis client counts
connection/timeout errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions
from faust.agents import current_agent
from faust.streams import Stream
from faust.types import EventT, StreamT
from redis._defaults import DEFAULT_RETRY_BASE, DEFAULT_RETRY_CAP, DEFAULT_RETRY_COUNT
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from feedpipe.ids import event_id
from feedpipe.monitoring import metrics
from feedpipe.store.client import async_client
from feedpipe.wire.codec import codec

log = logging.getLogger("feedpipe.streams")
T = TypeVar("T")
DLQ_VALUE_MAX = 1 << 20  # bytes kept of a rejected record's value (1 MiB)


class CountingRetry(Retry):
    """redis-py's default retry policy (3 retries, exponential backoff with jitter) that counts
    every connection/timeout error in feedpipe_redis_errors_total{component="worker"}."""

    async def call_with_retry(
        self,
        do: Callable[[], Any],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        """As :meth:`redis.asyncio.retry.Retry.call_with_retry`, counting each failure."""

        async def counted_fail(error: Exception, *rest: Any) -> Any:
            metrics.observe_redis_error("worker", error)
            return await fail(error, *rest)

        return await super().call_with_retry(do, counted_fail, is_retryable, with_failure_count)


REDIS_OUTAGE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
)
"""Errors of an unreachable, restarting (BusyLoadingError is a ConnectionError) or stalled Redis,
or of a Redis Cluster with no reachable node or an uncovered slot (``RedisClusterException``,
``CLUSTERDOWN``): :func:`until_redis_answers` waits them out."""
REDIS_WAIT_MAX_S = 5.0
"""Cap of the back-off between two attempts while Redis is unreachable, seconds."""


async def until_redis_answers(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``await fn(*args)`` until it completes without a :data:`REDIS_OUTAGE` error, however long
    Redis is down; other exceptions propagate at once.

    The stage blocks meanwhile (back-pressure: no new offsets are committed, the consumer keeps
    its group membership through its heartbeat), so what it held is applied once Redis is back
    rather than acked and lost (an exception out of a Faust agent acks its events; out of the
    click path's loop it would stop the loop). ``what`` names the caller in the log. ``fn``
    must be safe to run again after a failure: every caller's Redis writes are idempotent
    (offset watermarks, content hashes).
    Waits are exponential with full jitter, 0.1 s doubling up to :data:`REDIS_WAIT_MAX_S`
    (tenacity ``wait_random_exponential``; AWS Architecture Blog, "Exponential Backoff And
    Jitter", 2015); each failed attempt is logged and counted in feedpipe_redis_errors_total.
    """

    def note(state: Any) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None:
            metrics.observe_redis_error("worker", exc)
        log.warning(
            "%s: Redis unreachable (%s: %s); attempt %d, retrying",
            what, type(exc).__name__, exc, state.attempt_number,
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(REDIS_OUTAGE),
        wait=wait_random_exponential(multiplier=0.1, max=REDIS_WAIT_MAX_S),
        before_sleep=note,
        reraise=True,
    ):
        with attempt:
            return await fn(*args)
    raise AssertionError("unreachable: tenacity retries forever")  # pragma: no cover


@cache
def redis_client() -> aioredis.Redis:
    """The worker's Redis client (one connection pool, created on first use)."""
    retry = CountingRetry(
        ExponentialWithJitterBackoff(base=DEFAULT_RETRY_BASE, cap=DEFAULT_RETRY_CAP),
        DEFAULT_RETRY_COUNT,
    )
    client: aioredis.Redis = async_client(retry=retry)  # a RedisCluster with FEEDPIPE_REDIS_CLUSTER
    return client


def dead_letter(
    stage: str,
    event: EventT,
    code: str,
    reason: str,
    raw_event_id: str | None = None,
    origin: str | None = None,
) -> bytes:
    """Encode a DeadLetter record (schemas/dead_letter.avsc) for ``event``'s message.

    Also counts it in feedpipe_dlq_records_total{stage, reason=code}.
    """
    metrics.observe_dlq(stage, code)
    msg = event.message
    return dead_letter_value(
        stage, msg.topic, msg.partition, msg.offset, msg.key, msg.value, code, reason,
        raw_event_id, origin,
    )


def dead_letter_value(
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    key: object,
    value: object,
    code: str,
    reason: str,
    raw_event_id: str | None = None,
    origin: str | None = None,
) -> bytes:
    """A DeadLetter record (schemas/dead_letter.avsc) for the consumed record at ``topic``
    [``partition``] @ ``offset``: its key and value kept when they are bytes (the value
    truncated to :data:`DLQ_VALUE_MAX` bytes), ``failed_at`` now (UTC). Does not count it."""
    raw = value if isinstance(value, bytes) else b""
    return codec("DeadLetter").encode(
        {
            "stage": stage,
            "source_topic": topic,
            "partition": partition,
            "offset": offset,
            "reason": reason,
            "error_type": code,
            "raw_event_id": raw_event_id,
            "origin": origin,
            "key": key if isinstance(key, bytes) else None,
            "value": raw[:DLQ_VALUE_MAX],
            "failed_at": datetime.now(UTC),
        }
    )


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound ``fn(*args)`` in the default executor so the event loop keeps heartbeating."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def take_events(
    stream: StreamT[Any], max_: int, within_s: float
) -> AsyncIterator[Sequence[EventT]]:
    """Batches of up to ``max_`` events, or fewer after ``within_s`` seconds (Stream.take_events).

    Events (not values) keep each message's topic, partition and offset, which the stages need
    for offset watermarks and DLQ records. They are acked after the batch's loop body ran.
    Each batch is instrumented (see the module docstring); the agent is the running Faust
    agent (its ``name``), "unknown" outside one.
    """
    return _instrumented(cast(Stream[Any], stream).take_events(max_, within=within_s))


async def _instrumented(
    batches: AsyncIterator[Sequence[EventT]],
) -> AsyncIterator[Sequence[EventT]]:
    agent = current_agent()
    name = str(agent.name) if agent is not None else "unknown"
    async for events in batches:
        n = len(events)
        metrics.observe_events_in(name, n)
        t0 = time.perf_counter()
        yield events  # the agent's loop body runs here; resumed when it asks for the next batch
        metrics.observe_batch(name, n, time.perf_counter() - t0)
        now = time.time()
        for e in events:
            ts = e.message.timestamp
            if ts:
                metrics.observe_freshness(name, now - float(ts))


def ms(dt: datetime | int | None) -> int | None:
    """Datetime (tz-aware) or epoch ms -> epoch ms; None stays None."""
    if dt is None or isinstance(dt, int):
        return dt
    return int(dt.timestamp() * 1000)


def resolve_event(user_id: str, content_id: str, at: datetime) -> dict[str, Any]:
    """The 'resolve' ReaderEvent (schemas/reader_event.avsc) that applies ``user_id``'s click
    waiting for ``content_id`` once the item is materialised (event id deterministic: a
    re-sent resolve is a duplicate)."""
    return {
        "event_id": event_id("resolve", user_id, content_id),
        "type": "resolve",
        "user_id": user_id,
        "content_id": content_id,
        "occurred_at": at,
        "origin": "live",
    }
