"""JSON:API documents (jsonapi.org/format/1.0/): error documents and relationships, read the
same way everywhere."""

from __future__ import annotations

from typing import Any


def errors_reason(errors: list[Any]) -> str:
    """``"<status> <title>: <detail>"`` per error object, joined by ``'; '``.

    Used for DLQ reasons (normaliser), webhook answers and connector errors, so an operator
    sees the same text wherever a Drupal error document surfaces. Non-object entries are kept
    as their ``str``; an empty list gives a message saying so.
    """
    parts = []
    for err in errors:
        if not isinstance(err, dict):
            parts.append(str(err))
            continue
        head = " ".join(str(err[k]) for k in ("status", "title") if err.get(k) is not None)
        detail = err.get("detail")
        parts.append(f"{head}: {detail}" if detail else head or "error without status or title")
    return "; ".join(parts) or "error document with an empty errors list"


def identifiers(relationship: Any) -> list[dict[str, Any]]:
    """The resource identifiers (``{"type", "id", "meta"?}``) of one relationship object,
    to-one or to-many; identifiers without a string ``id`` and non-objects are left out."""
    data = relationship.get("data") if isinstance(relationship, dict) else None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return []
    return [d for d in data if isinstance(d, dict) and isinstance(d.get("id"), str)]


def resource_key(resource: dict[str, Any]) -> tuple[str, str]:
    """``(type, id)`` of a resource or resource identifier, as text."""
    return (str(resource.get("type")), str(resource.get("id")))
