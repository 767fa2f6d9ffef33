"""The profile storage codec (feedpipe/store/profiles.py): exact round trips, fallbacks, errors."""

from __future__ import annotations

import base64
import hashlib
import random
import struct

import orjson
import pytest

from feedpipe.model.admission import admit_events
from feedpipe.model.profile import Event, apply_events, new_profile
from feedpipe.store.interning import ItemTable
from feedpipe.store.profiles import (
    MAGIC,
    ProfileFormatError,
    decode_profile,
    encode_profile,
    profile_ids,
    profile_ordinals,
    stored_ordinals,
)
from feedpipe.store.seen_runs import pack_seen, pack_seen_np, unpack_seen, unpack_seen_small
from feedpipe.topology import topology


def _cid(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _profile(reads: int = 50, pending: int = 30, seed: int = 3) -> dict:
    """A profile built by the real maths: history clicks (some on unknown items: pending),
    live impressions and clicks, so ``seen``, sessions and rate are set as in production."""
    rnd = random.Random(seed)
    spec = topology().profiles
    t0 = 1_573_000_000_000
    p = new_profile("U1.r7", t0 // 86_400_000 * 86_400_000, spec)
    events = []
    for i in range(reads + pending):
        events.append(Event(f"h{i}", "click", _cid(i), t0 + 60_000 * i, "history"))
    for i in range(40):
        typ = "click" if i % 7 == 0 else "impression"
        events.append(Event(f"l{i}", typ, _cid(rnd.randrange(500)), t0 + 10**7 + 1000 * i))
    adm = admit_events(p, events, spec)
    apply_events(p, adm.accepted, {}, spec)  # no metas: every click is pending
    p["category_affinity"] = {"sports": 1.5, "news": 0.25}
    p["feed_fp"] = "3688cc5e2b4d26d3"
    p["version"] = 4
    return p


def _table(p: dict, gen: int = 9) -> ItemTable:
    t = ItemTable()
    t.gen = gen
    ids = sorted(set(profile_ids(p)))
    t.learn([7 * i + 3 for i in range(len(ids))], ids)
    return t


def test_compact_round_trip_is_exact_and_small() -> None:
    p = _profile()
    assert p["seen"] and p["pending"] and p["recent_reads"]
    t = _table(p)
    raw = encode_profile(p, "compact", t)
    assert raw.startswith(MAGIC)
    assert decode_profile(raw, t) == p
    assert len(raw) * 3 < len(orjson.dumps(p))
    want = [t.ords[e["content_id"]] for e in p["recent_reads"] + p["pending"]]
    assert profile_ordinals(raw) == want
    assert stored_ordinals([raw, None, orjson.dumps(p)]) == want


def test_times_out_of_order_or_far_apart_round_trip() -> None:
    p = _profile(5, 3)
    p["recent_reads"][1]["at"] += 10**12  # newer than its predecessor: int64 differences
    p["pending"][2]["at"] = -(2**40)
    t = _table(p)
    raw = encode_profile(p, "compact", t)
    assert raw.startswith(MAGIC) and decode_profile(raw, t) == p


def test_unknown_fields_and_odd_entries_survive() -> None:
    p = _profile(3, 2)
    p["~x"] = 1
    p["a"] = [1, 2]  # collides with a short key: still one to one
    p["pending"][0]["extra"] = True  # not exactly {content_id, at}: the list stays JSON
    p["seen"] = "not base64!"
    t = _table(p)
    raw = encode_profile(p, "compact", t)
    assert raw.startswith(MAGIC) and decode_profile(raw, t) == p


def test_falls_back_to_json_and_reads_json() -> None:
    p = _profile(3, 2)
    assert not encode_profile(p, "json", _table(p)).startswith(MAGIC)
    assert not encode_profile(p, "compact", ItemTable()).startswith(MAGIC)  # no generation
    t = _table(p)
    p["recent_reads"].append({"content_id": "never-interned", "at": 1})
    raw = encode_profile(p, "compact", t)
    assert raw.startswith(MAGIC)  # the unknown list stays in the JSON part
    assert decode_profile(raw, t) == p
    assert decode_profile(orjson.dumps(p), t) == p
    fresh = new_profile("U2", 0, topology().profiles)  # no seen, empty lists
    assert decode_profile(encode_profile(fresh, "compact", t), t) == fresh


def test_generation_mismatch_unknown_ordinal_and_corruption_raise() -> None:
    p = _profile(4, 4)
    t = _table(p)
    raw = encode_profile(p, "compact", t)
    with pytest.raises(ProfileFormatError, match="generation"):
        decode_profile(raw, _table(p, gen=10))
    lacking = ItemTable()
    lacking.gen = 9
    with pytest.raises(ProfileFormatError):
        decode_profile(raw, lacking)
    for cut in (6, 20, len(raw) - 1):
        with pytest.raises(ProfileFormatError):
            decode_profile(raw[:cut], t)
    with pytest.raises(ProfileFormatError):
        decode_profile(raw + b"\x00", t)
    with pytest.raises(ProfileFormatError):
        decode_profile(b"[1]", t)
    with pytest.raises(ProfileFormatError):
        decode_profile(b"garbage", t)


def test_seen_is_stored_as_minute_runs() -> None:
    p = _profile(2, 0)
    seen = base64.b64decode(p["seen"])
    raw = encode_profile(p, "compact", _table(p))
    _gen, _hlen, nr, npd, ns, flags = struct.unpack_from("<IIIIIB", raw, 4)
    assert (nr, npd, flags & 4, flags & 32) == (len(p["recent_reads"]), len(p["pending"]), 4, 32)
    n = len(seen) // 12
    assert ns < len(seen)  # 40 live events in 40 s share a minute or two: ~8 bytes per id
    fps = b"".join(seen[12 * i : 12 * i + 8] for i in range(n))
    assert raw.endswith(fps)
    assert decode_profile(raw, _table(p))["seen"] == p["seen"]


def test_seen_in_distinct_minutes_or_unsorted_stays_raw() -> None:
    p = _profile(2, 0)
    spread = b"".join(struct.pack("<QI", 1000 + i, 9000 - 5 * i) for i in range(20))
    unsorted = b"".join(struct.pack("<QI", 1000 + i, 9000 + (i % 2)) for i in range(20))
    for seen in (spread, unsorted):
        p["seen"] = base64.b64encode(seen).decode()
        raw = encode_profile(p, "compact", _table(p))
        assert raw.endswith(seen) and not raw[24] & 32
        assert decode_profile(raw, _table(p))["seen"] == p["seen"]


def test_seen_runs_same_bytes_short_and_long() -> None:
    """Short lists are packed with struct, long ones with numpy: the stored bytes of a list
    must not depend on which path packed it, and both read back exactly."""
    rng = random.Random(15)
    packed = 0
    for n in (*range(1, 40), 300, 512, 513, 700, 4096):
        minute = rng.randint(2**30, 2**31)
        pairs = []
        for _ in range(n):
            pairs.append(struct.pack("<QI", rng.getrandbits(64), minute))
            minute -= rng.choice((0, 0, 0, 1, 7, 400))
        raw = b"".join(pairs)
        short = pack_seen(raw) if n <= 512 else None
        long_ = pack_seen_np(raw) if n > 2 else None
        if n <= 512:
            assert short == long_
        if long_ is not None:
            packed += 1
            assert unpack_seen(long_) == raw
            assert unpack_seen_small(long_, *struct.unpack_from("<II", long_), n) == raw
    assert packed >= 30
    with pytest.raises(ValueError):  # a run count that does not match the length
        unpack_seen_small(long_[:-8], *struct.unpack_from("<II", long_), n - 1)


def test_corrupt_minute_runs_are_refused() -> None:
    p = _profile(2, 0)
    raw = bytearray(encode_profile(p, "compact", _table(p)))
    assert raw[24] & 32
    ns = struct.unpack_from("<I", raw, 20)[0]
    runs_at = len(raw) - ns + 4
    struct.pack_into("<I", raw, runs_at, 0)  # zero runs
    with pytest.raises(ProfileFormatError):
        decode_profile(bytes(raw), _table(p))


def test_rest_is_deflated_when_smaller_and_round_trips() -> None:
    p = _profile()
    small = encode_profile(p, "compact", _table(p))
    plain = encode_profile(p, "compact", _table(p), deflate=False)
    assert small[24] & 64 and not plain[24] & 64
    assert len(small) < len(plain)
    assert decode_profile(small, _table(p)) == decode_profile(plain, _table(p)) == p


def test_corrupt_deflated_rest_is_refused() -> None:
    p = _profile()
    raw = bytearray(encode_profile(p, "compact", _table(p)))
    hlen = struct.unpack_from("<I", raw, 8)[0]
    raw[25 : 25 + hlen] = b"\xff" * hlen  # not a deflate stream of the dictionary
    with pytest.raises(ProfileFormatError):
        decode_profile(bytes(raw), _table(p))
