"""Benchmark the read endpoint's celebrity merge on page-cache misses: the reader's interest
vector read per miss (the whole profile read and decoded) against the per-profile-version cache
of readapi/interests.py, in one run.

Usage: ``python bench/bench_celebrity_merge.py [--users 1000] [--celebrities 30] [--passes 3]``
with ``FEEDPIPE_REDIS_URL`` pointing at a Redis the benchmark may wipe (it flushes the database).

Data: the MIND catalogue (``news.tsv`` as ranking features with text vectors, read in place) and
``--users`` readers resampled from MIND ``behaviors.tsv`` (bench/bench_memory.py ``load``: the
click path's own code writes their profiles, with interest vectors, and feeds, compact
formats); ``--celebrities`` catalogue items marked as celebrity items of brand mind.

For each reader, after reading its stored feed (the page cache's input), in the read
endpoint's own code (:class:`readapi.store.Store`, :func:`readapi.fallback.merge_celebrities`):

* **per miss** (the behaviour before the cache): ``Store.interest`` with a cache of size 0, so
  every call reads and decodes the profile;
* **cached**: ``Store.interest`` with the default cache: the first pass fills it (misses), the
  next ``--passes - 1`` passes hit (the same profile versions);

and the whole merge (``merge_celebrities``) in both set-ups. Prints the median and mean
microseconds per call (wall time of the awaited call, asyncio on this process, Redis local) and
the ratio per miss / cached.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_clicks import catalogue_metas, load_catalogue  # noqa: E402
from bench.bench_memory import load  # noqa: E402
from feedpipe.rank.fanout import CelebrityCache  # noqa: E402
from feedpipe.rank.weights import WeightsRegistry  # noqa: E402
from feedpipe.settings import settings  # noqa: E402
from feedpipe.store.client import async_client  # noqa: E402
from feedpipe.store.keys import keys  # noqa: E402
from readapi.fallback import merge_celebrities  # noqa: E402
from readapi.guards import CircuitBreaker  # noqa: E402
from readapi.interests import InterestCache  # noqa: E402
from readapi.store import Store, parse_feed  # noqa: E402


def _us(xs: list[float]) -> str:
    med, mean = statistics.median(xs) * 1e6, statistics.fmean(xs) * 1e6
    return f"median {med:8.1f} us, mean {mean:8.1f} us"


async def _timed(calls: list[Any]) -> list[float]:
    out = []
    for fn in calls:
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


async def measure(ids: list[str], passes: int) -> dict[str, list[float]]:
    """Seconds per call of each variant (see the module docstring)."""
    client = async_client(settings().redis_url)
    res: dict[str, list[float]] = {}
    try:
        uncached = Store(client, CircuitBreaker(5, 5.0), interests=InterestCache(max_entries=0))
        cached = Store(client, CircuitBreaker(5, 5.0))
        celebs = CelebrityCache()
        await uncached.refresh_celebrities(celebs)
        weights = WeightsRegistry()
        feeds = []
        for u in ids:
            raw, version = await uncached.feed_raw(u)
            feed = parse_feed(raw)
            if feed.get("digest") is not None:
                feeds.append((u, feed, version))
        print(f"{len(feeds)} readers with a feed and a digest; {len(celebs)} celebrity items")

        def interest_calls(store: Store) -> list[Any]:
            return [lambda u=u, f=f: store.interest(u, f) for u, f, _ in feeds]

        def merge_calls(store: Store) -> list[Any]:
            return [
                lambda u=u, f=f, v=v: merge_celebrities(
                    store, celebs, weights, u, f, list(f.get("items") or []), v)
                for u, f, v in feeds
            ]

        await _timed(interest_calls(uncached)[:50])  # warm the connection and the codecs
        res["interest per miss"] = []
        for _ in range(passes):
            res["interest per miss"] += await _timed(interest_calls(uncached))
        res["interest cache fill"] = await _timed(interest_calls(cached))
        res["interest cached"] = []
        for _ in range(passes - 1):
            res["interest cached"] += await _timed(interest_calls(cached))
        res["merge per miss"] = await _timed(merge_calls(uncached))
        res["merge cached"] = await _timed(merge_calls(cached))
    finally:
        await client.aclose()
    return res


def main() -> None:
    """Load, measure and print (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--celebrities", type=int, default=30)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    metas = catalogue_metas()
    load_catalogue(metas)  # flushes the database first
    r = redis.Redis.from_url(settings().redis_url)
    k = keys()
    celebs = random.Random(args.seed).sample([m.content_id for m in metas], args.celebrities)
    r.zadd(k.celebrity("mind"), {cid: float(i) for i, cid in enumerate(celebs)})
    r.incr(k.celebrity_version())
    ids = asyncio.run(load(args.users, args.seed, "compact", "compact"))
    res = asyncio.run(measure(ids, args.passes))
    for name, xs in res.items():
        print(f"{name:<22} {len(xs):>6} calls  {_us(xs)}")
    for what in ("interest", "merge"):
        before = statistics.median(res[f"{what} per miss"])
        after = statistics.median(res[f"{what} cached"])
        print(f"{what}: per miss / cached (medians) = {before / after:.1f}x")


if __name__ == "__main__":
    main()
