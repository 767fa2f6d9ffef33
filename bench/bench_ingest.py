"""Benchmark CMS ingest into Kafka: file replay, webhook, and the producer's own ceiling.

Usage::

    FEEDPIPE_KAFKA_BOOTSTRAP=127.0.0.1:19092 python bench/bench_ingest.py \\
        [--repeat 25] [--requests 20000] [--concurrency 128] [--batch 50]

All three measurements run in the same process against the broker of
``FEEDPIPE_KAFKA_BOOTSTRAP``, into a temporary 4-partition topic created (and deleted) here, so
the pipeline's ``cms.raw`` is not touched:

(a) file ingest: the real MIND ``news.tsv`` (2,000 rows, read in place) replayed ``--repeat``
    times through :class:`connectors.replay.ReplayConnector`'s items -> Avro encode -> produce
    path, then flushed (every event acknowledged, ``acks=all``);
(b) webhook ingest: ``--requests`` signed ``POST /v1/webhooks/bench-wp`` of the real WordPress
    posts (one post per request), sent from a separate process over loopback by an
    thread pool of keep-alive ``httpx.Client`` (``--concurrency`` connections over ``--clients``
    processes), to a uvicorn server
    (one worker) in this process; each 202 means the event was acknowledged by Kafka. (b')
    repeats it with a minimal asyncio HTTP/1.1 keep-alive client instead of httpx (the
    server's own ceiling without the client's CPU cost on the same cores), (b2) with
    ``--batch`` posts per request (a JSON list);
    Each 202 waits for the broker's acknowledgement (``acks=all``, ``linger.ms=5``: about 5-8 ms
    here), so at low concurrency the rate is bounded by concurrency / latency, not by CPU: with
    16 connections (b') tops out near 2,000 requests/s, with 64 (the default, a fleet of push
    CMS senders) it is CPU-bound;
(b3) repeats (b') against ``--workers`` receiver processes sharing the port (SO_REUSEPORT),
    each with its own producer, ``--concurrency`` connections per worker;
(c) producer ceiling: the events encoded in (a), pre-encoded, straight into
    :class:`feedpipe.kafka.producer.IdempotentProducer` and flushed.

Prints events/s for each, the ratios (a)/(c), (b)/(c), and whether each reaches the issue's
target of 5,000 CMS events/s. Timings are wall-clock (``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import orjson
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.records import Keyed
from connectors.replay import ReplayConnector
from connectors.webhook.server import WebhookConnector
from connectors.webhook.signature import sign
from connectors.webhook.sources import WebhookSource
from feedpipe.cms.events import SUBJECT as CMS_SUBJECT
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings
from feedpipe.topology import SourceSpec, topology
from feedpipe.wire.codec import codec

TARGET = 5000.0  # CMS events/s the ingest path must sustain
SECRET_ENV = "FEEDPIPE_BENCH_WEBHOOK_SECRET"


def file_ingest(
    producer: IdempotentProducer, topic: str, repeat: int
) -> tuple[int, float, list[tuple[bytes, bytes]]]:
    """(a): returns (events, seconds, the encoded (key, value) pairs for (c))."""
    spec = SourceSpec(
        name="bench-mind", kind="mind.news", brand="mind", path="mind", files=["news.tsv"] * repeat
    )
    conn = ReplayConnector(spec, settings().data_dir, topology().topics, producer=producer)
    encode = codec(CMS_SUBJECT).encode
    produce = producer.produce
    kept: list[tuple[bytes, bytes]] = []
    t0 = time.perf_counter()
    n = 0
    for item in conn.items():
        assert type(item) is Keyed
        key, value = item.key.encode(), encode(item.record)
        produce(topic, key, value)
        kept.append((key, value))
        n += 1
    producer.flush(120)
    return n, time.perf_counter() - t0, kept


def producer_ceiling(
    producer: IdempotentProducer, topic: str, records: list[tuple[bytes, bytes]]
) -> float:
    """(c): seconds to produce and flush pre-encoded records."""
    produce = producer.produce
    t0 = time.perf_counter()
    for key, value in records:
        produce(topic, key, value)
    producer.flush(120)
    return time.perf_counter() - t0


def _signed(secret: bytes, body: bytes) -> dict[str, str]:
    ts = int(time.time())
    return {
        "X-Feedpipe-Timestamp": str(ts),
        "X-Feedpipe-Signature": sign(secret, ts, body),
        "Content-Type": "application/json",
    }


def _httpx_run(
    url: str, secret: bytes, bodies: list[bytes], n: int, conns: int
) -> tuple[int, int, str]:
    """``n`` signed POSTs from a pool of ``conns`` threads, each with its own keep-alive
    ``httpx.Client`` (httpx's sync client is ~3x faster than its async one at this
    concurrency here)."""
    import httpx

    ok = bad = 0
    first_err = ""
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        nonlocal ok, bad, first_err
        with httpx.Client(timeout=60, trust_env=False) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                body = bodies[i % len(bodies)]
                r = client.post(url, content=body, headers=_signed(secret, body))
                with lock:
                    if r.status_code == 202:
                        ok += 1
                    else:
                        bad += 1
                        first_err = first_err or f"{r.status_code} {r.text[:200]}"

    with ThreadPoolExecutor(conns) as pool:
        for f in [pool.submit(worker) for _ in range(conns)]:
            f.result()
    return ok, bad, first_err


async def _raw_run(
    url: str, secret: bytes, bodies: list[bytes], n: int, conns: int
) -> tuple[int, int, str]:
    """The same with a minimal HTTP/1.1 keep-alive client on asyncio streams (no pipelining),
    to see the server's own ceiling without the Python HTTP client's cost."""
    parts = urlsplit(url)
    ok = bad = 0
    first_err = ""
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal ok, bad, first_err
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        for i in counter:
            body = bodies[i % len(bodies)]
            head = "".join(f"{k}: {v}\r\n" for k, v in _signed(secret, body).items())
            writer.write(
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            resp = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in resp.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            text = await reader.readexactly(length)
            if resp.startswith(b"HTTP/1.1 202"):
                ok += 1
            else:
                bad += 1
                status = resp.split(b"\r\n", 1)[0]
                first_err = first_err or (status + b" " + text[:200]).decode()
        writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    return ok, bad, first_err


def _client_proc(
    mode: str, url: str, secret: str, bodies: list[bytes], n: int, conns: int, start: Any, out: Any
) -> None:
    """Client process: waits for ``start``, sends, puts (ok, errors, first error) on ``out``."""
    start.wait()
    if mode == "httpx":
        out.put(_httpx_run(url, secret.encode(), bodies, n, conns))
    else:
        out.put(asyncio.run(_raw_run(url, secret.encode(), bodies, n, conns)))


def webhook_ingest(
    producer: IdempotentProducer,
    topic: str,
    bodies: list[bytes],
    requests: int,
    concurrency: int,
    clients: int,
    mode: str = "httpx",
    workers: int = 1,
) -> tuple[int, int, float, str]:
    """(b): ``requests`` POSTs from ``clients`` processes (``concurrency`` connections in all)
    to a uvicorn server in this process (``workers`` = 1, sharing ``producer``) or to
    ``workers`` receiver processes on one port (each with its own producer); (acknowledged
    requests, failed, seconds, first error). The clock runs from the start signal until every
    client process reported."""
    secret = uuid.uuid4().hex
    os.environ[SECRET_ENV] = secret
    src = WebhookSource("bench-wp", "wordpress.post", "frontity", SECRET_ENV)
    if workers > 1:
        conn = WebhookConnector(
            {"bench-wp": src},
            port=0,
            topic=topic,
            workers=workers,
            bootstrap=settings().kafka_bootstrap,
        )
    else:
        conn = WebhookConnector({"bench-wp": src}, port=0, producer=producer, topic=topic)
    thread = threading.Thread(target=conn.run, daemon=True)
    thread.start()
    if not conn.started.wait(90):
        raise RuntimeError("webhook server did not start")
    try:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        start = ctx.Event()
        url = f"http://127.0.0.1:{conn.port}/v1/webhooks/bench-wp"
        per = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
        conns = max(1, concurrency // clients)
        procs = [
            ctx.Process(target=_client_proc, args=(mode, url, secret, bodies, n, conns, start, q))
            for n in per
        ]
        for proc in procs:
            proc.start()
        time.sleep(3.0)  # let the client processes import and wait on the start signal
        t0 = time.perf_counter()
        start.set()
        results = [q.get(timeout=600) for _ in procs]
        secs = time.perf_counter() - t0
        for proc in procs:
            proc.join(30)
        errs = [r[2] for r in results if r[2]]
        return sum(r[0] for r in results), sum(r[1] for r in results), secs, errs[0] if errs else ""
    finally:
        conn.stop()
        thread.join(30)


def main() -> None:
    """Run (a), (b), (b'), (b2), (c) and print the rates."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--repeat", type=int, default=25, help="news.tsv passes for (a) and (c)")
    ap.add_argument("--requests", type=int, default=20000, help="single-post POSTs for (b)")
    ap.add_argument(
        "--concurrency", type=int, default=64, help="connections in all for (b), per worker (b3)"
    )
    ap.add_argument("--clients", type=int, default=2, help="client processes for (b)")
    ap.add_argument("--batch", type=int, default=50, help="posts per POST for (b2); 0 skips")
    ap.add_argument(
        "--workers", type=int, default=2, help="receiver processes for (b3); 1 skips (b3)"
    )
    args = ap.parse_args()

    bootstrap = settings().kafka_bootstrap
    topic = f"bench.ingest.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(topic, num_partitions=4, replication_factor=1)]
    for fut in admin.create_topics(new).values():
        fut.result(30)
    wp = orjson.loads((settings().data_dir / "wordpress" / "frontity" / "posts.json").read_bytes())
    single = [orjson.dumps(p) for p in wp]
    print(f"broker {bootstrap}, topic {topic}, {os.cpu_count()} CPUs")
    try:
        producer = IdempotentProducer(bootstrap, client_id="bench-ingest")
        rows: dict[str, tuple[int, float]] = {}

        n, secs, records = file_ingest(producer, topic, args.repeat)
        rows["(a) file ingest (MIND news.tsv replay)"] = (n, secs)

        for mode, label in (
            ("httpx", "(b) webhook, 1 post/request, httpx"),
            ("raw", "(b') webhook, 1 post/request, raw client"),
        ):
            ok, bad, secs, err = webhook_ingest(
                producer, topic, single, args.requests, args.concurrency, args.clients, mode
            )
            if bad:
                print(f"webhook ({mode}): {bad} requests failed, first: {err}")
            rows[label] = (ok, secs)

        if args.workers > 1:
            ok, bad, secs, err = webhook_ingest(
                producer,
                topic,
                single,
                args.requests,
                args.concurrency * args.workers,
                args.clients,
                "raw",
                workers=args.workers,
            )
            if bad:
                print(f"webhook ({args.workers} workers): {bad} requests failed, first: {err}")
            rows[f"(b3) webhook, 1 post/request, {args.workers} workers"] = (ok, secs)

        if args.batch > 0:
            batch = orjson.dumps([wp[i % len(wp)] for i in range(args.batch)])
            reqs = max(1, n // args.batch)
            ok, bad, secs, err = webhook_ingest(
                producer, topic, [batch], reqs, min(args.concurrency, 32), args.clients
            )
            if bad:
                print(f"webhook batch: {bad} requests failed, first: {err}")
            rows[f"(b2) webhook, {args.batch} posts/request, httpx"] = (ok * args.batch, secs)

        secs = producer_ceiling(producer, topic, records)
        ceiling = len(records) / secs
        rows["(c) producer ceiling (pre-encoded)"] = (len(records), secs)
        producer.close()

        head = f"{'measurement':44} {'events':>8} {'seconds':>8} {'events/s':>10} {'/(c)':>6}"
        print(f"{head}  >=5000/s")
        for label, (events, s) in rows.items():
            rate = events / s if s > 0 else 0.0
            print(
                f"{label:44} {events:8d} {s:8.2f} {rate:10.0f} {rate / ceiling:6.2f}  "
                f"{'yes' if rate >= TARGET else 'NO'}"
            )
    finally:
        for fut in admin.delete_topics([topic]).values():
            fut.result(30)


if __name__ == "__main__":
    main()
