"""Benchmark the event collector: reader events/s accepted on loopback, against a direct producer.

Usage::

    FEEDPIPE_KAFKA_BOOTSTRAP=127.0.0.1:19092 python bench/bench_collector.py \\
        [--events 100000] [--single 20000] [--concurrency 64] [--clients 1]

Every measurement runs in the same process against the broker of ``FEEDPIPE_KAFKA_BOOTSTRAP``,
into a temporary 4-partition events topic and a 1-partition DLQ created (and deleted) here, so
the pipeline's ``reader.events`` is not touched:

(a) direct producer: ``--events`` ReaderEvent records, validated and encoded up front
    (:func:`connectors.collector.events.check_event`, :class:`connectors.reader_encoder.
    ReaderEventEncoder`), produced by :class:`feedpipe.kafka.producer.IdempotentProducer` and
    flushed: the ceiling of the producer itself (no HTTP, no per-request wait);
(b) collector, batches of 1: ``--single`` ``POST /v1/events`` of one event each;
(c) collector, batches of 50: ``--events`` events in requests of 50.

The collector (one uvicorn process: the server thread of this process, uvloop + httptools)
answers each request once Kafka acknowledged its records (``acks=all``, ``linger.ms=5``). The
load comes from ``--clients`` spawned processes, each with ``--concurrency`` / ``--clients``
keep-alive HTTP/1.1 connections on asyncio streams (requests built once; no client library
cost). Events are clicks of 5,000 users on 500 items, ``occurred_at`` now. An API key with a
rate limit far above the load is used. Prints events/s of each and the ratios (b)/(a), (c)/(a),
and whether (c) reaches the target of 20,000 events/s. Wall-clock timings (``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.collector.events import check_event
from connectors.collector.server import CollectorServer
from connectors.reader_encoder import ReaderEventEncoder
from feedpipe.apikeys import create_key
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings

TARGET = 20_000.0  # reader events/s the collector must accept in batches
USERS, ITEMS = 5_000, 500


def events(n: int, now_ms: int) -> list[dict[str, Any]]:
    """``n`` click events: user i % USERS on item i % ITEMS, distinct positions (ids differ)."""
    return [
        {
            "type": "click",
            "user_id": f"U{i % USERS}",
            "content_id": f"item-{i % ITEMS}",
            "occurred_at": now_ms,
            "impression_id": f"imp-{i // 50}",
            "position": i % 50,
        }
        for i in range(n)
    ]


def direct(producer: IdempotentProducer, topic: str, evs: list[dict[str, Any]]) -> float:
    """(a): seconds to produce and flush the pre-validated, pre-encoded events."""
    now = int(time.time() * 1000)
    enc = ReaderEventEncoder()
    pairs = [(e["user_id"].encode(), enc.encode(check_event(e, now))) for e in evs]
    produce = producer.produce
    t0 = time.perf_counter()
    for key, value in pairs:
        produce(topic, key, value)
    producer.flush(120)
    return time.perf_counter() - t0


async def _load(port: int, requests: list[bytes], conns: int) -> tuple[int, int, str]:
    """Send the pre-built ``requests`` over ``conns`` keep-alive connections; (202s, others,
    first error)."""
    ok = bad = 0
    first = ""
    queue = iter(requests)

    async def conn() -> None:
        nonlocal ok, bad, first
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for raw in queue:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            size = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    size = int(line[15:])
            body = await reader.readexactly(size)
            if head.startswith(b"HTTP/1.1 202"):
                ok += 1
            else:
                bad += 1
                first = first or (head.split(b"\r\n", 1)[0] + b" " + body[:200]).decode()
        writer.close()

    await asyncio.gather(*(conn() for _ in range(conns)))
    return ok, bad, first


def _client(port: int, requests: list[bytes], conns: int, start: Any, out: Any) -> None:
    start.wait()
    out.put(asyncio.run(_load(port, requests, conns)))


def collector_run(
    port: int, token: str, evs: list[dict[str, Any]], batch: int, concurrency: int, clients: int
) -> tuple[int, int, float, str]:
    """(b)/(c): POST ``evs`` in batches of ``batch``; (events accepted, failed requests, seconds,
    first error). The clock runs from the start signal until every client reported."""
    reqs = []
    for i in range(0, len(evs), batch):
        body = orjson.dumps({"events": evs[i : i + batch]})
        reqs.append(
            b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    ctx = mp.get_context("spawn")
    out, start = ctx.Queue(), ctx.Event()
    shares = [reqs[i::clients] for i in range(clients)]
    conns = max(1, concurrency // clients)
    procs = [ctx.Process(target=_client, args=(port, s, conns, start, out)) for s in shares]
    for p in procs:
        p.start()
    time.sleep(3.0)  # the clients import and wait on the start signal
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=900) for _ in procs]
    secs = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    errors = [r[2] for r in results if r[2]]
    return sum(r[0] for r in results) * batch, sum(r[1] for r in results), secs, (
        errors[0] if errors else ""
    )


def main() -> None:
    """Run (a), (b), (c) and print the rates and ratios."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="events for (a) and (c)")
    ap.add_argument("--single", type=int, default=20_000, help="requests of one event for (b)")
    ap.add_argument("--concurrency", type=int, default=64, help="connections in all")
    ap.add_argument("--clients", type=int, default=1, help="client processes")
    args = ap.parse_args()
    bootstrap = settings().kafka_bootstrap
    tag = uuid.uuid4().hex[:8]
    topic, dlq = f"bench-collector-{tag}", f"bench-collector-{tag}.dlq"
    admin = AdminClient(settings().kafka_config())
    for f in admin.create_topics([NewTopic(topic, 4, 1), NewTopic(dlq, 1, 1)]).values():
        f.result(30)
    producer = IdempotentProducer(bootstrap, client_id="bench-collector")
    try:
        now = int(time.time() * 1000)
        evs = events(args.events, now)
        t_direct = direct(producer, topic, evs)
        with tempfile.TemporaryDirectory() as tmp:
            keys = Path(tmp) / "api-keys.json"
            _, token = create_key(keys, "bench", ["events:write"], 1e9, 10**9)
            srv = CollectorServer(producer, keys, topic=topic, dlq=dlq)
            thread = threading.Thread(target=srv.run, daemon=True)
            thread.start()
            if not srv.started.wait(60):
                raise RuntimeError("collector did not start")
            try:
                single = collector_run(
                    srv.port, token, evs[: args.single], 1, args.concurrency, args.clients
                )
                batched = collector_run(srv.port, token, evs, 50, args.concurrency, args.clients)
            finally:
                srv.stop()
                thread.join(30)
    finally:
        producer.close()
        for f in admin.delete_topics([topic, dlq]).values():
            f.result(30)
    rate_direct = args.events / t_direct
    print(f"collector bench on {os.cpu_count()} cores; broker {bootstrap}; "
          f"{args.concurrency} connections from {args.clients} client process(es)")  # fmt: skip
    print(f"(a) direct producer         {rate_direct:>10,.0f} events/s  ({args.events:,} events)")
    for label, (ok, bad, secs, err) in (("(b) collector, batches of 1 ", single),
                                        ("(c) collector, batches of 50", batched)):  # fmt: skip
        rate = ok / secs
        tail = f" first error: {err}" if err else ""
        print(f"{label}  {rate:>10,.0f} events/s  ({ok:,} accepted, {bad} failed requests, "
              f"{secs:.1f} s; {rate / rate_direct:.2f} x direct){tail}")  # fmt: skip
    rate_c = batched[0] / batched[2]
    verdict = "reached" if rate_c >= TARGET else "NOT reached"
    print(f"target {TARGET:,.0f} events/s in batches: {verdict} ({rate_c:,.0f})")


if __name__ == "__main__":
    main()
