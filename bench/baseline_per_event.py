"""The naive per-event baselines of bench/bench_clicks.py (not pipeline code).

Both do, for each reader event, the same profile and feed update as the click path, one event
at a time (GET profile, admit + apply the event, rank, SET profile + feed, item stats, one
pipeline per event):

* :func:`run_aiokafka_per_event`: a hand-written aiokafka consumer, committing after each
  ``getmany``;
* :func:`run_faust_per_event`: a Faust worker (a subprocess running this file with
  ``--faust-worker N``) whose agent iterates its stream event by event.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if not any((Path(p or ".") / "feedpipe").is_dir() for p in sys.path):
    sys.path.insert(0, str(ROOT))  # a caller's checkout on sys.path (--code-root) comes first

from feedpipe.ids import content_id  # noqa: E402
from feedpipe.model.admission import admit_events  # noqa: E402
from feedpipe.model.item import CandidateMatrix, Meta  # noqa: E402
from feedpipe.model.profile import Event, apply_events, new_profile  # noqa: E402
from feedpipe.settings import settings  # noqa: E402
from feedpipe.store.keys import keys  # noqa: E402
from feedpipe.topology import slug, topology  # noqa: E402
from feedpipe.wire.codec import codec  # noqa: E402

FEED_FORMAT: list[str] = [topology().ranking.feed_format]  # --feed-format overrides


def reader_topic() -> str:
    """The reader-events topic (topology.yaml ``ingest.reader_events``)."""
    return topology().ingest.reader_events


def catalogue_metas() -> list[Meta]:
    """MIND news.tsv rows as ranking features (read in place), with the text vector of title
    and abstract (:func:`feedpipe.model.text.encode`, English) when the checkout's ``Meta``
    carries one (a checkout older than live similarity has no ``text`` field)."""
    out = []
    path = settings().data_dir / "mind" / "news.tsv"
    with_text = "text" in getattr(Meta, "__dataclass_fields__", {})
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            nid, cat, sub = row[0], row[1], row[2]
            cats = tuple(topology().map_categories("mind", [cat, sub]))
            m = Meta(content_id("mind", nid), "mind", cats, (slug(cat), slug(sub)), None)
            if with_text:
                from feedpipe.model.text import encode

                text = tuple((k, round(v, 4)) for k, v in encode(row[3:5], "en").items())
                m = dataclasses.replace(m, text=text)
            out.append(m)
    return out


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
        from streams.clickpath.catalogue import REGISTRY, feed_json

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
                pipe.hincrby(self.k.stats(rec["content_id"], self.k.partition_of(u)), field, 1)
            await pipe.execute()


def run_aiokafka_per_event(limit: int, metas: list[Meta]) -> float:
    """Hand-written aiokafka consumer, per-event updates; return events/s."""
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaConsumer

    async def go() -> float:
        r = aioredis.Redis.from_url(settings().redis_url)
        upd = PerEvent(r, metas)
        c = AIOKafkaConsumer(
            reader_topic(),
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
        reader_topic(), key_type=bytes, value_type=bytes, key_serializer="raw",
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
    """``--faust-worker N --out FILE [--feed-format F]``: run the Faust baseline worker."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--faust-worker", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--feed-format", choices=["json", "compact"], default=FEED_FORMAT[0])
    args = ap.parse_args()
    FEED_FORMAT[0] = args.feed_format
    faust_worker(args.faust_worker, args.out)


if __name__ == "__main__":
    main()
