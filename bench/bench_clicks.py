"""Benchmark the click path (reader.events -> profiles -> feeds -> Redis) against two baselines.

Usage: ``python bench/bench_clicks.py [--baseline-events N] [--feed-format compact|json]
[--repeat N] [--clickpath-only]``
with ``FEEDPIPE_KAFKA_BOOTSTRAP`` and ``FEEDPIPE_REDIS_URL`` pointing at a broker and a Redis
the benchmark may wipe (it deletes and recreates the topology topics and flushes the Redis
database).

In one run, on the same data (MIND ``behaviors.tsv`` read in place through the replay
connector's event generator: history clicks, impressions, clicks, ~350k events) and the same
catalogue (``news.tsv`` rows as ranking features: brand mind, categories and topics from the
category and subcategory):

1. **clickpath**: :func:`streams.clickpath.run_consumer` (the worker's code) in this process:
   aiokafka ``getmany``, whole partition batches, one MULTI/EXEC per batch, vectorised ranking,
   outputs through librdkafka (:class:`streams.delivery.AsyncProducer`); run a second time with
   the previous aiokafka producer for the ratio (``--repeat N``: N interleaved runs of each,
   medians; the machine is shared, so single runs are noisy);
2. **aiokafka per-event**: a hand-written aiokafka consumer doing the same profile and feed
   update for each event (GET profile, admit + apply the event, rank, SET profile + feed, item
   stats, one pipeline per event), committing after each ``getmany``;
3. **faust per-event**: a Faust worker (subprocess) whose agent does the same per-event update
   for each event of its stream.

Each variant starts from an empty Redis holding only the catalogue and uses a fresh consumer
group. Rates are events / seconds from the first record fetched to the last batch applied
(group join excluded). The baselines process the first ``--baseline-events`` events (default
5,000) to bound the run time; the click path processes all. Prints events/s and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feedpipe.ids import content_id  # noqa: E402
from feedpipe.model.admission import admit_events  # noqa: E402
from feedpipe.model.item import CandidateMatrix, Meta  # noqa: E402
from feedpipe.model.profile import Event, apply_events, new_profile  # noqa: E402
from feedpipe.settings import settings  # noqa: E402
from feedpipe.store.keys import keys  # noqa: E402
from feedpipe.topology import slug, topology  # noqa: E402
from feedpipe.wire.codec import codec  # noqa: E402

RESULT_ENV = "FEEDPIPE_BENCH_RESULT"
FEED_FORMAT: list[str] = [topology().ranking.feed_format]  # --feed-format overrides


def use_feed_format(fmt: str) -> None:
    """Make the click path (and the baselines) store feeds in ``fmt`` for this process."""
    from streams import clickpath

    topo = topology()
    patched = topo.model_copy(
        update={"ranking": topo.ranking.model_copy(update={"feed_format": fmt})}
    )
    clickpath.topology = lambda: patched  # type: ignore[assignment]
    FEED_FORMAT[0] = fmt


def catalogue_metas() -> list[Meta]:
    """MIND news.tsv rows as ranking features (read in place)."""
    out = []
    path = settings().data_dir / "mind" / "news.tsv"
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            nid, cat, sub = row[0], row[1], row[2]
            cats = tuple(topology().map_categories("mind", [cat, sub]))
            out.append(Meta(content_id("mind", nid), "mind", cats, (slug(cat), slug(sub)), None))
    return out


def load_catalogue(metas: list[Meta]) -> None:
    """Flush Redis and write metas, the mind catalogue and its version."""
    import redis

    r = redis.Redis.from_url(settings().redis_url)
    r.flushdb()
    k = keys()
    # catalogue score = when the item was added (the enrich stage's clock for items without a
    # publication time, as MIND's): now, as a replay does, so the fresh candidate source
    # proposes them for the 2019 events (feedpipe/rank/candidates.py)
    added_ms = time.time() * 1000
    with r.pipeline(transaction=False) as pipe:
        for i, m in enumerate(metas):
            pipe.set(k.meta(m.content_id), orjson.dumps(m.to_json()))
            pipe.zadd(k.catalogue("mind"), {m.content_id: added_ms + i})
        pipe.incr(k.catalogue_version())
        pipe.execute()


def produce_events() -> int:
    """Recreate the topics and publish the MIND behaviour events; return how many."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    from connectors.files.mind import mind_behavior_events
    from connectors.records import Keyed
    from feedpipe.kafka.topics import recreate

    bootstrap = settings().kafka_bootstrap
    recreate(topology(), AdminClient({"bootstrap.servers": bootstrap}))
    enc = codec("ReaderEvent").encode
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    n = 0
    path = settings().data_dir / "mind" / "behaviors.tsv"
    for item in mind_behavior_events(path, "mind", topology().profiles.history_click_spacing_s):
        if not isinstance(item, Keyed):
            continue
        while True:
            try:
                p.produce("reader.events", key=item.key.encode(), value=enc(item.record))
                break
            except BufferError:
                p.poll(0.1)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return n


