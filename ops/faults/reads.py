"""Reading the final state of a fault scenario run back from Kafka and Redis: topic contents,
DLQ records, profiles, feeds (see :mod:`ops.faults` for what is compared)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from feedpipe.topology import topology
from ops.faults.inputs import POISON_KEY_PREFIX, poison_topics
from ops.faults.report import COUNTERS


def wait_feeds_converged(redis_url: str, timeout_s: float = 120.0) -> None:
    """Wait until every partition of the click path's input has feeds that reflect the current
    catalogue and item stats versions (the click path's idle refresher marks
    ``fp:feeds:refreshed:{p}``). Each poll reads the versions and every partition's mark in
    one MGET (:func:`feedpipe.store.client.mget_sync`: on a Redis Cluster one MGET per slot,
    sent in one pipeline per node), not one GET per partition.

    Raises:
        TimeoutError: not converged within ``timeout_s`` seconds.
    """
    from feedpipe.store.client import mget_sync, sync_client
    from feedpipe.store.keys import keys

    r = sync_client(redis_url)
    k = keys()
    topo = topology()
    parts = range(topo.topics[topo.stages["clickpath"].input].partitions)
    names = [k.catalogue_version(), *(k.stats_version(p) for p in parts),
             *(k.feeds_refreshed(p) for p in parts)]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cv, *rest = mget_sync(r, names)
        svs, marks = rest[: len(parts)], rest[len(parts) :]
        sv = sum(int(v or 0) for v in svs)
        mark = f"{int(cv or 0)}:{int(sv or 0)}".encode()
        if all(m == mark for m in marks):
            return
        time.sleep(0.5)
    raise TimeoutError(f"feeds did not converge to the final catalogue and stats in {timeout_s} s")


def consume(
    bootstrap: str, topic_name: str, limit: int | None = None
) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every record of ``topic_name`` up to its end offsets at the call
    (at most ``limit``)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"faults-{uuid.uuid4()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        parts = c.list_topics(topic_name, timeout=10).topics[topic_name].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic_name, p), timeout=10)[1]
                for p in parts}
        c.assign([TopicPartition(topic_name, p, 0) for p in parts])
        out: list[tuple[bytes | None, bytes | None]] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is None or msg.error():
                continue
            out.append((msg.key(), msg.value()))
            if limit is not None and len(out) >= limit:
                break
            if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                done.add(msg.partition())
        return out
    finally:
        c.close()


def raw_cms_of(bootstrap: str, source: str) -> list[dict[str, Any]]:
    """Decoded records of the CMS ingest topic published by connector ``source``."""
    from feedpipe.errors import SerializationError
    from feedpipe.wire.codec import codec

    dec = codec("RawCmsEvent").decode
    out = []
    for _, value in consume(bootstrap, topology().ingest.cms):
        if value is None:
            continue
        try:
            rec = dec(value)
        except SerializationError:
            continue  # another scenario's poison record: not this source's
        if rec.get("source") == source:
            out.append(rec)
    return out


def dead_letters(bootstrap: str) -> tuple[dict[str, int], int, dict[str, int]]:
    """(reader events DLQ'd per user, poison records found in DLQs, DLQ records per
    ``<input topic>:<reason code>``) over the DLQ of every stage."""
    from feedpipe.wire.codec import codec

    dec = codec("DeadLetter").decode
    readers = topology().ingest.reader_events
    per_user: dict[str, int] = Counter()
    reasons: dict[str, int] = Counter()
    found = 0
    for topic_name, dlq in poison_topics().items():
        for key, value in consume(bootstrap, dlq):
            if value is None:
                continue
            d = dec(value)
            reasons[f"{topic_name}:{d['error_type']}"] += 1
            if (key or b"").startswith(POISON_KEY_PREFIX):
                found += 1
            elif topic_name == readers and key:
                per_user[key.decode("utf-8", "replace")] += 1
    return dict(per_user), found, dict(reasons)


def profiles(redis_url: str, users: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each user's profile as stored in Redis (decoded by feedpipe.store.profiles), or None."""
    from feedpipe.store.client import mget_sync, sync_client
    from feedpipe.store.interning import ITEMS, resolve_sync
    from feedpipe.store.keys import keys
    from feedpipe.store.profiles import decode_profile, stored_ordinals

    r = sync_client(redis_url)
    k = keys()
    out: dict[str, dict[str, Any] | None] = {}
    for i in range(0, len(users), 500):
        chunk = users[i : i + 500]
        *raws, gen = mget_sync(r, [k.profile(u) for u in chunk] + [k.item_gen()])
        ITEMS.sync(gen)
        resolve_sync(r, stored_ordinals(raws))
        for u, raw in zip(chunk, raws, strict=True):
            out[u] = decode_profile(raw) if raw is not None else None
    return out


def topic_mismatches(
    bootstrap: str, redis_url: str, stored: Mapping[str, dict[str, Any] | None]
) -> int:
    """Users whose newest record on the click path's ``profiles`` output (UserProfile v1 or
    v2) disagrees with the profile in Redis (``stored``) on a counter or on the interest vector
    (v2; a record written with v1 reads as an empty vector), or who have no feed in Redis."""
    from feedpipe.model.interest import from_wire, interest_of
    from feedpipe.store.client import sync_client
    from feedpipe.store.keys import keys
    from feedpipe.wire.codec import codec

    dec = codec("UserProfile").decode
    newest: dict[str, dict[str, Any] | None] = {}
    for key, value in consume(bootstrap, topology().stages["clickpath"].output("profiles")):
        if key is not None:
            newest[key.decode()] = dec(value) if value is not None else None
    r = sync_client(redis_url)
    k = keys()
    users = [u for u, p in stored.items() if p is not None]
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.exists(k.feed(u))
    has_feed = dict(zip(users, (bool(n) for n in pipe.execute()), strict=True))
    bad = 0
    for u in users:
        p, t = stored[u], newest.get(u)
        assert p is not None
        moved = t is None or any(int(t.get(c) or 0) != int(p.get(c) or 0) for c in COUNTERS)
        if t is not None and "interest" in t and not moved:
            moved = from_wire(t["interest"]) != interest_of(p)
        if moved or not has_feed[u]:
            bad += 1
    return bad
