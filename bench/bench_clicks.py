"""Benchmark the click path (reader.events -> profiles -> feeds -> Redis): two load shapes,
CPU per event by phase, before/after in one run; or (``--baselines``) against two baselines.

Usage: ``python bench/bench_clicks.py [--base CHECKOUT] [--shapes mind,live] [--live-events N]``
or ``python bench/bench_clicks.py --baselines [--baseline-events N] [--feed-format F]
[--repeat N] [--clickpath-only]``, with ``FEEDPIPE_KAFKA_BOOTSTRAP`` and ``FEEDPIPE_REDIS_URL``
pointing at a broker and a Redis the benchmark may wipe (it deletes and recreates the topology
topics and flushes the Redis database).

Shapes (default mode): **mind**, the MIND replay below (each user's ~70 events arrive
together); **live**, ``--live-events`` (200,000) live-shaped events of
:class:`ops.simulate.Population` (Zipf over 100,000 users, sessions, 15% clicks, seed 15)
over the same catalogue. For each shape the worker's consumer loop runs in a fresh
subprocess, on ``--base`` (a checkout of an earlier commit, e.g. a ``git worktree``;
optional) and on this tree, each from an empty Redis holding only the catalogue, and prints
events/s and worker CPU per event (``time.process_time`` of the process over the run, every
thread) from a run without phase counters, then the split into decode, fold, rank, encode,
redis, produce and other from a second run with the counters of bench/phases.py (whose own
cost, ~2 x 1.5 us per wrapped call here, would otherwise inflate the headline), then the
after/before ratios of the runs without counters.

In one run, on the same data (MIND ``behaviors.tsv`` read in place through the replay
connector's event generator: history clicks, impressions, clicks, ~350k events) and the same
catalogue (``news.tsv`` rows as ranking features: brand mind, categories and topics from the
category and subcategory):

1. **clickpath**: :func:`streams.clickpath.consumer.run_consumer` (the worker's code) in this
   process: aiokafka ``getmany``, whole partition batches, one MULTI/EXEC per batch, vectorised
   ranking, outputs through librdkafka (:class:`feedpipe.kafka.producer.AsyncProducer`); run a
   second time with an aiokafka producer for the ratio (``--repeat N``: N interleaved runs of
   each, medians; the machine is shared, so single runs are noisy);
2. **aiokafka per-event** (bench/baseline_per_event.py): a hand-written aiokafka consumer doing
   the same profile and feed update for each event (GET profile, admit + apply the event, rank,
   SET profile + feed, item stats, one pipeline per event), committing after each ``getmany``;
3. **faust per-event** (bench/baseline_per_event.py): a Faust worker (subprocess) whose agent
   does the same per-event update for each event of its stream.

Each variant starts from an empty Redis holding only the catalogue and uses a fresh consumer
group. Rates are events / seconds from the first record fetched to the last batch applied
(group join excluded). The baselines process the first ``--baseline-events`` events (default
5,000) to bound the run time; the click path processes all. Prints events/s and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
# ``--code-root DIR`` (the measuring subprocess): import the click path from that checkout
CODE_ROOT = Path(sys.argv[sys.argv.index("--code-root") + 1]) if "--code-root" in sys.argv else ROOT
sys.path.insert(0, str(CODE_ROOT))

from baseline_per_event import (  # noqa: E402
    FEED_FORMAT,
    catalogue_metas,
    reader_topic,
    run_aiokafka_per_event,
    run_faust_per_event,
)

from feedpipe.model.item import Meta  # noqa: E402
from feedpipe.settings import settings  # noqa: E402
from feedpipe.store.keys import keys  # noqa: E402
from feedpipe.topology import topology  # noqa: E402
from feedpipe.wire.codec import codec  # noqa: E402

RESULT_ENV = "FEEDPIPE_BENCH_RESULT"


def use_feed_format(fmt: str) -> None:
    """Make the click path (and the baselines) store feeds in ``fmt`` for this process."""
    from streams.clickpath import write

    topo = topology()
    patched = topo.model_copy(
        update={"ranking": topo.ranking.model_copy(update={"feed_format": fmt})}
    )
    write.topology = lambda: patched  # type: ignore[assignment]
    FEED_FORMAT[0] = fmt


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
    from confluent_kafka.admin import AdminClient

    from connectors.replay import Keyed, mind_behavior_events
    from feedpipe.kafka.producer import IdempotentProducer
    from feedpipe.kafka.topics import recreate

    bootstrap = settings().kafka_bootstrap
    recreate(topology(), AdminClient({"bootstrap.servers": bootstrap}))
    enc = codec("ReaderEvent").encode
    p = IdempotentProducer(bootstrap, client_id="bench-clicks", config={"linger.ms": 20})
    topic = reader_topic()
    n = 0
    path = settings().data_dir / "mind" / "behaviors.tsv"
    for item in mind_behavior_events(path, "mind", topology().profiles.history_click_spacing_s):
        if not isinstance(item, Keyed):
            continue
        p.produce(topic, item.key.encode(), enc(item.record))
        n += 1
    p.flush(60)
    return n


# -- variant 1: the click path -------------------------------------------------------------


class AiokafkaOutput:
    """The click path's output producer on aiokafka's ``AIOKafkaProducer`` (idempotent,
    acks=all, linger 5 ms): the comparison for the worker's librdkafka
    :class:`feedpipe.kafka.producer.AsyncProducer`."""

    def __init__(self, bootstrap: str) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(
            **settings().aiokafka_config(), bootstrap_servers=bootstrap,
            enable_idempotence=True, acks="all", linger_ms=5,
        )

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> Any:
        """Queue one record; returns aiokafka's delivery future."""
        return await self._producer.send(topic, key=key, value=value)

    async def stop(self) -> None:
        """Flush and close."""
        await self._producer.stop()


