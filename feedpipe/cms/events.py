"""The ``feedpipe.RawCmsEvent`` record and one item of a CMS response.

A raw CMS event carries the CMS's own bytes (``payload``) with what the normaliser needs to
read them (``kind``, ``content_type``) and to identify the item (``source``, ``source_id``).
``op`` is ``upsert`` (the item is public: create or replace it) or ``delete`` (the item is no
longer public: trashed, unpublished, made private, or deleted; readers must stop seeing it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from feedpipe import ids
from feedpipe.errors import RejectedInput

SUBJECT: Final = "RawCmsEvent"
"""Schema subject of the records :func:`cms_event` builds (``schemas/raw_cms_event.avsc``)."""

Op = Literal["upsert", "delete"]
UPSERT: Final[Op] = "upsert"
DELETE: Final[Op] = "delete"


@dataclass(frozen=True, slots=True)
class CmsItem:
    """One item of a CMS response, ready to become a raw event.

    Attributes:
        source_id: the CMS's id of the item as text; None when the item has no usable id.
        payload: the bytes to publish: the CMS's own bytes for a single-item document, else
            the item serialised on its own (with the resources it references, for JSON:API).
        op: ``upsert`` or ``delete`` by the CMS's status rule.
        error: why the item cannot be normalised (e.g. ``missing_id``, ``wordpress_error``),
            or None; connectors that answer their sender (the webhook receiver) refuse such
            items, the others publish them so the normaliser dead-letters them with the reason.
    """

    source_id: str | None
    payload: bytes
    op: Op
    error: RejectedInput | None = None


def resource_id(value: Any) -> str | None:
    """A CMS id as text: a non-empty string or an integer (not a bool); else None."""
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        return None
    return str(value)


def event_key(source: str, source_id: str | None, fallback_id: str) -> str:
    """Kafka key of a raw event: ``"<source>:<source_id>"``, or ``"<source>:<fallback_id>"``
    for an item without id (a file name, a page position, a URL)."""
    return f"{source}:{source_id or fallback_id}"


def cms_event(
    *,
    kind: str,
    source: str,
    brand: str,
    source_id: str | None,
    payload: bytes,
    content_type: str,
    origin: str,
    fallback_id: str,
    op: Op = UPSERT,
) -> dict[str, Any]:
    """A ``feedpipe.RawCmsEvent`` record dict, ready for ``codec("RawCmsEvent").encode``.

    Args:
        kind: how the payload is read: ``wordpress.post``, ``drupal.node``, ``feed.document``
            or ``mind.news``.
        source / brand: the configured source name (part of every content id) and its brand.
        source_id: the item's id in the CMS; None when unknown (feed documents, items the
            normaliser will reject).
        payload: the bytes published unchanged.
        content_type: MIME type of the payload (with its charset parameter when known).
        origin: where the payload came from (file, URL, CDC topic position), for operators.
        fallback_id: stands for ``source_id`` in the event id when that is None.
        op: ``upsert`` or ``delete``.

    Returns:
        The record: ``event_id`` is ``ids.event_id(source, source_id or fallback_id, sha256
        hex of payload)`` (so the same bytes always give the same id and a retry is
        deduplicated), ``emitted_at`` is now in UTC, cut to milliseconds (Avro
        ``timestamp-millis``).
    """
    digest = hashlib.sha256(payload).hexdigest()
    now = datetime.now(UTC)
    return {
        "event_id": ids.event_id(source, source_id or fallback_id, digest),
        "kind": kind,
        "op": op,
        "source": source,
        "brand": brand,
        "source_id": source_id,
        "content_type": content_type,
        "payload": payload,
        "origin": origin,
        "emitted_at": now.replace(microsecond=now.microsecond // 1000 * 1000),
    }
