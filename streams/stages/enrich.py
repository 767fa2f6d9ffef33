"""Stage enrich (a Faust agent): normalised content -> enriched content, materialised in Redis.

input:  content.normalised (key content_id, value feedpipe.Content)
output: content.enriched (compacted; key content_id, value feedpipe.EnrichedContent);
        reader.events 'resolve' events for readers whose clicks waited for this item, and
        'fanout' events (one per audience user and batch, through a librdkafka producer) for
        newly published items (within fanout.max_age_hours) whose audience is
        at most fanout.celebrity_audience (feedpipe/rank/fanout.py; larger: a celebrity item,
        fp:celebrity:{brand}, merged at read time)
dlq:    content.normalised.dlq (undecodable records; ``invalid_content``; ``encoding``: an item
        whose text is still mojibake after repair, never published)
state:  Redis (docs/redis-keys.md), written through feedpipe/store/content.py: content:{id}
        (JSON for the read endpoint), meta:{id} (ranking features), catalogue:{brand} (zset),
        catalogue:version, celebrity:{brand}, celebrity:version; pending:{id} is taken
        (feedpipe/store/pending.py) when the item arrives; audience sets are read.
guarantees: at-least-once input; writes are idempotent and event-time guarded: an item is
        written only when its content_hash differs from the stored one and its updated_at is
        not older than the stored one, so a replay never moves an item backwards.
        Unpublished items are deleted from content, meta, the catalogue and the celebrity
        set. Fan-out records are sent after the Redis write (at-least-once; a crash between
        the two loses that item's fan-out: it then reaches feeds on the users' next re-rank).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from faust.types import EventT, StreamT
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from feedpipe.errors import RejectedInput, SerializationError
from feedpipe.kafka.producer import DeliveryError, IdempotentProducer
from feedpipe.model.item import Meta
from feedpipe.monitoring import metrics
from feedpipe.rank.fanout import audience_keys, fanout_events, is_celebrity, parse_audience
from feedpipe.settings import settings
from feedpipe.store import audience as audience_store
from feedpipe.store import content as content_store
from feedpipe.store import pending as pending_store
from feedpipe.store.content import ItemWrite
from feedpipe.store.keys import keys
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.app import app, topic
from streams.metadata import enrich
from streams.runtime import (
    dead_letter,
    in_thread,
    log,
    ms,
    redis_client,
    resolve_event,
    take_events,
    until_redis_answers,
)

STAGE = "enrich"
SPEC = topology().stages[STAGE]
BATCH = 32
WITHIN_S = 0.5


def content_json(rec: dict[str, Any]) -> dict[str, Any]:
    """Flatten an EnrichedContent record into the Redis content JSON (times in epoch ms)."""
    c = dict(rec["content"])
    out: dict[str, Any] = {k: v for k, v in c.items() if k not in ("raw_event_id",)}
    out["published_at"] = ms(c["published_at"])
    out["updated_at"] = ms(c["updated_at"])
    for k in (
        "language",
        "language_confidence",
        "word_count",
        "reading_time_s",
        "reading_level",
        "reading_grade",
        "sentiment",
        "keywords",
        "topics",
        "entities",
    ):
        out[k] = rec[k]
    out["enriched_at"] = ms(rec["enriched_at"])
    # A version 1 record (no text_vector) reads as [] (the schema default).
    out[TEXT_KEY] = [(t["term"], t["weight"]) for t in rec.get("text_vector") or ()]
    return out


TEXT_KEY = "text_vector"
"""Key of the text vector in :func:`content_json`'s document: it goes to the item's meta
(:func:`meta_of`), not to the stored content JSON (:func:`stored_doc`)."""


def meta_of(doc: dict[str, Any]) -> Meta:
    """Ranking features of a content JSON document (its text vector, rounded to 4 decimals as
    :func:`feedpipe.model.text.to_json`, included)."""
    return Meta(
        doc["content_id"],
        doc["brand"],
        tuple(doc["categories"]),
        tuple(doc["topics"]),
        doc["published_at"],
        tuple((int(k), round(float(w), 4)) for k, w in doc.get(TEXT_KEY) or ()),
    )


def stored_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The content JSON stored in Redis and served by the read endpoint: ``doc`` without its
    text vector."""
    return {k: v for k, v in doc.items() if k != TEXT_KEY}


def enrich_batch(values: Sequence[bytes | None]) -> list[dict[str, Any] | tuple[str, str]]:
    """Decode + enrich each value (worker thread); a (code, reason) tuple for undecodable ones."""
    now = datetime.now(UTC)
    out: list[dict[str, Any] | tuple[str, str]] = []
    dec = codec("Content").decode
    for v in values:
        try:
            content = dec(v)
        except SerializationError as exc:
            out.append(("undecodable", str(exc)))
            continue
        try:
            out.append(enrich(content, now))
        except RejectedInput as exc:
            out.append((exc.code, exc.reason))
    return out


