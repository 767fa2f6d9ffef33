"""JSON:API error documents (jsonapi.org/format/#errors), read the same way everywhere."""

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
