"""The read endpoint's interest-vector cache (readapi/interests.py): keys per profile version,
LRU and TTL bounds."""

from __future__ import annotations

import time

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
    cache.put(a, "AAAA")
    cache.put(b, None)
    assert cache.get(a) == (True, "AAAA")  # a is now the most recently used
    cache.put(c, "CCCC")
    assert len(cache) == 2 and cache.get(b) == (False, None) and cache.get(c) == (True, "CCCC")
    assert cache.get(("a", 2, 0.0)) == (False, None)  # another profile version
    old = InterestCache(ttl_s=0.0)
    old.put(a, "AAAA")
    time.sleep(0.01)
    assert old.get(a) == (False, None) and len(old) == 0
    off = InterestCache(max_entries=0)
    off.put(a, "AAAA")
    assert len(off) == 0
