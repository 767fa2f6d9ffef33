"""A collector request body -> valid ReaderEvent records and per-event rejects (pure, no Kafka).

Body (``application/json``, or ``text/plain`` as ``navigator.sendBeacon`` sends a string)::

    {"events": [{"type": "click", "user_id": "U1", "content_id": "<64 hex>",
                 "occurred_at": 1733356800000, "impression_id": "imp-1", "position": 3}],
     "api_key": "<token>"}     # optional; only read from text/plain bodies (beacons send no header)

Each event is checked on its own (field rules: :func:`check_event`); a body that is not a JSON
object with an ``events`` list of 1..:data:`MAX_EVENTS` items is refused as a whole
(:class:`~feedpipe.errors.RejectedInput`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from feedpipe.errors import RejectedInput
from feedpipe.ids import event_id as derive_event_id
from feedpipe.store.keys import safe_id

MAX_EVENTS: Final = 500
"""Most events in one request."""
MAX_BODY_BYTES: Final = 512 * 1024
"""Largest request body, bytes (a browser's ``sendBeacon`` queue limit is 64 KiB)."""
TYPES: Final = ("impression", "click", "dwell", "erase")
"""Event types a client may send (``resolve`` and ``fanout`` are the pipeline's own)."""
FIELDS: Final = frozenset(
    {
        "type",
        "user_id",
        "content_id",
        "occurred_at",
        "event_id",
        "impression_id",
        "position",
        "dwell_ms",
    }
)
MAX_FUTURE_MS: Final = 3_600_000
"""An ``occurred_at`` more than 1 h ahead of the server clock is refused (a wrong clock or unit)."""
MIN_OCCURRED_MS: Final = 946_684_800_000
"""2000-01-01T00:00:00Z: an older ``occurred_at`` is a unit error (seconds sent as ms)."""
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
INT32_MAX: Final = 2**31 - 1
INT63_MAX: Final = 2**63 - 1
_TEXT_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces


@dataclass(frozen=True)
class Reject:
    """One refused event: its index in the body, a reason code and a readable reason."""

    index: int
    code: str
    reason: str
    event: Any
    """The event as sent (any JSON value), kept for the DLQ record."""


@dataclass(frozen=True)
class Parsed:
    """A parsed body: the valid ReaderEvent records (dicts for the ``feedpipe.ReaderEvent``
    codec, with their body index), the rejects, and the body's ``api_key`` (text/plain only)."""

    records: list[tuple[int, dict[str, Any]]]
    rejects: list[Reject]
    api_key: str | None


class _Bad(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _occurred_ms(value: Any, now_ms: int) -> int:
    """Epoch ms of ``occurred_at``: an integer of ms, or an RFC 3339 string with an offset."""
    if type(value) is int:
        ms = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            msg = f"occurred_at {value[:40]!r} is not RFC 3339"
            raise _Bad("invalid_occurred_at", msg) from None
        if dt.tzinfo is None:
            raise _Bad("invalid_occurred_at", "occurred_at needs a UTC offset (e.g. Z)")
        ms = int(dt.astimezone(UTC).timestamp() * 1000)
    else:
        raise _Bad("invalid_occurred_at", "occurred_at must be epoch ms or an RFC 3339 string")
    if ms < MIN_OCCURRED_MS:
        raise _Bad("invalid_occurred_at", f"occurred_at {ms} ms is before 2000 (seconds sent?)")
    if ms > now_ms + MAX_FUTURE_MS:
        raise _Bad("future_event", f"occurred_at is {(ms - now_ms) / 1000:.0f} s in the future")
    return ms


def _opt_int(ev: dict[str, Any], name: str, top: int) -> int | None:
    value = ev.get(name)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= top:
        raise _Bad(f"invalid_{name}", f"{name} must be an integer 0..{top}")
    return value


def _opt_text(ev: dict[str, Any], name: str) -> str | None:
    value = ev.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _TEXT_ID.fullmatch(value):
        raise _Bad(f"invalid_{name}", f"{name} must be 1-128 printable ASCII characters")
    return value


def check_event(ev: Any, now_ms: int) -> dict[str, Any]:
    """The ``feedpipe.ReaderEvent`` record of one sent event, or :class:`_Bad` with a code.

    Rules (code in brackets): a JSON object [``not_an_object``] with only the documented fields
    [``unknown_field``]; ``type`` one of :data:`TYPES` [``invalid_type``]; ``user_id`` 1-128 of
    ``[A-Za-z0-9_.-]`` [``invalid_user_id``]; ``content_id`` likewise, empty or absent for
    ``erase`` and only then [``invalid_content_id``]; ``occurred_at`` epoch ms (integer) or an
    RFC 3339 string with an offset, after 2000 [``invalid_occurred_at``] and at most 1 h ahead
    [``future_event``]; optional ``event_id`` / ``impression_id`` 1-128 printable ASCII;
    ``position`` an int32 >= 0; ``dwell_ms`` an integer >= 0, required for ``dwell``.

    A missing ``event_id`` is derived: sha256 of ("collector", type, user_id, content_id,
    occurred_at ms, impression_id, position) (:func:`feedpipe.ids.event_id`), so a client
    retrying the same event gets the same id and the click path counts it once.
    """
    if not isinstance(ev, dict):
        raise _Bad("not_an_object", "an event must be a JSON object")
    extra = ev.keys() - FIELDS
    if extra:
        raise _Bad("unknown_field", f"unknown fields {sorted(extra)[:5]}")
    typ = ev.get("type")
    if typ not in TYPES:
        raise _Bad("invalid_type", f"type must be one of {', '.join(TYPES)}")
    user = ev.get("user_id")
    try:
        safe_id(user if isinstance(user, str) else "")
    except ValueError:
        raise _Bad("invalid_user_id", "user_id must be 1-128 of [A-Za-z0-9_.-]") from None
    content = ev.get("content_id")
    if typ == "erase":
        if content not in (None, ""):
            raise _Bad("invalid_content_id", "an erase event has no content_id")
        content = ""
    else:
        try:
            safe_id(content if isinstance(content, str) else "")
        except ValueError:
            raise _Bad("invalid_content_id", "content_id must be 1-128 of [A-Za-z0-9_.-]") from None
    at = _occurred_ms(ev.get("occurred_at"), now_ms)
    impression = _opt_text(ev, "impression_id")
    position = _opt_int(ev, "position", INT32_MAX)
    dwell = _opt_int(ev, "dwell_ms", INT63_MAX)
    if typ == "dwell" and dwell is None:
        raise _Bad("invalid_dwell_ms", "a dwell event needs dwell_ms")
    eid = _opt_text(ev, "event_id") or derive_event_id(
        "collector", typ, user, content, at, impression, position
    )
    return {
        "event_id": eid,
        "type": typ,
        "user_id": user,
        "content_id": content,
        "source_item_id": None,
        "occurred_at": EPOCH + timedelta(milliseconds=at),  # exact, no float rounding
        "impression_id": impression,
        "position": position,
        "dwell_ms": dwell,
        "origin": "live",
    }


def parse_body(body: bytes, now_ms: int, *, beacon: bool) -> Parsed:
    """Parse a request body (module docstring) and check every event against ``now_ms``.

    Args:
        body: the raw body.
        now_ms: server time, epoch ms.
        beacon: True for a ``text/plain`` body, whose ``api_key`` field is read.

    Raises:
        RejectedInput: ``invalid_json`` (not JSON), ``invalid_body`` (not an object with an
            ``events`` list, or unknown top-level fields), ``empty_batch``, ``too_many_events``.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RejectedInput("invalid_json", f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise RejectedInput("invalid_body", 'expected a JSON object {"events": [...]}')
    extra = doc.keys() - {"events", "api_key"}
    if extra:
        raise RejectedInput("invalid_body", f"unknown top-level fields {sorted(extra)[:5]}")
    events = doc["events"]
    if not events:
        raise RejectedInput("empty_batch", "events is empty")
    if len(events) > MAX_EVENTS:
        raise RejectedInput("too_many_events", f"{len(events)} events > limit {MAX_EVENTS}")
    key = doc.get("api_key") if beacon else None
    records: list[tuple[int, dict[str, Any]]] = []
    rejects: list[Reject] = []
    for i, ev in enumerate(events):
        try:
            records.append((i, check_event(ev, now_ms)))
        except _Bad as bad:
            rejects.append(Reject(i, bad.code, bad.reason, ev))
    return Parsed(records, rejects, key if isinstance(key, str) else None)
