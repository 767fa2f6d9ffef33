"""Records shared by the unit tests of the enrich stage and of the interest vector."""

from __future__ import annotations

from typing import Any

from feedpipe.ids import content_id


def content_record(source: str, source_id: str, **fields: Any) -> dict[str, Any]:
    """A minimal feedpipe.Content record (every schema field present)."""
    rec: dict[str, Any] = {
        "content_id": content_id(source, source_id),
        "source": source,
        "source_id": source_id,
        "kind": "test",
        "brand": source,
        "status": "published",
        "title": "",
        "summary": "",
        "body": "",
        "url": None,
        "authors": [],
        "published_at": None,
        "updated_at": None,
        "categories": [],
        "source_categories": [],
        "tags": [],
        "language_hint": None,
        "media": [],
        "entities": [],
        "ingest_warnings": [],
        "content_hash": "0" * 64,
        "raw_event_id": "0" * 64,
    }
    rec.update(fields)
    return rec