def run_clickpath(total: int, producer_client: str = "librdkafka") -> float:
    """Run the worker's click path until ``total`` records are applied; return events/s.

    ``producer_client``: the output producer, ``librdkafka`` (the worker's) or ``aiokafka``
    (:class:`AiokafkaOutput`, for the ratio)."""
    from streams import runtime
    from streams.clickpath.consumer import run_consumer
    from streams.clickpath.records import BatchResult

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
            on_batch=on_batch,
            producer=AiokafkaOutput(settings().kafka_bootstrap)
            if producer_client == "aiokafka" else None,
        )

    asyncio.run(go())
    return state["n"] / (state["t_last"] - state["t_first"])


def produce_live(metas: list[Meta], n: int) -> int:
    """Recreate the topics and publish ``n`` live-shaped events over ``metas``; return ``n``."""
    from confluent_kafka.admin import AdminClient

    from feedpipe.kafka.topics import recreate
    from ops.simulate import KafkaSink, Population

    bootstrap = settings().kafka_bootstrap
    recreate(topology(), AdminClient({"bootstrap.servers": bootstrap}))
    pop = Population([m.content_id for m in reversed(metas)])  # newest first (load_catalogue)
    stream = pop.events(3_000.0, int(time.time() * 1000))
    sink = KafkaSink(bootstrap)
    events = [next(stream) for _ in range(n)]
    enc = codec("ReaderEvent").encode
    for ev in events:
        sink.producer.produce(sink.topic, ev["user_id"].encode(), enc(ev))
    sink.close()
    users = len({ev["user_id"] for ev in events})
    clicks = sum(ev["type"] == "click" for ev in events)
    print(f"published {n:,} live-shaped events: {users:,} users, {clicks / n:.1%} clicks")
    return n


