"""Benchmark the read endpoint: ``GET /v1/feeds/{user}?limit=50`` at a fixed open-loop rate.

Usage: ``python bench/bench_read.py [--rate 2000] [--seconds 20] [--users 2000]``
(Redis from ``FEEDPIPE_REDIS_URL``; ``feedpipe up --no-replay`` or ``python -m ops.infra up``
starts one).

1. Seeds Redis with ``--users`` feeds of 100 ranked entries each over a pool of 3,000 content
   items of realistic size (MIND titles and abstracts when the shared data is there, a ~1.5 KB
   body each), under ``fp:feed:bench-*`` / ``fp:content:bench-*`` (deleted at the end).
2. Starts the API as it runs in production: ``python -m readapi`` (uvicorn, one worker, uvloop +
   httptools, API key check, rate limiter, metrics and the JSON access log on, written to a file).
3. In a separate load process: the **baseline**, the same read done directly against Redis from
   Python (redis-py asyncio + hiredis: GET the feed, MGET the 50 contents, orjson-parse them,
   orjson-dump the 50 summaries) at the same open-loop rate; then the **API** load: requests
   sent on a fixed schedule (i / rate s after start) over keep-alive connections, whatever the
   earlier requests are doing (open loop). Latency runs from the scheduled send time to the
   last byte of the response, so a stalled server is not hidden (no coordinated omission;
   Tene, "How NOT to measure latency", 2015).
4. Prints p50, p99, max and errors of both, and the ratio API / direct (goal: p99 <= 5 ms at
   2,000 requests/s, ratio <= 3x).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis

from feedpipe.apikeys import create_key
from feedpipe.settings import ROOT, settings
from feedpipe.store.keys import keys

CONTENT_POOL = 3000
FEED_LEN = 100
LIMIT = 50
MAX_CONNECTIONS = 256


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _texts() -> list[tuple[str, str]]:
    path = settings().data_dir / "mind" / "news.tsv"
    out: list[tuple[str, str]] = []
    if path.exists():
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
                out.append((row[3], row[4]))
                if len(out) >= CONTENT_POOL:
                    break
    while len(out) < CONTENT_POOL:
        n = len(out)
        out.append((f"Headline number {n}", f"An abstract of item {n}, two sentences long. " * 2))
    return out


def seed(r: redis.Redis, users: int) -> tuple[list[str], list[str]]:
    """Write the content pool and the users' feeds; return (user ids, keys written)."""
    k = keys()
    rng = random.Random(7)
    now = int(time.time() * 1000)
    written: list[str] = []
    pipe = r.pipeline(transaction=False)
    cids = [f"bench-c{i}" for i in range(CONTENT_POOL)]
    for i, ((title, abstract), cid) in enumerate(zip(_texts(), cids, strict=True)):
        doc = {
            "content_id": cid, "source": "bench", "source_id": str(i), "kind": "article",
            "brand": "mind", "status": "published", "title": title, "summary": abstract,
            "body": ("Body text of a benchmark article. " * 45)[:1500],
            "url": f"https://example.test/{cid}", "authors": ["Bench Writer"],
            "published_at": now - i * 60_000, "updated_at": None,
            "categories": ["news", "sport" if i % 2 else "food"], "tags": ["bench"], "media": [],
            "language": "en", "word_count": 250, "reading_time_s": 60, "keywords": ["bench"],
            "topics": ["bench"], "entities": [], "content_hash": f"h{i}", "enriched_at": now,
        }
        pipe.set(k.content(cid), orjson.dumps(doc))
        written.append(k.content(cid))
    user_ids = [f"bench-u{u}" for u in range(users)]
    for u in user_ids:
        picked = rng.sample(cids, FEED_LEN)
        items = [
            {"content_id": cid, "brand": "mind", "rank": j + 1, "score": 1.0 - j / FEED_LEN,
             "affinity": 0.5, "recency": 0.3, "engagement": 0.1,
             "weights": {"a": 0.6, "b": 0.2, "c": 0.2}}
            for j, cid in enumerate(picked)
        ]
        feed = {"user_id": u, "profile_version": 1, "generated_at": now, "ranker": "affinity",
                "items": items}
        pipe.set(k.feed(u), orjson.dumps(feed))
        written.append(k.feed(u))
    pipe.execute()
    return user_ids, written


def settle_persistence(r: redis.Redis, timeout_s: float = 120.0) -> None:
    """Rewrite the AOF now (when Redis has one) and wait for every background save to end.

    Seeding writes tens of MB; Redis would otherwise start its automatic AOF rewrite during the
    timed phase, and the fork() behind it stalls the server for up to a second on this VM
    (measured), which is Redis' persistence, not the read path being benchmarked.
    """
    info = r.info("persistence")
    if info.get("aof_enabled") and not info.get("aof_rewrite_in_progress"):
        r.bgrewriteaof()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = r.info("persistence")
        busy = info.get("aof_rewrite_in_progress") or info.get("rdb_bgsave_in_progress")
        if not busy and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.2)


