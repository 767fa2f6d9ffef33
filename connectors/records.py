"""What the connectors publish: a keyed record, or input that cannot become one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedpipe.cms.events import CmsItem, cms_event, event_key


@dataclass(frozen=True, slots=True)
class Keyed:
    """One record to publish: Kafka ``key`` (str, UTF-8 encoded on publish) and the record
    dict (shape of the target schema, timestamps as tz-aware UTC datetimes)."""

    key: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that cannot become a record; published as a DeadLetter, never dropped.

    Attributes:
        code: short reason code, e.g. ``bad_time``.
        reason: human-readable reason.
        raw: the raw input bytes (the file line without its newline).
        origin: ``<file>:<line number>`` (1-based).
        key: the Kafka key the record would have had (e.g. user_id), when known.
    """

    code: str
    reason: str
    raw: bytes
    origin: str
    key: str | None = None


Item = Keyed | Malformed


def keyed_cms_event(
    item: CmsItem,
    *,
    kind: str,
    source: str,
    brand: str,
    content_type: str,
    origin: str,
    fallback_id: str,
) -> Keyed:
    """The raw CMS event of one :class:`feedpipe.cms.events.CmsItem` with its Kafka key
    (:func:`feedpipe.cms.events.event_key`); arguments as :func:`feedpipe.cms.events.cms_event`."""
    return Keyed(
        event_key(source, item.source_id, fallback_id),
        cms_event(
            kind=kind,
            source=source,
            brand=brand,
            source_id=item.source_id,
            payload=item.payload,
            content_type=content_type,
            origin=origin,
            fallback_id=fallback_id,
            op=item.op,
        ),
    )