def newer(doc: dict[str, Any], stored: dict[str, Any] | None) -> bool:
    """Event-time guard: write ``doc`` unless the stored copy is the same or newer.

    An unpublish without an update time (a bare delete event) always applies.
    """
    if stored is None:
        return True
    if doc["status"] != "published" and doc.get("updated_at") is None:
        return True
    if stored.get("content_hash") == doc["content_hash"] and stored.get("status") == doc["status"]:
        return False
    return (doc.get("updated_at") or 0) >= (stored.get("updated_at") or 0)


async def materialise(
    docs: list[dict[str, Any]], fanout: dict[str, tuple[list[str], str]] | None = None
) -> list[str]:
    """Write ``docs`` (content JSON, last per id wins) to Redis; return ids now published.

    Fan-out on write (feedpipe/rank/fanout.py; the click path handles the ``fanout`` events):
    for each item newly materialised or re-published
    (no stored copy), or updated in place, its audience is computed *before* the
    transaction (one Lua call per item, with the item's current celebrity status); an
    audience above ``fanout.celebrity_audience`` makes it a celebrity
    (``fp:celebrity:{brand}`` ZADD in the same MULTI/EXEC as the catalogue write, so no worker
    ever ranks it into a stored feed). Otherwise, for a new item published at most
    ``fanout.max_age_hours`` ago (or without a publication time), ``fanout[content_id] =
    (audience user ids, content_hash)`` is filled for :func:`send_fanout` (an update is not
    pushed again). Older new items are a backfill: not pushed, they reach feeds at the users'
    next re-rank. An update whose
    audience fell under the threshold leaves the celebrity set (it reaches stored feeds at the
    users' next re-rank); one whose audience grew over it joins (the worker's catalogue reload
    drops it from the stored feeds holding it). An unpublish also leaves the celebrity set.
    """
    r = redis_client()
    k = keys()
    topo = topology()
    latest = {d["content_id"]: d for d in docs}
    ids = list(latest)
    stored_docs = await content_store.read_content(r, ids)
    todo: list[tuple[str, dict[str, Any], bool]] = []  # (id, doc, newly materialised)
    for cid, stored in zip(ids, stored_docs, strict=True):
        doc = latest[cid]
        if newer(doc, stored):
            todo.append((cid, doc, stored is None))
    checked = [  # new or updated in place: (re)classified by audience size
        (meta_of(doc), new)
        for _, doc, new in todo
        if doc["status"] == "published" and fanout is not None
    ]
    now_ms = datetime.now(UTC).timestamp() * 1000
    max_age = topo.fanout.max_age_hours * 3_600_000
    celebrities: set[str] = set()
    was_celebrity: set[str] = set()  # updated items that were celebrities before
    if checked:
        replies = await audience_store.sizes(
            r, [audience_keys(m, k) for m, _ in checked], topo.fanout.celebrity_audience
        )
        scores = await content_store.celebrity_scores(
            r, [(m.brand, m.content_id) for m, _ in checked]
        )
        for (m, new), reply, score in zip(checked, replies, scores, strict=True):
            if score is not None:
                was_celebrity.add(m.content_id)
            size, members = parse_audience(reply)
            if members is None or is_celebrity(size, topo.fanout):
                celebrities.add(m.content_id)
                if m.content_id not in was_celebrity:
                    metrics.observe_celebrity(m.brand)
                    log.info("enrich: %s is a celebrity (audience %d users)", m.content_id, size)
            elif new and members and now_ms - (m.published_at or now_ms) <= max_age:
                assert fanout is not None  # checked is empty without it
                fanout[m.content_id] = (members, latest[m.content_id]["content_hash"])
    writes = []
    for cid, doc, _ in todo:
        published = doc["status"] == "published"
        celebrity = (
            True if cid in celebrities
            else False if cid in was_celebrity  # its audience shrank under the threshold
            else None
        )
        meta = meta_of(doc).to_json() if published else None
        writes.append(ItemWrite(cid, stored_doc(doc), meta, celebrity if published else None))
    published = await content_store.write_items(r, writes)
    _observe_publish_to_candidate([latest[cid] for cid in published])
    return published


@cache
def _fanout_producer() -> IdempotentProducer:
    """The enrich stage's librdkafka producer for fan-out records (idempotent, acks=all)."""
    return IdempotentProducer(
        settings().kafka_bootstrap, client_id="feedpipe-fanout", config={"linger.ms": 20}
    )