# -- variant 1: the click path -------------------------------------------------------------


def run_clickpath(total: int, producer_client: str = "librdkafka") -> float:
    """Run the worker's click path until ``total`` records are applied; return events/s.

    ``producer_client``: the output producer, ``librdkafka`` (the worker's default) or
    ``aiokafka`` (the click path's previous send path, for the ratio)."""
    from streams import runtime
    from streams.clickpath import BatchResult, run_consumer

    runtime.redis_client.cache_clear()
    state: dict[str, float] = {"n": 0, "t_first": 0.0, "t_last": 0.0}

    async def go() -> None:
        stop = asyncio.Event()

        def on_batch(results: list[BatchResult], seconds: float) -> None:
            now = time.perf_counter()
            if not state["n"]:
                state["t_first"] = now - seconds
            state["n"] += sum(r.records for r in results)
            state["t_last"] = now
            if state["n"] >= total:
                stop.set()

        await run_consumer(
            settings().kafka_bootstrap, f"bench-clickpath-{uuid.uuid4().hex[:8]}", stop,
            on_batch=on_batch, producer_client=producer_client,
        )

    asyncio.run(go())
    return state["n"] / (state["t_last"] - state["t_first"])


# -- the per-event update shared by both baselines --------------------------------------------


class PerEvent:
    """The same profile + feed update as the click path, one event at a time."""

    def __init__(self, redis: Any, metas: list[Meta]) -> None:
        self.r = redis
        self.k = keys()
        self.metas = {m.content_id: m for m in metas}
        self.matrix = CandidateMatrix(metas)
        self.dec = codec("ReaderEvent").decode

    async def update(self, value: bytes) -> None:
        """Decode, read the profile, admit + apply the event, rank, write profile and feed."""
        from feedpipe.rank.rankers import rank_users
        from feedpipe.store.feeds import encode_feed
        from streams.feeds import REGISTRY, feed_json

        spec, rspec = topology().profiles, topology().ranking
        rec = self.dec(value)
        u = rec["user_id"]
        at = int(rec["occurred_at"].timestamp() * 1000)
        ev = Event(rec["event_id"], rec["type"], rec["content_id"], at, rec["origin"])
        raw = await self.r.get(self.k.profile(u))
        p = orjson.loads(raw) if raw else new_profile(u, at // 86_400_000 * 86_400_000, spec)
        adm = admit_events(p, [ev], spec)
        apply_events(p, adm.accepted, self.metas, spec)
        p["version"] += 1
        items = rank_users([p], self.matrix, {}, rspec, REGISTRY.current())[0]
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.k.profile(u), orjson.dumps(p))
            pipe.set(self.k.feed(u), encode_feed(feed_json(u, p, items, 0), FEED_FORMAT[0]))
            if rec["origin"] == "live" and adm.accepted:
                field = "impressions" if rec["type"] == "impression" else "clicks"
                pipe.hincrby(self.k.stats(rec["content_id"]), field, 1)
            await pipe.execute()


