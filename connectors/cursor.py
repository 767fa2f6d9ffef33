"""The keyset cursor of the WordPress and Drupal pollers: "last modification time + what was
already published at that time" (see :mod:`connectors.wordpress` for why not page numbers)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass(frozen=True)
class KeysetCursor:
    """Position of a source ordered by modification time: ``ts`` = modification time of the
    newest published item, ``seen`` = id -> sha256 prefix of the payload of every item
    published with exactly that time.

    The next request asks for items modified at or after ``ts`` and :meth:`is_seen` skips the
    ones already published, so items sharing ``ts`` across a page boundary (or a crash) are
    neither lost nor re-sent; an item re-saved within the same second with other content has
    another digest and is published again.
    """

    ts: datetime | None = None
    seen: dict[str, str] = field(default_factory=dict)

    def is_seen(self, item_id: str | None, ts: datetime | None, payload: bytes) -> bool:
        """True when this exact item version was already published, or the item is older than
        the cursor (a server ignoring the time filter must not make a poll loop forever)."""
        if item_id is None or ts is None or self.ts is None:
            return False
        if ts < self.ts:
            return True
        return ts == self.ts and self.seen.get(item_id) == _digest(payload)

    def advanced(
        self, published: Iterable[tuple[str | None, datetime | None, bytes]]
    ) -> KeysetCursor:
        """The cursor after ``published`` (``(id, ts, payload)`` of each item published now)."""
        items: list[tuple[str, datetime, bytes]] = []
        for i, t, p in published:
            if i is not None and t is not None:
                items.append((i, t, p))
        if not items:
            return self
        newest = max(t for _, t, _ in items)
        if self.ts is not None and newest < self.ts:
            return self  # server answered older items than asked for: keep the position
        seen = dict(self.seen) if newest == self.ts else {}
        seen.update({i: _digest(p) for i, t, p in items if t == newest})
        return KeysetCursor(newest, seen)

    def to_json(self) -> dict[str, Any]:
        """``{"ts": ISO 8601 UTC or None, "seen": {id: digest}}``."""
        return {"ts": self.ts.isoformat() if self.ts else None, "seen": dict(self.seen)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> KeysetCursor:
        """Inverse of :meth:`to_json` (None -> start cursor).

        Raises:
            ValueError: malformed cursor (a corrupt cursor must not be silently reset).
        """
        if not data:
            return cls()
        ts_raw, seen = data.get("ts"), data.get("seen", {})
        if not isinstance(seen, dict) or not all(isinstance(v, str) for v in seen.values()):
            raise ValueError(f"cursor 'seen' must map ids to digests, got {seen!r}")
        ts = None
        if ts_raw is not None:
            ts = datetime.fromisoformat(str(ts_raw))
            ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        return cls(ts, {str(k): v for k, v in seen.items()})

    def describe(self) -> str:
        """Short text for metrics: ``"<ts> (+N ids)"`` or ``"start"``."""
        return f"{self.ts.isoformat()} (+{len(self.seen)} ids)" if self.ts else "start"


def parse_utc(value: Any) -> datetime | None:
    """ISO 8601 / RFC 3339 text -> aware UTC datetime (no offset = UTC, as WordPress'
    ``*_gmt`` fields); None for anything unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
