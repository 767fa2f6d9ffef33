"""Benchmark Redis memory per active user (profile + 100-item feed) against the 4 KB target.

Usage: ``python bench/bench_memory.py [--users 100000] [--format compact|json]
[--profile-format compact|json] [--seed 1]``
with ``FEEDPIPE_REDIS_URL`` pointing at a Redis the benchmark may wipe (it flushes the database).

Data: MIND ``behaviors.tsv`` read in place through the replay connector's event generator
(history clicks, impressions, clicks; ~80 events per user). ``--users`` synthetic users are
*resampled* with replacement from its users (seeded): synthetic user *i* replays the whole
event stream of a drawn user under the id ``{user}.r{i}``, so the per-user event counts follow
the log's distribution. The catalogue is news.tsv as ranking features (bench_clicks.py).

Path: the worker's own code, :class:`streams.clickpath.path.ClickPath` ``apply_partition`` (Avro
decode, dedup, profile update, ranking, one MULTI/EXEC per batch) with ``publish=False`` (the
Kafka sends are not what is measured), 400 users at a time, each in its own reader.events
partition's batch (:meth:`feedpipe.store.keys.Keys.partition_of`, as in production), the
feed stored in ``--format`` (``ranking.feed_format``; default compact: interned item ordinals,
feedpipe/store/feeds.py) and the profile in ``--profile-format`` (``profiles.profile_format``;
default compact, feedpipe/store/profiles.py).

Prints, per user: ``MEMORY USAGE`` of ``fp:profile:{user}`` and ``fp:feed:{user}`` (mean, p50,
p95; Redis's own accounting of value + key + object overhead), the ``INFO used_memory`` delta
over the load divided by the user count (includes the active-set zset entries, item stats,
trending and pending sets: everything the users cost), the stored value lengths, and the JSON
size of the same feeds for comparison; then the ratio against the 4,096-byte target. The item
ordinal table (``fp:item:ord`` + ``fp:item:id``, feedpipe/store/interning.py) costs per *item*, not
per user: its ``MEMORY USAGE`` is printed separately (total and per item), and is part of the
``used_memory`` delta. Then the delta split by key family (the growth of each family's
``MEMORY USAGE`` over the load, per user, marked per user / per item / expires; the keyspace
tables' growth from ``MEMORY STATS``; the rest as ``unattributed``), and the all-in figure per
active user at scale: the per-user families plus their keys' share of the keyspace tables.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_clicks import catalogue_metas, load_catalogue  # noqa: E402
from feedpipe.settings import settings  # noqa: E402
from feedpipe.store.feeds import decode_feed  # noqa: E402
from feedpipe.store.interning import ITEMS, resolve_sync  # noqa: E402
from feedpipe.store.keys import keys  # noqa: E402
from feedpipe.store.profiles import stored_ordinals  # noqa: E402
from feedpipe.topology import topology  # noqa: E402
from feedpipe.wire.codec import codec  # noqa: E402

TARGET_BYTES = 4096
USERS_PER_BATCH = 400
PER_USER = ("profile", "feed", "audience", "active")
"""Families whose size grows with the active users (docs/capacity.md, "Memory per user")."""
TRANSIENT = ("pending",)
"""Families that expire (``profiles.pending_ttl_hours``): clicks waiting for their item."""


def user_streams() -> dict[str, list[dict[str, Any]]]:
    """MIND reader events grouped by user, in file order."""
    from connectors.files.mind import mind_behavior_events
    from connectors.records import Keyed

    path = settings().data_dir / "mind" / "behaviors.tsv"
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in mind_behavior_events(path, "mind", topology().profiles.history_click_spacing_s):
        if isinstance(item, Keyed):
            out[item.record["user_id"]].append(item.record)
    return out


def pct(xs: list[int], q: float) -> float:
    """The q-quantile (0..1) of xs (nearest rank)."""
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(q * len(s)))]) if s else 0.0


async def load(users: int, seed: int, fmt: str, profile_fmt: str) -> list[str]:
    """Resample ``users`` users and apply their events through ClickPath; return their ids."""
    from streams import runtime
    from streams.clickpath import write
    from streams.clickpath.path import ClickPath
    from streams.clickpath.records import Record

    topo = topology()
    ranking = topo.ranking.model_copy(update={"feed_format": fmt})
    profiles = topo.profiles.model_copy(update={"profile_format": profile_fmt})
    patched = topo.model_copy(update={"ranking": ranking, "profiles": profiles})
    write.topology = lambda: patched  # type: ignore[assignment]

    streams = user_streams()
    originals = sorted(streams)
    rng = random.Random(seed)
    enc = codec("ReaderEvent").encode
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)

    async def send(topic: str, key: bytes, value: bytes | None) -> asyncio.Future[None]:
        return done

    runtime.redis_client.cache_clear()
    path = ClickPath(send, publish=False)
    k = keys()
    offsets = [0] * k.n_partitions
    ids: list[str] = []
    events = 0
    t0 = time.perf_counter()
    for lo in range(0, users, USERS_PER_BATCH):
        per_part: dict[int, list[Record]] = defaultdict(list)
        for i in range(lo, min(users, lo + USERS_PER_BATCH)):
            orig = rng.choice(originals)
            uid = f"{orig}.r{i}"
            ids.append(uid)
            key = uid.encode()
            part = k.partition_of(uid)  # as the producers key reader events
            for ev in streams[orig]:
                value = enc({**ev, "user_id": uid})
                per_part[part].append(
                    Record(topo.ingest.reader_events, part, offsets[part], key, value)
                )
                offsets[part] += 1
        for part in sorted(per_part):
            await path.apply_partition(part, per_part[part])
            events += len(per_part[part])
        if (lo // USERS_PER_BATCH) % 25 == 0:
            rate = events / (time.perf_counter() - t0)
            print(f"  {len(ids):>7} users, {events:>9} events, {rate:,.0f} events/s", flush=True)
    print(f"loaded {len(ids)} users ({events} events) in {time.perf_counter() - t0:.0f} s")
    return ids


def family(key: bytes) -> str:
    """A key's family for the breakdown: its first part after the prefix and the hash tag
    (``profile``, ``audience``, ``stats``), two for the item table (``item:ord``)."""
    parts = key.decode(errors="replace").split(":")[1:]
    if parts and parts[0].startswith("{"):
        parts = parts[1:]
    if not parts:
        return "?"
    return ":".join(parts[:2]) if parts[0] == "item" else parts[0]


def families(r: Any) -> tuple[dict[str, int], dict[str, int]]:
    """``MEMORY USAGE`` (every element, ``SAMPLES 0``) summed per key family, and key counts."""
    sums: dict[str, int] = {}
    counts: dict[str, int] = {}
    batch: list[bytes] = []

    def flush() -> None:
        with r.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            got = pipe.execute()
        for key, size in zip(batch, got, strict=True):
            f = family(key)
            sums[f] = sums.get(f, 0) + int(size or 0)
            counts[f] = counts.get(f, 0) + 1
        batch.clear()

    for key in r.scan_iter(count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            flush()
    if batch:
        flush()
    return sums, counts


def keyspace_overhead(r: Any) -> int:
    """Bytes of the keyspace's own tables (``MEMORY STATS`` ``overhead.total`` minus the
    start-up allocation: the main and expires dicts' entries and buckets, clients, caches)."""
    stats = {
        (k.decode() if isinstance(k, bytes) else str(k)): v for k, v in r.memory_stats().items()
    }
    return int(stats["overhead.total"]) - int(stats["startup.allocated"])


