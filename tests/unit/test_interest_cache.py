"""The read endpoint's interest-vector cache (readapi/interests.py): keys per profile version,
LRU and TTL bounds."""

from __future__ import annotations

import time

import pytest

from readapi.interests import InterestCache, interest_key


def test_the_key_is_the_feeds_profile_version_and_last_seen() -> None:
    feed = {"profile_version": 3, "digest": {"ls": 1_700_000_000_000}}
    assert interest_key("u", feed) == ("u", 3, 1.7e12)
    assert interest_key("u", {"profile_version": 3}) == ("u", 3, 0.0)
    assert interest_key("u", {"digest": {"ls": 1}}) is None  # no version: not cached
    assert interest_key("u", {"profile_version": True}) is None
    assert interest_key("u", {"profile_version": 3, "digest": {"ls": 2}}) != interest_key(
        "u", feed)


def test_entries_are_bounded_by_count_and_age() -> None:
    cache = InterestCache(max_entries=2, ttl_s=60.0)
    a, b, c = ("a", 1, 0.0), ("b", 1, 0.0), ("c", 1, 0.0)
    cache.keep(a, "AAAA")
    cache.keep(b, None)
    assert cache[b] is None  # a stored None is a hit
    assert cache[a] == "AAAA"  # a is now the most recently used
    cache.keep(c, "CCCC")
    assert len(cache) == 2 and b not in cache and cache[c] == "CCCC"
    with pytest.raises(KeyError):
        cache[("a", 2, 0.0)]  # another profile version
    old = InterestCache(ttl_s=0.05)
    old.keep(a, "AAAA")
    assert old[a] == "AAAA"
    time.sleep(0.06)
    with pytest.raises(KeyError):
        old[a]
    old.keep(b, "BBBB")  # a write drops the expired entries
    assert list(old) == [b] and len(old) == 1
    off = InterestCache(max_entries=0)
    off.keep(a, "AAAA")
    assert len(off) == 0


def test_defaults_are_the_documented_bounds() -> None:
    from readapi.interests import INTEREST_MAX, INTEREST_TTL_S

    cache = InterestCache()
    assert (cache.maxsize, cache.ttl) == (INTEREST_MAX, INTEREST_TTL_S) == (50_000, 60.0)