# -- load process ----------------------------------------------------------------------------


async def _direct(redis_url: str, users: list[str], n: int) -> list[float]:
    """The same read against Redis from Python, ``n`` reads one at a time; latencies in s."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url)
    k = keys()

    async def read(user: str) -> bytes:
        feed = orjson.loads(await r.get(k.feed(user)))
        ids = [e["content_id"] for e in feed["items"][:LIMIT]]
        raws = await r.mget([k.content(c) for c in ids])
        out = []
        for rank, raw in enumerate(raws, 1):
            d = orjson.loads(raw)
            out.append({"rank": rank, "content_id": d["content_id"], "title": d["title"],
                        "summary": d["summary"], "url": d["url"], "brand": d["brand"],
                        "categories": d["categories"], "published_at": d["published_at"]})
        return orjson.dumps({"user_id": user, "items": out})

    result = await _sequential(read, users, n)
    await r.aclose()
    return result


async def _sequential(fn: Any, users: list[str], n: int) -> list[float]:
    rng = random.Random(5)
    out = []
    for _ in range(n):
        u = rng.choice(users)
        t0 = time.perf_counter()
        await fn(u)
        out.append(time.perf_counter() - t0)
    return out


async def _open_loop(fn: Any, users: list[str], rate: float, seconds: float) -> list[float]:
    """Call ``fn(user)`` at ``rate`` per second for ``seconds`` (open loop); latencies in s
    from the scheduled time (``inf`` for an error; the first errors are printed)."""
    n = int(rate * seconds)
    lat = [float("inf")] * n
    rng = random.Random(11)
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    start = clock() + 0.2
    errors: dict[str, int] = {}

    async def one(i: int, due: float) -> None:
        try:
            await fn(rng.choice(users))
            lat[i] = clock() - due
        except Exception as exc:
            name = f"{type(exc).__name__}: {exc}"[:80]
            errors[name] = errors.get(name, 0) + 1

    pending: set[asyncio.Task[None]] = set()
    gc.collect()
    gc.disable()  # no collector pauses in the load generator while it keeps time
    try:
        for i in range(n):
            due = start + i / rate
            delay = due - clock()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        while pending:
            await asyncio.gather(*list(pending))
    finally:
        gc.enable()
    if errors:
        print("  load errors:", errors)
    return lat


class _Http:
    """Minimal HTTP/1.1 keep-alive client (a pool of raw asyncio connections): the load
    generator must cost far less CPU than the server it measures."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = f"Host: 127.0.0.1\r\nX-API-Key: {token}\r\n\r\n".encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.statuses: dict[int, int] = {}

    async def get(self, path: str) -> None:
        request = b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.head
        while True:
            reused = bool(self.idle)
            conn = self.idle.pop() if reused else await asyncio.open_connection(
                "127.0.0.1", self.port
            )
            reader, writer = conn
            try:
                writer.write(request)
                status_line = await reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line or not reused:
                break
            writer.close()  # the server closed an idle keep-alive connection: reconnect
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.idle.append(conn)
        if status != 200:
            raise RuntimeError(status)


async def _api(conf: dict[str, Any]) -> dict[str, Any]:
    http = _Http(conf["port"], conf["token"])
    users, rate = conf["users"], conf["rate"]

    async def read(user: str) -> None:
        await http.get(f"/v1/feeds/{user}?limit={LIMIT}")

    async def health(user: str) -> None:
        await http.get("/healthz")

    # Cold reads, one at a time: every user's first page is rendered (page cache miss; the
    # content summaries are cached after the first few users).
    cold = [0.0] * len(users)
    for i, u in enumerate(users):
        t0 = time.perf_counter()
        await read(u)
        cold[i] = time.perf_counter() - t0
    warm = await _sequential(read, users, conf["sequential"])
    floor = await _open_loop(health, users, rate, conf["floor_seconds"])
    # Warm-up at the target rate, reported apart: with --workers > 1 the one-at-a-time passes
    # above reused one connection, so the other processes' page caches are still cold.
    warmup = await _open_loop(read, users, rate, conf["warmup_seconds"])
    http.statuses.clear()
    load = await _open_loop(read, users, rate, conf["seconds"])
    return {
        "cold": cold, "warm": warm, "floor": floor, "warmup": warmup, "api": load,
        "statuses": http.statuses,
    }


