"""The click path's input records: what it needs of a consumed record, their decoding and
validation, DLQ records, and the counts of one partition batch.

Input: reader.events records (key user_id, value feedpipe.ReaderEvent, schemas/reader_event.avsc).
Output: decoded events ``(offset, record dict)`` and DLQ values (feedpipe.DeadLetter) for
records that are undecodable, carry an id that cannot be part of a Redis key
(feedpipe.store.keys.safe_id) or an unknown event type. Pure (no I/O).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from feedpipe.errors import SerializationError
from feedpipe.model.profile import Event
from feedpipe.settings import settings
from feedpipe.store.keys import keys, safe_id
from feedpipe.topology import StageSpec, topology
from feedpipe.wire.codec import codec
from streams.runtime import dead_letter_value, ms

STAGE = "profiles"
"""The stage name in the click path's offset watermark keys (``fp:wm:profiles:reader.events:
{partition}``), DLQ records and metrics: part of the stored key layout."""
TYPES = frozenset({"impression", "click", "dwell", "resolve", "erase", "fanout"})
"""Reader event types the click path applies; any other goes to the DLQ (``unknown_type``)."""

Send = Callable[[str, bytes, bytes | None], Awaitable[Any]]
"""``send(topic, key, value)``: queue one record; awaiting it returns a delivery awaitable."""


def stage() -> StageSpec:
    """The click path's stage in topology.yaml (input, outputs by role, DLQ, group)."""
    return topology().stages["clickpath"]


class RecordLike(Protocol):
    """What the click path needs of a consumed record (aiokafka ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record as plain data (a :class:`RecordLike`): for feeding
    :meth:`streams.clickpath.path.ClickPath.apply_batch` from outside a consumer (benchmarks,
    tests, ``feedpipe rebuild``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class StateLost(RuntimeError):
    """A partition's offset watermark is missing while the log holds records older than the
    batch (Redis was wiped): nothing was applied; hold the partition until a rebuild."""

    def __init__(self, partition: int) -> None:
        super().__init__(
            f"Redis state of {stage().input}[{partition}] is gone (watermark missing)"
        )
        self.partition = partition


@dataclass(slots=True)
class BatchResult:
    """Counts of one partition batch (for logs, metrics and the benchmark)."""

    records: int = 0
    applied: int = 0
    skipped_offsets: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    users: int = 0
    feeds: int = 0
    erased: int = 0
    pending_items: list[str] = field(default_factory=list)


def dead_letter_record(
    rec: RecordLike, code: str, reason: str, raw_event_id: str | None = None
) -> bytes:
    """A DeadLetter (schemas/dead_letter.avsc) for consumed record ``rec``."""
    return dead_letter_value(
        STAGE, rec.topic, rec.partition, rec.offset, rec.key, rec.value, code, reason,
        raw_event_id,
    )


def reader_event(rec: dict[str, Any]) -> Event:
    """A decoded ``feedpipe.ReaderEvent`` as the profile code's
    :class:`feedpipe.model.profile.Event` (event time in epoch ms, 0 when missing; dwell in ms
    or None)."""
    at = rec["occurred_at"]
    if type(at) is not int:  # a datetime (decode) or None; decode_plain gives epoch ms
        at = ms(at) or 0
    return Event(rec["event_id"], rec["type"], rec["content_id"], at, rec["origin"],
                 rec.get("dwell_ms"))


Decoded = list[tuple[int, dict[str, Any]]]
"""``(offset, ReaderEvent dict)`` of the valid records, in offset order (``occurred_at`` in
epoch ms: :meth:`feedpipe.wire.codec.AvroCodec.decode_plain`)."""
Rejected = list[tuple[int, bytes | None, bytes]]
"""``(offset, key, DeadLetter value)`` of the rejected records, in offset order."""


def decode(records: Sequence[RecordLike]) -> tuple[Decoded, Rejected]:
    """Decode and validate ``records``; return (valid events, DLQ records). Never raises.

    On a Redis Cluster (``FEEDPIPE_REDIS_CLUSTER``) an event whose user belongs to another
    partition than the record's (Kafka's murmur2 key partitioner of the user id,
    :meth:`feedpipe.store.keys.Keys.partition_of`) is a DLQ record ``misrouted``: its keys
    are on another slot than the partition's transaction (docs/redis-keys.md)."""
    dec = codec("ReaderEvent").decode_plain  # occurred_at as epoch ms (int)
    good: Decoded = []
    bad: Rejected = []
    routed = keys() if settings().redis_cluster else None
    valid: set[str] = set()  # ids safe_id accepted in this batch (users and items repeat)
    for r in records:
        try:
            rec = dec(r.value)
        except SerializationError as exc:
            bad.append((r.offset, r.key, dead_letter_record(r, "undecodable", str(exc))))
            continue
        typ = rec["type"]
        if typ not in TYPES:
            reason = f"unknown reader event type {typ!r}"
            bad.append(
                (r.offset, r.key, dead_letter_record(r, "unknown_type", reason, rec["event_id"]))
            )
            continue
        try:
            uid = rec["user_id"]
            if uid not in valid:
                valid.add(safe_id(uid))
            if typ != "erase":
                cid = rec["content_id"]
                if cid not in valid:
                    valid.add(safe_id(cid))
        except ValueError as exc:
            bad.append(
                (r.offset, r.key, dead_letter_record(r, "invalid_id", str(exc), rec["event_id"]))
            )
            continue
        if routed is not None and routed.partition_of(rec["user_id"]) != r.partition:
            reason = (
                f"user {rec['user_id']} belongs to partition {routed.partition_of(rec['user_id'])}"
                f" (murmur2 of the user id), not {r.partition}"
            )
            bad.append(
                (r.offset, r.key, dead_letter_record(r, "misrouted", reason, rec["event_id"]))
            )
            continue
        good.append((r.offset, rec))
    return good, bad
