"""The click path's consumer: an aiokafka ``getmany`` loop inside the Faust worker process.

Input:  topology ``stages.clickpath.input`` (reader.events), consumer group
        ``stages.clickpath.group(app_id)`` (:func:`consumer_group`), manual commits, earliest
        offsets; every assigned partition.
Output: the records of :mod:`streams.clickpath.publish`, through the librdkafka producer
        (:class:`feedpipe.kafka.producer.AsyncProducer`, idempotent, acks=all).
State:  Redis (:mod:`streams.clickpath.write`); offsets are committed after each batch's Redis
        transaction and after every delivery of its output records was acknowledged, so a crash
        redelivers the batch and the watermark makes the redelivery exact.

Why not a Faust agent: Faust's per-event stream machinery (iteration, acks, one send per event)
costs ~17x against a hand-written consumer, and a Faust table cannot be modified inside
``stream.take`` (faust-streaming/faust#497); this loop takes whole partition batches and
applies each in one MULTI/EXEC with one vectorised ranking call. :class:`ClickPathService`
runs it as a Faust service, in the same worker as the two agents (normalise, enrich).

Holds: a partition a ``feedpipe rebuild`` replays, or whose Redis state is gone (watermark
missing while the log has older records), is not applied (:func:`held_partitions`): the
consumer seeks back and waits until the rebuild is done. When no records arrive for
:data:`REFRESH_IDLE_S`, the idle refresher re-ranks stale feeds (:mod:`streams.clickpath.refresh`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from mode import Service

from feedpipe.kafka.producer import AsyncProducer
from feedpipe.monitoring import metrics
from feedpipe.settings import settings
from feedpipe.store import partitions as partition_store
from streams.app import app
from streams.clickpath.path import ClickPath
from streams.clickpath.records import STAGE, BatchResult, RecordLike, Send, StateLost, stage
from streams.runtime import log, redis_client, until_redis_answers

MAX_RECORDS = 20_000
"""Records per getmany call."""
POLL_MS = 200
REFRESH_IDLE_S = 2.0
"""Seconds without records before the idle refresher runs."""


class OutputProducer(Protocol):
    """What the loop needs of a producer: :class:`feedpipe.kafka.producer.AsyncProducer` in the
    worker; the benchmark passes other implementations of the same three methods."""

    async def start(self) -> None:
        """Connect."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> Awaitable[Any]:
        """Queue one record; the awaitable resolves when the broker acknowledged it."""

    async def stop(self) -> None:
        """Deliver what is queued, then close."""


def consumer_group(app_id: str) -> str:
    """The click path's consumer group for a Faust app id (e.g. ``feedpipe.clickpath``)."""
    return stage().group(app_id)


async def held_partitions(
    consumer: Any, got: Mapping[Any, Sequence[RecordLike]], log_start: dict[int, int]
) -> set[Any]:
    """The partitions of a ``getmany`` result the click path must not apply now (one MGET;
    ``beginning_offsets`` only for partitions without a watermark):

    * a ``feedpipe rebuild`` replays the partition (``fp:rebuild:reader.events:{p}`` present;
      ops/rebuild.py): applying newer records first would move the watermark past the
      records the rebuild has not replayed yet, which it would then skip;
    * the partition's watermark is missing although the log holds records older than the
      batch: Redis lost its state (FLUSHALL, a new empty instance). Applying the batch to empty
      profiles would build wrong ones; the partition waits for a rebuild. (A new deployment
      starts at the log start and is not held.)

    ``log_start`` (partition -> log start offset) is updated with the offsets it looked up.
    """
    if not got:
        return set()
    tps = list(got)
    wms, holds = await partition_store.watermarks_and_holds(
        redis_client(), STAGE, stage().input, [tp.partition for tp in tps]
    )
    missing = [tp for tp, wm in zip(tps, wms, strict=True) if wm is None]
    starts = await consumer.beginning_offsets(missing) if missing else {}
    log_start.update({tp.partition: off for tp, off in starts.items()})
    held = set()
    for tp, wm, rebuilding in zip(tps, wms, holds, strict=True):
        if rebuilding is not None or (wm is None and got[tp][0].offset > starts[tp]):
            held.add(tp)
    return held


GC_THRESHOLDS = (50_000, 50, 1_000)
"""CPython's cyclic-collector thresholds while the click path runs (default 700, 10, 10).
A partition batch allocates millions of short-lived dicts and lists (events, profiles, feed
items), almost none of them in cycles (reference counting frees them); at the default a
young collection runs every 700 allocations and the older generations rescan the worker's
long-lived caches (metas, catalogue). Measured on the live shape (bench/bench_clicks.py
``--measure`` 50,000 events, same run): 224.9 -> 196.1 us of worker CPU per event."""


def tune_gc() -> None:
    """Set :data:`GC_THRESHOLDS` for this process (the worker process runs the click path)."""
    gc.set_threshold(*GC_THRESHOLDS)