def _load(conf: dict[str, Any], out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    direct = asyncio.run(_direct(conf["redis_url"], conf["users"], conf["sequential"]))
    res = asyncio.run(_api(conf))
    out.send({"direct": direct, **res})


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live child processes (the uvicorn
    workers with ``--workers`` > 1), from Linux /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields_s = stat.read_text().rsplit(")", 1)[1]
        except OSError:  # the process exited meanwhile
            continue
        fields = fields_s.split()
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself or a child
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _stats(lat: list[float]) -> dict[str, float]:
    a = np.array(lat)
    ok = a[np.isfinite(a)] * 1000.0
    if ok.size == 0:
        return {"n": float(a.size), "errors": float(a.size), "p50": np.nan, "p99": np.nan,
                "max": np.nan}
    return {
        "n": float(a.size),
        "errors": float(a.size - ok.size),
        "p50": float(np.percentile(ok, 50)),
        "p99": float(np.percentile(ok, 99)),
        "max": float(ok.max()),
    }


def main() -> None:
    """Seed, start the API, run the load process, print the results, clean up."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="requests/s (open loop)")
    ap.add_argument("--seconds", type=float, default=20.0, help="API load duration, s")
    ap.add_argument("--sequential", type=int, default=3000, help="one-at-a-time reads")
    ap.add_argument("--floor-seconds", type=float, default=5.0, help="/healthz load, s")
    ap.add_argument(
        "--warmup-seconds", type=float, default=5.0, help="feed load before the measured run, s"
    )
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=1, help="API processes (FEEDPIPE_API_WORKERS)")
    ap.add_argument("--no-access-log", action="store_true", help="API without per-request log")
    ap.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    args = ap.parse_args()

    s = settings()
    r = redis.Redis.from_url(s.redis_url)
    r.ping()
    users, written = seed(r, args.users)
    settle_persistence(r)
    tmp = Path(tempfile.mkdtemp(prefix="bench-read-"))
    keys_path = tmp / "api-keys.json"
    _, token = create_key(keys_path, "bench", ["feeds:read"], 1_000_000.0, 1_000_000)
    port = args.port or _free_port()
    env = {
        **os.environ,
        "FEEDPIPE_API_PORT": str(port),
        "FEEDPIPE_API_HOST": "127.0.0.1",
        "FEEDPIPE_API_KEYS_FILE": str(keys_path),
        "FEEDPIPE_API_ACCESS_LOG": "false" if args.no_access_log else "true",
    }
    log = tmp / "api.log"
    with log.open("wb") as fh:
        cmd = [sys.executable, "-m", "readapi", "--workers", str(args.workers)]
        api = subprocess.Popen(cmd, cwd=ROOT, env=env,
                               stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if api.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"API did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        conf = {"redis_url": s.redis_url, "users": users, "rate": args.rate,
                "seconds": args.seconds, "sequential": args.sequential,
                "floor_seconds": args.floor_seconds, "warmup_seconds": args.warmup_seconds,
                "port": port, "token": token}
        proc = ctx.Process(target=_load, args=(conf, child))
        cpu0 = _cpu_s(api.pid)
        proc.start()
        res = parent.recv()
        api_cpu = _cpu_s(api.pid) - cpu0
        proc.join()
    finally:
        api.terminate()
        api.wait(timeout=20)
        r.delete(*written) if written else None

    names = ("direct", "cold", "warm", "floor", "warmup", "api")
    st = {name: _stats(res[name]) for name in names}
    d, w, a = st["direct"], st["warm"], st["api"]
    print(f"GET /v1/feeds/{{user}}?limit={LIMIT}: {len(users):,} users x {FEED_LEN} entries, "
          f"{CONTENT_POOL:,} contents; API access log {'off' if args.no_access_log else 'on'}; "
          f"{os.cpu_count()} cores shared by API, Redis and the load process")
    rows = [
        ("direct Redis from Python, one at a time", "direct"),
        ("API cold first read per user, one at a time", "cold"),
        ("API warm reads, one at a time", "warm"),
        (f"API /healthz floor, open loop {args.rate:,.0f}/s", "floor"),
        (f"API feeds warm-up, {args.rate:,.0f}/s, {args.warmup_seconds:g} s", "warmup"),
        (f"API feeds, open loop {args.rate:,.0f}/s, {args.seconds:g} s", "api"),
    ]
    for label, name in rows:
        x = st[name]
        print(f"  {label:<46} n={x['n']:>7,.0f}  p50={x['p50']:7.2f} ms  "
              f"p99={x['p99']:8.2f} ms  max={x['max']:8.2f} ms  errors={x['errors']:,.0f}")
    print(f"  API statuses under load: {res['statuses']}")
    n_api = sum(st[name]["n"] for name in names[1:])
    print(f"  API process CPU: {api_cpu:.1f} s for {n_api:,.0f} requests = "
          f"{1000 * api_cpu / n_api:.3f} ms/request")
    print(f"  ratio API/direct (one at a time): p50 {w['p50'] / d['p50']:.2f}x  "
          f"p99 {w['p99'] / d['p99']:.2f}x   (goal <= 3x)")
    print(f"  ratio API under load / direct one at a time: p50 {a['p50'] / d['p50']:.2f}x  "
          f"p99 {a['p99'] / d['p99']:.2f}x")
    verdict = "met" if a["p99"] <= 5.0 and a["errors"] == 0 else "NOT met"
    print(f"  goal p99 <= 5 ms at {args.rate:,.0f} req/s with 0 errors: {verdict}")


if __name__ == "__main__":
    main()
