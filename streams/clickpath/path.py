"""The click path's batch step: one reader.events partition batch -> Redis and output records.

:meth:`ClickPath.apply_partition` decodes the records (:mod:`streams.clickpath.records`), applies
them under the partition's offset watermark (:mod:`streams.clickpath.write`, which folds them
with :func:`streams.clickpath.fold.fold`) and queues the output records
(:mod:`streams.clickpath.publish`). It returns the batch's counts and the delivery awaitables;
the caller (the consumer loop, ``feedpipe rebuild``, tests, benchmarks) awaits them before it
commits the offsets.

Order of effects per batch: DLQ records and erase tombstones are acknowledged before the EXEC
that moves the watermark; profiles and feeds are sent after it; a redelivered batch (every
record at or below the watermark) republishes the stored profile and feed of its users, since
the crash may have hit between the Redis write and the sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from feedpipe.monitoring import metrics
from feedpipe.topology import topology
from streams.clickpath import publish, write
from streams.clickpath.fold import Plan
from streams.clickpath.records import BatchResult, RecordLike, Send, decode
from streams.clickpath.refresh import Refresher
from streams.runtime import ms


class ClickPath:
    """Applies reader.events partition batches to Redis and sends the resulting records.

    Args:
        send: ``send(topic, key, value)`` coroutine queuing one output record and returning an
            awaitable of its delivery (:meth:`feedpipe.kafka.producer.AsyncProducer.send` and
            aiokafka's ``AIOKafkaProducer.send`` have this shape).
        publish: False skips the profile and feed records (``feedpipe rebuild``: they are in
            their topics already; benchmarks of the Redis side); DLQ records, tombstones and
            resolve events are always sent.
        strict: raise :class:`streams.clickpath.records.StateLost` instead of applying a batch
            to a partition whose watermark is missing while its first offset is past the log
            start (``log_start[partition]``, 0 when unknown): the live consumer loop sets it; a
            replay from the log start (tests, benchmarks, ``feedpipe rebuild``) does not.
    """

    def __init__(self, send: Send, publish: bool = True, strict: bool = False) -> None:
        self.send = send
        self.publish = publish
        self.strict = strict
        self.log_start: dict[int, int] = {}  # partition -> log start offset, when known
        self.metas = write.MetaCache()
        self.refresher = Refresher()
        self.last_batch_at = 0.0

    async def apply_partition(
        self, partition: int, records: Sequence[RecordLike]
    ) -> tuple[BatchResult, list[Awaitable[Any]]]:
        """Apply one partition's records (offset order); return counts and pending deliveries.

        Bad records go to the DLQ. Never raises for bad input; Redis/Kafka errors propagate
        (the caller does not commit, so the batch is redelivered and applied exactly once).
        """
        res = BatchResult(records=len(records))
        if not records:
            return res, []
        decoded, bad = decode(records)
        by_offset = {rec.offset: rec for rec in records}
        spec = topology().profiles
        sent_early = False

        async def before_exec(plan: Plan) -> None:
            # once per batch: a retry after a WATCH failure does not resend
            nonlocal sent_early
            if not sent_early:
                early = await publish.dead_and_tombstones(
                    self.send, plan.dead, plan, by_offset, spec
                )
                if early:
                    await asyncio.gather(*early)
                sent_early = True

        sel, plan = await write.apply(
            partition, records, decoded, bad, self.metas, before_exec,
            strict=self.strict, log_start=self.log_start,
        )
        res.skipped_offsets = len(decoded) - len(sel.fresh)
        deliveries: list[Awaitable[Any]] = []
        if plan is None:
            res.dead_letters = len(sel.dead)
            deliveries += await publish.dead_and_tombstones(self.send, sel.dead, None, {}, spec)
            if self.publish:
                deliveries += await publish.republish(self.send, sel.users)
            return res, deliveries
        res.dead_letters = len(sel.dead) + len(plan.late) + len(plan.expired)
        res.applied = plan.fresh - len(plan.late) - plan.duplicates
        res.duplicates = plan.duplicates
        res.users = len(plan.profiles)
        res.feeds = len(plan.feeds)
        res.erased = len(plan.erased)
        # time-to-feed: the click's event time -> its user's profile and feed committed
        # (one transaction); history clicks of a replay land in the backfill counter
        now_ms = time.time() * 1000
        for rec, _bot in plan.counted:
            if rec["type"] == "click" and rec["content_id"] and rec["user_id"] in plan.feeds:
                metrics.observe_click_to_feed((now_ms - (ms(rec["occurred_at"]) or 0)) / 1000)
        if self.publish:
            deliveries += await publish.publish_state(
                self.send,
                {u: p for u, p in plan.profiles.items() if u not in plan.unchanged_profiles},
                {u: plan.feeds[u] for u in plan.changed},
            )
            # users whose records in this batch were all at or below the watermark (applied
            # before a crash that kept their outputs from being sent): send their stored state
            # again, as a wholly redelivered batch does
            stale = sel.stale_users - set(plan.profiles) - set(plan.erased)
            deliveries += await publish.republish(self.send, sorted(stale))
        res.pending_items = sorted(plan.pending)
        deliveries += await publish.release_arrived(self.send, res.pending_items)
        return res, deliveries

    async def apply_batch(
        self, batch: dict[int, Sequence[RecordLike]]
    ) -> tuple[list[BatchResult], list[Awaitable[Any]]]:
        """Apply several partitions' records (partition -> records in offset order)."""
        results: list[BatchResult] = []
        deliveries: list[Awaitable[Any]] = []
        for partition in sorted(batch):
            res, dels = await self.apply_partition(partition, batch[partition])
            results.append(res)
            deliveries += dels
        self.last_batch_at = time.monotonic()
        return results, deliveries

    async def refresh_feeds(
        self, partitions: Sequence[int], batch_moved: Callable[[], bool]
    ) -> int:
        """Re-rank stale feeds of ``partitions`` while idle
        (:meth:`streams.clickpath.refresh.Refresher.run`); return the feeds written."""
        return await self.refresher.run(partitions, batch_moved)
