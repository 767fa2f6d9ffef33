"""Stage normalise (a Faust agent): raw CMS events -> the unified content model.

input:  cms.raw (key source:source_id, value feedpipe.RawCmsEvent)
output: content.normalised (key content_id, value feedpipe.Content); one raw event may give
        several items (a feed document), or none and a DLQ record
dlq:    cms.raw.dlq (feedpipe.DeadLetter with the reason), for undecodable records and input
        the normalisers reject (streams/normalisers: WordPress, Drupal JSON:API, RSS/Atom/JSON
        Feed, MIND news rows)
state:  none. Output is deterministic (content_id, content_hash), so at-least-once redelivery
        produces identical records that the enrich stage writes idempotently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import EventT, StreamT

from feedpipe.errors import RejectedInput, SerializationError
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.app import app, topic
from streams.normalisers import normalise
from streams.runtime import dead_letter, in_thread, log, take_events

STAGE = "normalise"
SPEC = topology().stages[STAGE]
BATCH = 64
WITHIN_S = 0.5


@dataclass
class Outcome:
    """Result of one raw event: encoded content records, or a rejection (code, reason)."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    rejected: tuple[str, str] | None = None
    raw_event_id: str | None = None
    origin: str | None = None


def process(value: bytes | None) -> Outcome:
    """Decode and normalise one raw record; expected failures become ``Outcome.rejected``."""
    out = Outcome()
    try:
        raw = codec("RawCmsEvent").decode(value)
    except SerializationError as exc:
        out.rejected = ("undecodable", str(exc))
        return out
    out.raw_event_id, out.origin = raw.get("event_id"), raw.get("origin")
    try:
        items = normalise(raw, topology())
    except RejectedInput as exc:
        out.rejected = (exc.code, exc.reason)
        return out
    enc = codec("Content").encode
    out.records = [(item["content_id"].encode(), enc(item)) for item in items]
    return out


def process_batch(values: Sequence[bytes | None]) -> list[Outcome]:
    """:func:`process` for a batch (runs in a worker thread)."""
    return [process(v) for v in values]


@app.agent(topic(SPEC.input), name=STAGE)
async def normalise_agent(stream: StreamT[Any]) -> None:
    """Normalise each raw event; send items to content.normalised and rejects to the DLQ."""
    out_topic = topic(SPEC.output("content"))
    dlq = topic(SPEC.dead_letters())
    async for events in take_events(stream, BATCH, WITHIN_S):
        batch: list[EventT] = list(events)
        outcomes = await in_thread(process_batch, [e.message.value for e in batch])
        for event, res in zip(batch, outcomes, strict=True):
            if res.rejected is not None:
                code, reason = res.rejected
                log.info("normalise: DLQ %s at %s: %s", code, res.origin, reason[:200])
                await dlq.send(
                    key=event.message.key,
                    value=dead_letter(STAGE, event, code, reason, res.raw_event_id, res.origin),
                )
                continue
            for key, value in res.records:
                await out_topic.send(key=key, value=value)