def print_families(
    before: tuple[dict[str, int], dict[str, int]],
    after: tuple[dict[str, int], dict[str, int]],
    users: int,
    delta: int,
    overhead: int,
) -> float:
    """Where the ``used_memory`` delta goes: the growth of each key family's ``MEMORY USAGE``
    over the load, per user; the keyspace tables' growth (``overhead``: dict entries and
    buckets of the main and expires tables), and the rest (allocator rounding) as
    ``unattributed``. Returns the all-in bytes per active user at scale: the per-user families
    (:data:`PER_USER`) plus their keys' share of the keyspace tables; per-item families and
    the transient pending sets (:data:`TRANSIENT`, expiring after
    ``profiles.pending_ttl_hours``) are listed but do not grow with the users."""
    sums = {f: v - before[0].get(f, 0) for f, v in after[0].items()}
    counts = {f: v - before[1].get(f, 0) for f, v in after[1].items()}
    print(f"where used_memory goes (MEMORY USAGE by key family, {users:,} users):")
    for f, size in sorted(sums.items(), key=lambda kv: -kv[1]):
        scope = "per user" if f in PER_USER else "expires" if f in TRANSIENT else "per item"
        print(f"  {f:<24} {counts[f]:>8,} keys {size / users:>9,.0f} bytes/user  {scope}")
    new_keys = max(1, sum(counts.values()))
    print(f"  {'keyspace tables':<24} {new_keys:>8,} keys {overhead / users:>9,.0f} bytes/user"
          "  (main + expires dict entries and buckets: MEMORY STATS overhead.total)")
    rest = delta - sum(sums.values()) - overhead
    print(f"  {'unattributed':<24} {'':>8}      {rest / users:>9,.0f} bytes/user")
    user_keys = sum(counts.get(f, 0) for f in PER_USER if f in ("profile", "feed"))
    share = overhead * user_keys / new_keys
    at_scale = (sum(sums.get(f, 0) for f in PER_USER) + share) / users
    print(
        f"all-in per active user at scale: {' + '.join(PER_USER)} + their keys' share of the "
        f"keyspace tables ({share / users:,.0f}) = {at_scale:,.0f} bytes/user"
    )
    return at_scale