def measure(total: int, phased: bool = True) -> dict[str, Any]:
    """In this process: flush Redis and load the catalogue, run the consumer loop over
    ``total`` records (with the phase counters when ``phased``); return events, events/s, CPU
    seconds, CPU seconds per phase (empty without counters), output bytes per topic and the
    Redis server's CPU seconds."""
    import aiokafka
    import phases

    class PatientConsumer(aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
        """The worker's consumer with a 45 s session: on this shared 2-core machine a base
        checkout that ranks on the event loop misses 10 s of heartbeats and is evicted."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(session_timeout_ms=45_000, heartbeat_interval_ms=3_000)
            super().__init__(*args, **kwargs)

    aiokafka.AIOKafkaConsumer = PatientConsumer  # type: ignore[misc]
    # the catalogue written with this checkout's own key layout
    load_catalogue(catalogue_metas())
    # the click path imported before the clock starts in both modes (phases.install imports
    # it; the consumer module pulls in Faust, ~0.4 s of CPU)
    import streams.clickpath.consumer  # noqa: F401

    if phased:
        phases.install()
    r0 = redis_cpu_s()
    cpu0 = time.process_time()
    rate = run_clickpath(total)
    cpu = time.process_time() - cpu0
    return {"events": total, "rate": rate, "cpu_s": cpu, "phases": dict(phases.CPU),
            "out_bytes": dict(phases.OUT_BYTES), "redis_cpu_s": redis_cpu_s() - r0}


def redis_cpu_s() -> float:
    """The Redis server's CPU seconds so far (``INFO cpu``: user + sys of the main thread
    and its children)."""
    import redis

    info = redis.Redis.from_url(settings().redis_url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure_in(checkout: Path, total: int, phased: bool = True) -> dict[str, Any]:
    """:func:`measure` in a subprocess importing the click path from ``checkout`` (which
    flushes Redis and writes the catalogue with that checkout's key layout)."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(total), "--code-root", str(checkout),
         *([] if phased else ["--no-phases"])],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"measuring {checkout} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def report(shape: str, label: str, m: dict[str, Any], split: dict[str, Any]) -> None:
    """Print one measurement: events/s and CPU us per event of the run without counters
    (``m``), and the phase split of the run with them (``split``: the counters' own cost,
    two ``process_time`` calls per wrapped call, lands in the phases and is printed apart)."""
    n = m["events"]
    per = {k: v / n * 1e6 for k, v in split["phases"].items()}
    per["other"] = split["cpu_s"] / n * 1e6 - sum(per.values())
    parts = "  ".join(f"{k} {v:.1f}" for k, v in per.items())
    print(f"{shape:<5} {label:<6} {m['rate']:>9,.0f} events/s  {m['cpu_s'] / n * 1e6:>7.1f} us "
          f"CPU/event (no counters)")
    print(f"{'':<12} split, run with counters ({split['cpu_s'] / n * 1e6:.1f} us/event, counters "
          f"{(split['cpu_s'] - m['cpu_s']) / n * 1e6:+.1f}): [{parts}]")
    out = "  ".join(f"{t} {b / n:,.0f}" for t, b in sorted(split.get("out_bytes", {}).items()))
    print(f"{'':<12} redis-server {m['redis_cpu_s'] / n * 1e6:.1f} us CPU/event; "
          f"output bytes/event: {out}")


def shapes_main(args: argparse.Namespace) -> None:
    """Both shapes, before (``--base``) and after, in one run: per checkout one run without
    the phase counters (events/s and CPU per event) and one with them (the split)."""
    metas = catalogue_metas()
    for shape in args.shapes.split(","):
        total = produce_events() if shape == "mind" else produce_live(metas, args.live_events)
        got: dict[str, dict[str, Any]] = {}
        checkouts = ([("before", Path(args.base))] if args.base else []) + [("after", ROOT)]
        for label, checkout in checkouts:
            got[label] = measure_in(checkout, total, phased=False)  # loads the catalogue
            report(shape, label, got[label], measure_in(checkout, total))
        if "before" in got:
            b, a = got["before"], got["after"]
            print(f"{shape:<5} after/before: {a['rate'] / b['rate']:.2f}x events/s, "
                  f"{a['cpu_s'] / b['cpu_s']:.2f}x CPU/event")


def main() -> None:
    """Default: both shapes before/after (:func:`shapes_main`); ``--baselines``: the click
    path against the per-event baselines; ``--measure N``: one subprocess measurement."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--code-root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-phases", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base", default=None, help="checkout of the base commit (before)")
    ap.add_argument("--shapes", default="mind,live")
    ap.add_argument("--live-events", type=int, default=200_000)
    ap.add_argument("--baselines", action="store_true",
                    help="the click path against the per-event baselines")
    ap.add_argument("--baseline-events", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="click path runs per producer (interleaved); medians are reported")
    ap.add_argument("--clickpath-only", action="store_true",
                    help="skip the per-event baselines (profiling; prints no baseline ratio)")
    ap.add_argument("--feed-format", choices=["json", "compact"], default=FEED_FORMAT[0])
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, phased=not args.no_phases)))
        return
    if not args.baselines:
        shapes_main(args)
        return
    use_feed_format(args.feed_format)
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