def produce_fanout(fanout: dict[str, tuple[list[str], str]], at: datetime) -> int:
    """Encode and produce the coalesced fan-out records of one batch, then flush (blocking:
    run it in a worker thread). Returns the records produced.

    Raises:
        DeliveryError: a record was not acknowledged within 60 s, or failed delivery.
    """
    enc = codec("ReaderEvent").encode
    prod = _fanout_producer()
    topic_name = SPEC.output("reader_events")
    records = fanout_events(fanout, at)
    for rec in records:
        prod.produce(topic_name, rec["user_id"].encode(), enc(rec))
    prod.flush(60.0)
    return len(records)


async def send_fanout(fanout: dict[str, tuple[list[str], str]]) -> int:
    """Send the ``fanout`` reader events of :func:`materialise`'s ``fanout`` (one per audience
    user, coalesced over the batch's items: :func:`feedpipe.rank.fanout.fanout_events`), keyed by
    user
    id: each lands on the reader.events partition that owns the user, and the click path
    re-ranks and stores that user's feed (exactly-once effect under its offset watermark).

    Records go through a librdkafka producer in a worker thread (:func:`produce_fanout`), not
    one Faust send per record: a burst of new items (a catalogue backfill) is tens of thousands
    of records, which one-at-a-time sends on the worker's event loop, shared with the click
    path, drained at ~1,000 records/s. A failed delivery is retried (the records are
    idempotent: the click path only re-ranks) up to 5 times, then raised. Returns the records
    sent.

    Raises:
        DeliveryError: the records could not be delivered after 5 attempts.
    """
    if not fanout:
        return 0
    now = datetime.now(UTC)
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(DeliveryError),
        stop=stop_after_attempt(5),
        wait=wait_random_exponential(multiplier=0.5, max=10),
        reraise=True,
    ):
        with attempt:
            sent = await in_thread(produce_fanout, fanout, now)
    metrics.observe_fanout(sent)
    return sent


async def release_pending(content_ids: list[str]) -> int:
    """Send 'resolve' events (to ``outputs.reader_events``) for the users whose clicks waited
    for ``content_ids`` (their pending sets are taken: each user is released once); return the
    events sent."""
    if not content_ids:
        return 0
    waiting = await pending_store.take(redis_client(), content_ids)
    out = topic(SPEC.output("reader_events"))
    enc = codec("ReaderEvent").encode
    now = datetime.now(UTC)
    sent = 0
    for cid, users in zip(content_ids, waiting, strict=True):
        for u in users:
            await out.send(key=u, value=enc(resolve_event(u.decode(), cid, now)))
            sent += 1
    return sent


def _observe_publish_to_candidate(docs: list[dict[str, Any]]) -> None:
    """Time-to-feed, first leg: CMS publish (or last update) time -> item in the catalogue."""
    now_ms = datetime.now(UTC).timestamp() * 1000
    for doc in docs:
        at = max(doc.get("published_at") or 0, doc.get("updated_at") or 0)
        if at > 0:
            metrics.observe_publish_to_candidate((now_ms - at) / 1000.0)


@app.agent(topic(SPEC.input), name=STAGE)
async def enrich_agent(stream: StreamT[Any]) -> None:
    """Enrich a batch, materialise it in Redis, publish content.enriched, release waiting clicks."""
    out_topic = topic(SPEC.output("content"))
    dlq = topic(SPEC.dead_letters())
    enc = codec("EnrichedContent").encode
    async for events in take_events(stream, BATCH, WITHIN_S):
        batch: list[EventT] = list(events)
        results = await in_thread(enrich_batch, [e.message.value for e in batch])
        docs: list[dict[str, Any]] = []
        for event, res in zip(batch, results, strict=True):
            if isinstance(res, tuple):
                await dlq.send(key=event.message.key, value=dead_letter(STAGE, event, *res))
                continue
            docs.append(content_json(res))
            await out_topic.send(key=res["content"]["content_id"].encode(), value=enc(res))
        fanout: dict[str, tuple[list[str], str]] = {}
        published = await until_redis_answers("enrich: materialise", materialise, docs, fanout)
        released = await until_redis_answers(
            "enrich: release pending clicks", release_pending, published
        )
        try:
            fanned = await send_fanout(fanout)
        except DeliveryError as exc:
            # Kafka refused the fan-out 5 times: fail loudly (a Faust agent that raises has its
            # events acked and carries on, faust-streaming/faust#315): the worker stops, and
            # its supervisor restarts it once the broker is back
            log.error("enrich: fan-out undeliverable; crashing the worker", exc_info=exc)
            await app.crash(exc)
            raise
        if fanned:
            log.info("enrich: fan-out of %d items: %d records", len(fanout), fanned)
        if released:
            log.info("enrich: released %d waiting clicks", released)
