"""Rebuild Redis, the pipeline's materialised view, from Kafka: ``feedpipe rebuild``.

Redis holds nothing that Kafka does not: content, meta, catalogue and celebrity sets derive from
the compacted topic ``content.enriched``; profiles, feeds, item stats, trending, A/B counters,
pending, active and audience sets and the offset watermarks derive from ``reader.events`` (the
click path's input log) through the click path's own code. A rebuild therefore is:

1. **hold**: ``fp:rebuild:reader.events:{p}`` is set for every partition, so a live click path
   applies nothing there meanwhile (streams/clickpath/consumer.py: it also holds a partition whose
   watermark is missing while the log has older records: a wiped Redis, before anyone ran
   this command);
2. **content**: every record of ``content.enriched`` up to its end offsets at the start, newest
   per key, through the enrich stage's :func:`streams.stages.enrich.materialise` (content-hash
   and event-time guarded, so concurrent enrich writes are never moved backwards);
3. **reader events**: each partition of ``reader.events`` from its log start to its end
   offset at the start, in batches, through
   :meth:`streams.clickpath.path.ClickPath.apply_partition` with nothing published (its
   outputs are already in their topics): the same code, the same order per partition, the
   same offset-watermark transaction, so the result is what the live pipeline computed, and
   a rebuild that dies half-way resumes where its watermark stands;
4. **release**: the holds are deleted; live click paths continue from their committed offsets
   (records the rebuild already applied are at or below the watermark: skipped).

Celebrity status is decided again from the rebuilt audiences (an item is classified when it is
first materialised, and at that point of the rebuild no audience exists yet): step 3b.
Feeds are ranked by the replay with the item stats of their time and converge when the click
path's idle refresher sees the final stats version (as after any catch-up).

Scope: complete within ``reader.events`` retention (7 days, = the lateness bound). Profiles
whose events are older than the retention are not rebuilt by this command (the compacted
``profiles.updated`` topic keeps their last state for downstream consumers).
The read endpoint keeps serving throughout: a user whose feed is not rebuilt yet gets the
fallback ladder (trending, latest, in-memory snapshot; docs/api.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from feedpipe.errors import SerializationError
from feedpipe.store import audience as audience_store
from feedpipe.store import content as content_store
from feedpipe.store import partitions as partition_store
from feedpipe.store.keys import keys
from feedpipe.topology import topology
from feedpipe.wire.codec import codec

BATCH_RECORDS = 20_000  # records per click-path batch (the live loop's MAX_RECORDS)
CONTENT_BATCH = 500


@dataclass
class RebuildReport:
    """What a rebuild did: counts and seconds per step."""

    content_records: int = 0
    content_published: int = 0
    content_rejected: int = 0
    reader_records: dict[int, int] = field(default_factory=dict)
    celebrities: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per step."""
        return "\n".join(
            [
                f"content.enriched: {self.content_records:,} records, "
                f"{self.content_published:,} items published, {self.content_rejected} undecodable "
                f"({self.seconds.get('content', 0):.1f} s)",
                f"reader.events: {sum(self.reader_records.values()):,} records over "
                f"{len(self.reader_records)} partitions "
                f"({self.seconds.get('reader', 0):.1f} s)",
                f"celebrity items re-decided: {self.celebrities}",
            ]
        )


Progress = Callable[[str, int, int], None]
"""progress(step, done, total): called as a step advances (records)."""


