"""Shared pieces of the normalisers: payload decoding, UTC dates and the Content record builder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from dateutil import parser as dateparser

from feedpipe.errors import RejectedInput
from feedpipe.ids import content_id
from feedpipe.topology import Topology

BODY_MAX_CHARS = 200_000
"""Body text beyond this many characters is cut (with an ingest warning)."""

HASH_EXCLUDED = ("content_hash", "raw_event_id", "ingest_warnings")
"""Fields left out of ``content_hash``: they change without any visible change of the item."""

MEDIA_TYPES = ("image", "video", "audio", "other")


def decode_utf8(payload: bytes) -> str:
    """Payload bytes as text (UTF-8, a leading BOM dropped).

    Raises:
        RejectedInput: ``empty_payload`` for empty/whitespace-only bytes, ``invalid_encoding``
            when the bytes are not UTF-8.
    """
    if not payload or not payload.strip():
        raise RejectedInput("empty_payload", "payload is empty")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedInput("invalid_encoding", f"payload is not UTF-8: {exc}") from exc
    return text.removeprefix("\ufeff")


def load_json(payload: bytes) -> Any:
    """Parse a JSON payload with orjson.

    Raises:
        RejectedInput: ``empty_payload``, ``invalid_encoding`` (not UTF-8) or ``invalid_json``.
    """
    text = decode_utf8(payload)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RejectedInput("invalid_json", f"payload is not valid JSON: {exc}") from exc


def to_millis(dt: datetime) -> datetime:
    """``dt`` in UTC truncated to whole milliseconds (what Avro timestamp-millis keeps),
    so that a record's hash is the same before encoding and after decoding."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def parse_iso_utc(value: Any) -> datetime | None:
    """ISO 8601 / RFC 3339 string (or Unix seconds) -> tz-aware UTC datetime.

    A string without an offset is read as UTC (WordPress ``date_gmt`` is given that way).
    Returns None for None/empty; raises ValueError for anything unparseable.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a date: {value!r}")
    if isinstance(value, int | float):
        try:
            return to_millis(datetime.fromtimestamp(value, UTC))
        except (OverflowError, OSError, ValueError) as exc:  # beyond time_t / year 9999, NaN
            raise ValueError(f"date out of range {value!r}: {exc}") from exc
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    try:
        dt = dateparser.isoparse(value.strip())
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"unparseable date {value!r}: {exc}") from exc
    try:
        return to_millis(dt)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"date out of range {value!r}: {exc}") from exc


def parse_dates(
    obj: dict[str, Any], names: tuple[str, ...], warnings: list[str]
) -> dict[str, datetime | None]:
    """``name -> parse_iso_utc(obj[name])`` for each name; an unparsable date becomes None
    and a warning ``"<name>: <why>"`` appended to ``warnings``."""
    dates: dict[str, datetime | None] = {}
    for name in names:
        try:
            dates[name] = parse_iso_utc(obj.get(name))
        except ValueError as exc:
            dates[name] = None
            warnings.append(f"{name}: {exc}")
    return dates


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty dict (for optional JSON objects)."""
    return value if isinstance(value, dict) else {}


def media_type(medium: str | None, mime: str | None) -> str:
    """Media type ``image|video|audio|other`` from an explicit medium or a MIME type."""
    for hint in (medium, (mime or "").split("/", 1)[0]):
        if hint:
            h = hint.strip().lower()
            if h in MEDIA_TYPES:
                return h
    return "other"


def to_int(value: Any) -> int | None:
    """A pixel size as a non-negative 32-bit int, or None when missing or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        return None
    return n if 0 <= n < 2**31 else None


def media(
    url: str,
    kind: str = "image",
    caption: str | None = None,
    width: int | None = None,
    height: int | None = None,
) -> dict[str, Any]:
    """One ``feedpipe.Media`` record."""
    return {"url": url, "type": kind, "caption": caption or None, "width": width, "height": height}


def dedup(values: list[str]) -> list[str]:
    """Non-empty values, order kept, duplicates removed."""
    out: list[str] = []
    for v in values:
        if v and v not in out:
            out.append(v)
    return out


@dataclass
class Draft:
    """The kind-specific part of a Content record, before :func:`finish` adds ids and hash."""

    kind: str
    source_id: str
    title: str
    summary: str = ""
    body: str = ""
    url: str | None = None
    status: str = "published"
    authors: list[str] = field(default_factory=list)
    published_at: datetime | None = None
    updated_at: datetime | None = None
    source_categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    language_hint: str | None = None
    media: list[dict[str, Any]] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    categories_from: list[str] | None = None
    """CMS categories to map into brand categories; None means ``source_categories``."""


def language_code(value: Any) -> str | None:
    """ISO 639-1 code from a declared language (``'en-US'`` -> ``'en'``); None if unusable."""
    if not isinstance(value, str):
        return None
    code = value.strip()[:2].lower()
    return code if len(code) == 2 and code.isascii() and code.isalpha() else None


def finish(draft: Draft, raw: dict[str, Any], topo: Topology) -> dict[str, Any]:
    """Build the full ``feedpipe.Content`` dict (every schema field present).

    Adds content_id (``feedpipe.ids.content_id(source, source_id)``), brand, mapped categories,
    the body cap, ``status = unpublished`` for ``op == 'delete'``, raw_event_id and
    content_hash (sha256 hex of the orjson dump, keys sorted, of all fields except
    :data:`HASH_EXCLUDED`).

    Raises:
        RejectedInput: ``missing_title`` when the title is empty (deletes excepted).
    """
    deleting = raw.get("op") == "delete"
    if not draft.title and not deleting:
        raise RejectedInput("missing_title", f"{draft.kind} {draft.source_id!r} has no title")
    warnings = list(draft.warnings)
    body = draft.body
    if len(body) > BODY_MAX_CHARS:
        warnings.append(f"body cut from {len(body)} to {BODY_MAX_CHARS} characters")
        body = body[:BODY_MAX_CHARS]
    source = str(raw["source"])
    brand = str(raw["brand"])
    source_categories = dedup(draft.source_categories)
    record: dict[str, Any] = {
        "content_id": content_id(source, draft.source_id),
        "source": source,
        "source_id": draft.source_id,
        "kind": draft.kind,
        "brand": brand,
        "status": "unpublished" if deleting else draft.status,
        "title": draft.title,
        "summary": draft.summary,
        "body": body,
        "url": draft.url or None,
        "authors": dedup(draft.authors),
        "published_at": draft.published_at,
        "updated_at": draft.updated_at,
        "categories": topo.map_categories(
            brand, source_categories if draft.categories_from is None else draft.categories_from
        ),
        "source_categories": source_categories,
        "tags": dedup(draft.tags),
        "language_hint": draft.language_hint,
        "media": draft.media,
        "entities": draft.entities,
        "ingest_warnings": dedup(warnings),
        "content_hash": "",
        "raw_event_id": str(raw["event_id"]),
    }
    record["content_hash"] = content_hash(record)
    return record


def content_hash(record: dict[str, Any]) -> str:
    """sha256 hex of the canonical orjson dump (sorted keys, datetimes as RFC 3339) of the
    record's visible fields (all but :data:`HASH_EXCLUDED`)."""
    visible = {k: v for k, v in record.items() if k not in HASH_EXCLUDED}
    return hashlib.sha256(
        orjson.dumps(visible, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)
    ).hexdigest()
