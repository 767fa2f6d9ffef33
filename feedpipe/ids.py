"""Deterministic identifiers shared by connectors and streams."""

from __future__ import annotations

import hashlib


def content_id(source: str, source_id: str) -> str:
    """Return the content id: sha256 hex (64 chars) of ``"<source>:<source_id>"``.

    Deterministic, so the same CMS item always maps to one content id, whichever connector
    or replay produced it.
    """
    return hashlib.sha256(f"{source}:{source_id}".encode()).hexdigest()


def event_id(*parts: str | int | None) -> str:
    """Return a stable event id: sha256 hex of the parts joined by ``\\x1f``."""
    return hashlib.sha256(
        "\x1f".join("" if p is None else str(p) for p in parts).encode()
    ).hexdigest()