def main() -> None:
    """Run the benchmark and print the per-user memory against the target."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--format", choices=["compact", "json"], default="compact")
    ap.add_argument("--profile-format", choices=["compact", "json"], default="compact")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import redis

    r = redis.Redis.from_url(settings().redis_url)
    load_catalogue(catalogue_metas())  # flushes the database first
    fam_before = families(r)
    before = int(r.info("memory")["used_memory"])
    over_before = keyspace_overhead(r)
    ids = asyncio.run(load(args.users, args.seed, args.format, args.profile_format))
    after = int(r.info("memory")["used_memory"])
    overhead = keyspace_overhead(r) - over_before
    fam_after = families(r)
    k = keys()
    ITEMS.sync(r.get(k.item_gen()))
    prof_mem: list[int] = []
    feed_mem: list[int] = []
    prof_len: list[int] = []
    feed_len: list[int] = []
    items: list[int] = []
    json_len: list[int] = []
    for lo in range(0, len(ids), 5000):
        chunk = ids[lo : lo + 5000]
        with r.pipeline(transaction=False) as pipe:
            for u in chunk:
                pipe.memory_usage(k.profile(u), samples=0)
                pipe.memory_usage(k.feed(u), samples=0)
                pipe.strlen(k.profile(u))
                pipe.get(k.feed(u))
            got = pipe.execute()
        resolve_sync(r, stored_ordinals(got[3::4]))
        for j in range(len(chunk)):
            pm, fm, pl, fv = got[4 * j : 4 * j + 4]
            if pm is None or fv is None:
                continue
            prof_mem.append(int(pm))
            feed_mem.append(int(fm))
            prof_len.append(int(pl))
            feed_len.append(len(fv))
            doc = decode_feed(fv)
            items.append(len(doc["items"]))
            if lo == 0:  # the JSON size of the same feeds, on a sample
                json_len.append(len(orjson.dumps(doc)))
    n = len(prof_mem)
    total = [a + b for a, b in zip(prof_mem, feed_mem, strict=True)]
    delta = (after - before) / max(1, len(ids))
    mean_items = statistics.mean(items)
    print(f"users with profile + feed: {n} of {len(ids)}; feed items mean {mean_items:.1f}")
    print(f"feed format: {args.format}, profile format: {args.profile_format}")
    for name, xs in (
        ("MEMORY USAGE profile", prof_mem),
        ("MEMORY USAGE feed", feed_mem),
        ("MEMORY USAGE profile+feed", total),
        ("stored profile bytes", prof_len),
        ("stored feed bytes", feed_len),
        ("same feeds as JSON (sample)", json_len),
    ):
        print(
            f"  {name:<28} mean {statistics.mean(xs):>8,.0f}  p50 {pct(xs, 0.5):>8,.0f}  "
            f"p95 {pct(xs, 0.95):>8,.0f} bytes"
        )
    print(f"  INFO used_memory delta / user {delta:>10,.0f} bytes")
    n_items = int(r.hlen(k.item_id()))
    table = sum(int(r.memory_usage(key, samples=0) or 0) for key in (k.item_ord(), k.item_id()))
    print(
        f"item ordinal table (per item, not per user): {n_items:,} items, {table:,} bytes "
        f"({table / max(1, n_items):,.0f} bytes/item; {table / max(1, len(ids)):,.0f} bytes/user "
        "at this user count)"
    )
    at_scale = print_families(fam_before, fam_after, len(ids), after - before, overhead)
    mean_total = statistics.mean(total)
    print(
        f"target {TARGET_BYTES} bytes/user: MEMORY USAGE ratio {mean_total / TARGET_BYTES:.2f}, "
        f"used_memory ratio {delta / TARGET_BYTES:.2f}, all-in at scale ratio "
        f"{at_scale / TARGET_BYTES:.2f} (<= 1.00 meets the target)"
    )


if __name__ == "__main__":
    main()