async def run_consumer(
    bootstrap: str,
    group: str,
    stop: asyncio.Event,
    *,
    publish: bool = True,
    on_batch: Callable[[list[BatchResult], float], None] | None = None,
    producer: OutputProducer | None = None,
) -> None:
    """The click path's consume-apply-commit loop until ``stop`` is set.

    aiokafka consumer (group ``group``) and the idempotent (acks=all) librdkafka producer
    :class:`feedpipe.kafka.producer.AsyncProducer`, or ``producer`` when given (the benchmark
    compares others). Each ``getmany`` batch is applied per partition, its output records'
    deliveries awaited (a failed delivery raises: nothing is committed), then its offsets
    committed. ``on_batch(results, seconds)`` is called after each batch (metrics, benchmark).
    Sets the process's garbage-collector thresholds (:func:`tune_gc`).
    """
    from aiokafka import AIOKafkaConsumer

    tune_gc()
    security = settings().aiokafka_config()  # TLS / SASL of the settings (empty: plaintext)
    topic = stage().input
    consumer = AIOKafkaConsumer(
        topic,
        **security,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    if producer is None:
        producer = AsyncProducer(bootstrap)
    await producer.start()
    await consumer.start()
    send: Send = producer.send
    path = ClickPath(send, publish=publish, strict=True)
    held_logged = 0.0
    try:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            held = await until_redis_answers(
                "clickpath: hold", held_partitions, consumer, got, path.log_start
            )
            if held:
                # a rebuild replays these partitions, or their Redis state is gone: apply
                # nothing there (fetch the same records again later) until it is rebuilt
                for tp in held:
                    consumer.seek(tp, got[tp][0].offset)
                got = {tp: recs for tp, recs in got.items() if tp not in held}
                if time.monotonic() - held_logged > 30:
                    held_logged = time.monotonic()
                    log.warning(
                        "clickpath: holding %s of %s: a rebuild runs, or Redis lost their state "
                        "(watermark missing while the log has older records): run "
                        "`feedpipe rebuild`", sorted(tp.partition for tp in held), topic,
                    )
                if not got:
                    await asyncio.sleep(1.0)
                    continue
            if not got:
                if time.monotonic() - path.last_batch_at >= REFRESH_IDLE_S:
                    # runs between getmany calls: a long refresh delays new records by at most
                    # one chunk of users after stop is set
                    parts = sorted(tp.partition for tp in consumer.assignment())
                    await until_redis_answers(
                        "clickpath: refresh", path.refresh_feeds, parts, stop.is_set
                    )
                    path.last_batch_at = time.monotonic()
                continue
            t0 = time.perf_counter()
            batch = {tp.partition: recs for tp, recs in got.items()}
            # a batch that failed on a Redis outage is applied again once Redis answers: the
            # offset watermark skips the partitions (and records) already applied
            try:
                results, deliveries = await until_redis_answers(
                    "clickpath: apply batch", path.apply_batch, batch
                )
            except StateLost as lost:
                log.warning("clickpath: %s; holding the batch", lost)
                for tp, recs in got.items():  # fetched again; the hold check decides then
                    consumer.seek(tp, recs[0].offset)
                continue
            if deliveries:
                await asyncio.gather(*deliveries)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in got.items()})
            seconds = time.perf_counter() - t0
            n = sum(res.records for res in results)
            metrics.observe_batch(STAGE, n, seconds)
            metrics.observe_events_in(STAGE, n)
            for res in results:
                if res.dead_letters:
                    metrics.observe_dlq(STAGE, "rejected")
            if on_batch is not None:
                on_batch(results, seconds)
    finally:
        await consumer.stop()
        await producer.stop()


@app.service
class ClickPathService(Service):
    """Runs :func:`run_consumer` in the worker process while the worker runs."""

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    async def on_start(self) -> None:
        """Start the consume loop."""
        s = settings()
        self._stop.clear()
        self._task = asyncio.ensure_future(
            run_consumer(s.kafka_bootstrap, consumer_group(s.app_id), self._stop)
        )
        self._task.add_done_callback(_log_exit)

    async def on_stop(self) -> None:
        """Finish the current batch, commit, close the consumer and producer."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=15)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception:  # already logged by _log_exit
                pass


_CRASHES: set[asyncio.Future[None]] = set()  # keeps the crash task referenced until it runs


def _log_exit(task: asyncio.Future[None]) -> None:
    """An unexpected exception out of the consume loop crashes the worker (fail loudly: a
    worker without its click path would look alive while no reader event is applied; its
    supervisor restarts it and the watermark makes the restart exact)."""
    exc = task.exception() if not task.cancelled() else None
    if exc is not None:
        log.error("clickpath: consumer loop failed; crashing the worker", exc_info=exc)
        _CRASHES.add(asyncio.ensure_future(app.crash(exc)))
