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

Bounded (``cachetools.TTLCache``): at most :data:`INTEREST_MAX` entries (least recently used
evicted, ~0.3 KB each: ~15 MB at most), each kept at most :data:`INTEREST_TTL_S`, the content
summaries' TTL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cachetools import TTLCache

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


class InterestCache(TTLCache[Key, "str | None"]):
    """Stored interest vectors (the profile's ``interest`` value, base64 as stored, or ``None``
    for a reader without one) by :func:`interest_key`: a ``cachetools.TTLCache`` (least
    recently used evicted past ``max_entries``, each entry kept at most ``ttl_s`` on the
    monotonic clock). Read it with ``cache[key]`` (``KeyError``: absent or expired; a stored
    ``None`` is a hit). Write it with :meth:`keep`.

    Args:
        max_entries: entries kept at most (0: nothing is cached).
        ttl_s: seconds an entry is kept at most.
    """

    def __init__(self, max_entries: int = INTEREST_MAX, ttl_s: float = INTEREST_TTL_S) -> None:
        super().__init__(maxsize=max_entries, ttl=ttl_s, timer=time.monotonic)

    def keep(self, key: Key, stored: str | None) -> None:
        """Keep ``stored`` under ``key`` (nothing when the cache holds 0 entries)."""
        if self.maxsize > 0:
            self[key] = stored