def run_aiokafka_per_event(limit: int, metas: list[Meta]) -> float:
    """Hand-written aiokafka consumer, per-event updates; return events/s."""
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaConsumer

    async def go() -> float:
        r = aioredis.Redis.from_url(settings().redis_url)
        upd = PerEvent(r, metas)
        c = AIOKafkaConsumer(
            "reader.events",
            bootstrap_servers=settings().kafka_bootstrap,
            group_id=f"bench-aiokafka-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await c.start()
        n, t_first = 0, 0.0
        try:
            while n < limit:
                got = await c.getmany(timeout_ms=500, max_records=2000)
                if got and not n:
                    t_first = time.perf_counter()
                for recs in got.values():
                    for m in recs:
                        await upd.update(m.value)
                        n += 1
                if got:
                    await c.commit()
            return n / (time.perf_counter() - t_first)
        finally:
            await c.stop()
            await r.aclose()

    return asyncio.run(go())


# -- variant 3: naive per-event Faust (run in a subprocess: `--faust-worker N`) ---------------


def faust_worker(limit: int, out: Path) -> None:
    """A Faust worker whose agent applies each event with :class:`PerEvent`; writes the rate
    to ``out`` after ``limit`` events."""
    import faust
    import redis.asyncio as aioredis

    s = settings()
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        broker="kafka://" + s.kafka_bootstrap,
        store="memory://",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_session_timeout=10.0,
    )
    topic = app.topic(
        "reader.events", key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", internal=False,
    )
    metas = catalogue_metas()

    @app.agent(topic)
    async def naive(stream: Any) -> None:
        upd = PerEvent(aioredis.Redis.from_url(s.redis_url), metas)
        n, t_first = 0, 0.0
        async for value in stream:
            if not n:
                t_first = time.perf_counter()
            await upd.update(value)
            n += 1
            if n == limit:
                out.write_text(str(n / (time.perf_counter() - t_first)))

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


def run_faust_per_event(limit: int) -> float:
    """Start the Faust worker subprocess, wait for its result, stop it; return events/s."""
    out = ROOT / ".bench-faust-result"
    out.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--faust-worker", str(limit), "--out", str(out),
         "--feed-format", FEED_FORMAT[0]],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 900
        while not out.exists() or not out.read_text():
            if proc.poll() is not None:
                err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                raise RuntimeError(f"faust worker exited {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise TimeoutError("faust worker did not finish")
            time.sleep(0.5)
        return float(out.read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.unlink(missing_ok=True)


def main() -> None:
    """Run the three variants and print events/s and ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-events", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="click path runs per producer (interleaved); medians are reported")
    ap.add_argument("--clickpath-only", action="store_true",
                    help="skip the per-event baselines (profiling; prints no baseline ratio)")
    ap.add_argument("--feed-format", choices=["json", "compact"], default=FEED_FORMAT[0])
    ap.add_argument("--faust-worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    use_feed_format(args.feed_format)
    if args.faust_worker:
        faust_worker(args.faust_worker, args.out)
        return
    metas = catalogue_metas()
    t0 = time.perf_counter()
    total = produce_events()
    print(f"published {total:,} MIND reader events in {time.perf_counter() - t0:.1f} s")
    runs: dict[str, list[float]] = {"librdkafka": [], "aiokafka": []}
    for _ in range(args.repeat):
        for client in runs:
            load_catalogue(metas)
            runs[client].append(run_clickpath(total, client))
    for client, rates in runs.items():
        print(f"  clickpath, {client} producer: " + ", ".join(f"{r:,.0f}" for r in rates))
    click = statistics.median(runs["librdkafka"])
    click_aio = statistics.median(runs["aiokafka"])
    print(f"clickpath (batch, this worker's code): {click:>9,.0f} events/s over {total:,}"
          f" (median of {args.repeat})")
    print(f"clickpath with the aiokafka producer:  {click_aio:>9,.0f} events/s over {total:,}")
    print(f"ratio librdkafka / aiokafka producer: {click / click_aio:.2f}x")
    if args.clickpath_only:
        print(f"target >= 20,000 events/s: {'met' if click >= 20_000 else 'NOT met'}")
        return
    load_catalogue(metas)
    hand = run_aiokafka_per_event(args.baseline_events, metas)
    print(f"aiokafka per-event (hand-written):     {hand:>9,.0f} events/s over "
          f"{args.baseline_events:,}")
    load_catalogue(metas)
    naive = run_faust_per_event(args.baseline_events)
    print(f"faust per-event (naive agent):         {naive:>9,.0f} events/s over "
          f"{args.baseline_events:,}")
    print(f"ratio clickpath / aiokafka per-event: {click / hand:.1f}x")
    print(f"ratio clickpath / faust per-event:    {click / naive:.1f}x")
    print(f"target >= 20,000 events/s: {'met' if click >= 20_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
