"""The read endpoint's cache of readers' interest vectors, for the celebrity merge's
``similarity`` feature (:func:`readapi.fallback.merge_celebrities`).

Reading the vector means reading and decoding the reader's whole stored profile
(:meth:`readapi.store.Store.profile`: one Redis round trip and ~0.5 ms of CPU for
:func:`feedpipe.store.profiles.decode_profile`), once per page-cache miss: a miss happens
whenever the celebrity cache, the catalogue version, the stored feed or the page's parameters
change. The vector changes only with the profile, so it is cached per
(user, the feed's ``profile_version``, the feed digest's ``ls``): the stored feed names the
profile version it was ranked from, and a new profile version comes with a new feed. The
digest's last-seen time tells apart two profiles with the same version number (a reader erased
and seen again starts at version 1 anew). A feed without a ``profile_version`` is not cached.

Bounded: at most :data:`INTEREST_MAX` entries (least recently used evicted, ~0.3 KB each:
~15 MB at most), each kept at most :data:`INTEREST_TTL_S`, the content summaries' TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

INTEREST_MAX = 50_000
"""Readers whose interest vector is kept (least recently used evicted first)."""
INTEREST_TTL_S = 60.0
"""Seconds an entry is kept at most (readapi.store.SUMMARY_TTL_S, the summaries' safety net)."""

Key = tuple[str, int, float]


def interest_key(user_id: str, feed: Mapping[str, Any]) -> Key | None:
    """The cache key of a stored feed (``user_id``, ``profile_version``, ``digest.ls``);
    ``None`` when the feed has no integer profile version (not cached)."""
    version = feed.get("profile_version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    dg = feed.get("digest")
    ls = dg.get("ls") if isinstance(dg, Mapping) else None
    return user_id, version, float(ls) if isinstance(ls, int | float) else 0.0


class InterestCache:
    """Stored interest vectors (the profile's ``interest`` value, base64 as stored, or ``None``
    for a reader without one) by :func:`interest_key`, LRU and TTL bounded (module docstring).

    Args:
        max_entries: entries kept at most (0: nothing is cached).
        ttl_s: seconds an entry is kept at most.
    """

    def __init__(self, max_entries: int = INTEREST_MAX, ttl_s: float = INTEREST_TTL_S) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._d: OrderedDict[Key, tuple[str | None, float]] = OrderedDict()

    def get(self, key: Key) -> tuple[bool, str | None]:
        """(hit, stored vector or None); a miss for an absent or expired entry."""
        hit = self._d.get(key)
        if hit is None:
            return False, None
        if time.monotonic() - hit[1] > self.ttl_s:
            del self._d[key]
            return False, None
        self._d.move_to_end(key)
        return True, hit[0]

    def put(self, key: Key, stored: str | None) -> None:
        """Keep ``stored`` under ``key``; evicts the least recently used past ``max_entries``."""
        if self.max_entries <= 0:
            return
        self._d.pop(key, None)
        self._d[key] = (stored, time.monotonic())
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)