async def _noop_send(topic: str, key: bytes, value: bytes | None) -> Awaitable[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


async def rebuild(bootstrap: str, progress: Progress | None = None) -> RebuildReport:
    """Rebuild Redis from Kafka (module docstring). Safe to run while workers run, and again
    after a failure.

    Args:
        bootstrap: Kafka bootstrap servers.
        progress: optional progress callback.

    Returns:
        The report (counts, seconds per step).

    Raises:
        redis.exceptions.RedisError, aiokafka.errors.KafkaError: Redis or Kafka failed (the
            holds stay: live click paths keep waiting until a rebuild completes).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from feedpipe.settings import settings
    from streams.runtime import redis_client

    report = RebuildReport()
    r = redis_client()
    reader_topic = topology().stages["clickpath"].input
    parts = range(topology().topics[reader_topic].partitions)
    started = datetime.now(UTC).isoformat()
    await partition_store.hold(r, reader_topic, parts, started)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
        max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20,
        **settings().aiokafka_config(),
    )
    await consumer.start()
    try:
        t0 = time.monotonic()
        await _content(consumer, report, progress)
        report.seconds["content"] = time.monotonic() - t0
        t0 = time.monotonic()
        for p in parts:
            report.reader_records[p] = await _reader_partition(
                consumer, TopicPartition(reader_topic, p), progress
            )
        report.seconds["reader"] = time.monotonic() - t0
        report.celebrities = await _celebrities()
    finally:
        await consumer.stop()
    await partition_store.release(r, reader_topic, parts)
    return report


async def _read_to_end(
    consumer: Any, tps: list[Any], on_batch: Callable[[Any, list[Any]], Awaitable[None]],
    step: str, progress: Progress | None,
) -> int:
    """Read ``tps`` from their log start to their end offsets at the call, calling
    ``on_batch(tp, records)`` per fetched batch; returns the records read."""
    consumer.assign(tps)
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, starts[tp])
    total = sum(ends[tp] - starts[tp] for tp in tps)
    todo = {tp for tp in tps if ends[tp] > starts[tp]}
    done = 0
    while todo:
        got = await consumer.getmany(*todo, timeout_ms=1000, max_records=BATCH_RECORDS)
        for tp, recs in got.items():
            recs = [rec for rec in recs if rec.offset < ends[tp]]
            if recs:
                await on_batch(tp, recs)
                done += len(recs)
            if await consumer.position(tp) >= ends[tp]:
                todo.discard(tp)
        if progress is not None:
            progress(step, done, total)
    return done


async def _content(consumer: Any, report: RebuildReport, progress: Progress | None) -> None:
    """Step 2: content.enriched -> content, meta, catalogue (newest record per item)."""
    from aiokafka import TopicPartition

    from streams.runtime import until_redis_answers
    from streams.stages.enrich import content_json, materialise

    dec = codec("EnrichedContent").decode
    newest: dict[bytes, bytes | None] = {}

    async def keep(tp: Any, recs: list[Any]) -> None:
        for rec in recs:
            if rec.key is not None:
                newest[rec.key] = rec.value

    content_topic = topology().stages["enrich"].output("content")
    tps = [
        TopicPartition(content_topic, p)
        for p in range(topology().topics[content_topic].partitions)
    ]
    report.content_records = await _read_to_end(consumer, tps, keep, "content", progress)
    docs = []
    for value in newest.values():
        if value is None:
            continue
        try:
            docs.append(content_json(dec(value)))
        except (SerializationError, KeyError, TypeError, ValueError):
            report.content_rejected += 1  # the enrich stage DLQ'd its input; nothing to restore
    for i in range(0, len(docs), CONTENT_BATCH):
        chunk = docs[i : i + CONTENT_BATCH]
        published = await until_redis_answers("rebuild: content", materialise, chunk, None)
        report.content_published += len(published)


async def _reader_partition(consumer: Any, tp: Any, progress: Progress | None) -> int:
    """Step 3: one reader.events partition through the click path, nothing published."""
    from streams.clickpath.path import ClickPath
    from streams.runtime import until_redis_answers

    path = ClickPath(_noop_send, publish=False)

    async def apply(_tp: Any, recs: list[Any]) -> None:
        await until_redis_answers("rebuild: click path", path.apply_partition, tp.partition, recs)

    return await _read_to_end(consumer, [tp], apply, f"{tp.topic}[{tp.partition}]", progress)


async def _celebrities() -> int:
    """Step 3b: re-decide celebrity status of every catalogue item from the rebuilt audiences
    (the enrich stage's rule: audience over ``fanout.celebrity_audience``)."""
    from feedpipe.model.item import Meta
    from feedpipe.rank.fanout import audience_keys, is_celebrity, parse_audience
    from streams.runtime import redis_client

    topo = topology()
    r = redis_client()
    k = keys()
    metas = [Meta.from_json(m) for m in await content_store.all_metas(r)]
    n = 0
    for i in range(0, len(metas), CONTENT_BATCH):
        chunk = metas[i : i + CONTENT_BATCH]
        replies = await audience_store.sizes(
            r, [audience_keys(m, k) for m in chunk], topo.fanout.celebrity_audience
        )
        celebrities = []
        for m, reply in zip(chunk, replies, strict=True):
            size, members = parse_audience(reply)
            if members is None or is_celebrity(size, topo.fanout):
                celebrities.append(m)
        await content_store.add_celebrities(
            r, [(m.brand, m.content_id, m.published_at or 0) for m in celebrities]
        )
        n += len(celebrities)
    return n
