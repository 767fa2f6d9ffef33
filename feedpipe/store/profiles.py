"""Storage codec of profiles in Redis (``fp:profile:{user}``): JSON or a compact binary form.

The profile dict is the one of :func:`feedpipe.model.profile.new_profile` plus the click path's
fields
(:func:`feedpipe.model.admission.admit_events`); profiles.updated keeps the Avro UserProfile, this
form
is for Redis only. Every reader of a stored profile goes through :func:`decode_profile`
(:func:`profile_ordinals` first lists the item ordinals to resolve); it reads both forms, so a
switch of ``profiles.profile_format`` is safe in either direction.

Compact form (``profiles.profile_format: compact``), little-endian::

    MAGIC (b"\\xffPF1": never the start of JSON)
    item-table generation (uint32, feedpipe/store/interning.py), rest length (uint32), reads count
        (uint32), pending count (uint32), seen length (uint32, bytes), flags (uint8)
    rest: JSON of the other fields, keys shortened by the fixed table :data:`SHORT`
        (a key outside it is written with a "~" prefix, so the mapping is one to one); with
        flag bit 6, raw DEFLATE of it (zlib, wbits -15, level 6) with the preset dictionary
        :data:`REST_ZDICT` (RFC 1951/1950 preset dictionary; affinity maps repeat their keys:
        ~470 -> ~150 bytes on MIND profiles, ~15 us to encode, ~4 us to decode), used when
        ``deflate`` and smaller
    recent_reads, then pending: item ordinals (uint32 each), then ``at`` (ms): the first as
        int64, then the differences to the previous entry (uint32 when every one is in
        [0, 2^32): both lists are kept newest first; else int64, flag bits 0 and 1)
    seen: the raw bytes behind the base64 string (12 bytes per remembered event id: u64
        fingerprint, u32 event-time minute; feedpipe/model/admission.py keeps them sorted by
        minute, newest first), or with flag bit 5 the same pairs as minute runs: the newest
        minute (uint32), the run count R (uint32), R - 1 minute steps to the previous run
        (uint16), R run lengths (uint16), then the fingerprints (uint64 each), ~8 bytes per id
        when ids share minutes (a reader's events come in sessions); used when it is smaller

Flags: bit 0/1 reads/pending differences as int64; bit 2 ``seen`` present; bit 5 ``seen``
as minute runs; bit 6 rest deflated; bit 3/4 reads/pending packed (a list with an entry that
is not exactly ``{"content_id": str, "at": int}`` stays in the rest JSON). Every value
round-trips exactly (ids, ints, floats as JSON doubles, key order aside). A profile the form
cannot hold (no item table, an id without an ordinal, a time outside int64) is stored as JSON:
:func:`encode_profile` never raises for a JSON-serialisable dict.

Size (bench/bench_memory.py, 100,000 MIND users; docs/ranking.md): 1,804 bytes mean against
~7.5 KB of JSON: an id is 4 bytes instead of 66, a time 4 instead of 13, ``seen`` raw instead of
base64. CPU (2,000 stored live-shaped profiles of bench/bench_clicks.py, 218 bytes mean, same
process): encode ~19 us, decode ~12 us; the DEFLATE of the rest is about half of the encode.
The minute-run codec of ``seen`` is :mod:`feedpipe.store.seen_runs` (short lists through
``struct``: numpy's fixed cost per call was ~20 us of a 41 us encode on such profiles).
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from operator import itemgetter, sub
from typing import Any

import orjson

from feedpipe.store import scripts
from feedpipe.store.client import mget
from feedpipe.store.interning import ITEMS, ItemTable, resolve
from feedpipe.store.keys import keys
from feedpipe.store.seen_runs import pack_seen, unpack_seen

MAGIC = b"\xffPF1"
_HEAD = struct.Struct("<IIIIIB")
_I8 = struct.Struct("<q")
_U32_MAX = 2**32 - 1

_LONG = (
    "user_id", "version", "landmark_ms", "half_life_s", "category_affinity", "topic_affinity",
    "brands", "impressions", "clicks", "history_clicks", "engagement_rate", "first_seen",
    "last_seen", "sessions", "session_start", "session_last", "session_clicks",
    "session_clicks_total", "dwell_ms_total", "rate", "event_wm", "feed_fp", "bot",
    "recent_reads", "pending", "seen",
)
SHORT: dict[str, str] = {name: chr(ord("a") + i) for i, name in enumerate(_LONG)}
"""Profile field -> one-letter key of the compact form's rest JSON (append only: stored
values depend on it)."""
_BACK: dict[str, str] = {v: k for k, v in SHORT.items()}

REST_ZDICT = (
    b'{"a":"U1","b":1,"c":1573516800000,"d":604800.0,"e":{"news":1.0,"sports":1.0},'
    b'"f":{"news":1.0,"sports":1.0},"g":{"mind":1},"h":0,"i":0,"j":0,"k":0.0,'
    b'"l":1573552343000,"m":1573557263000,"n":1,"o":1573557263000,"p":1573557263000,"q":1,'
    b'"r":1,"s":0,"t":[26225954,1],"u":1573557263000,"v":"1432be570f1ade01","w":false,'
    b'"~aud":{"b":["mind"],"f":["c:news","t:news"],"at":1796445674004}}'
)
"""Preset DEFLATE dictionary of the compact form's rest JSON: the field keys of :data:`SHORT`
and the shape of a typical profile (frozen: stored values depend on it)."""
_CID = itemgetter("content_id")
_AT = itemgetter("at")

Profile = dict[str, Any]


class ProfileFormatError(ValueError):
    """A stored profile is neither a JSON object nor a readable compact profile (or it was
    written under another item-table generation, or names an ordinal the table lacks)."""


def _pack_entries(entries: Any, ords: dict[str, int]) -> tuple[bytes, bytes, int, bool] | None:
    """(ordinals, times, count, times as int64) of a recent_reads/pending list; None when it
    is not a list of exactly ``{"content_id": interned str, "at": int}``."""
    if type(entries) is not list:
        return None
    n = len(entries)
    if n == 0:
        return b"", b"", 0, False
    try:
        if sum(map(len, entries)) != 2 * n:
            return None
        o = list(map(ords.__getitem__, map(_CID, entries)))
        at = list(map(_AT, entries))
    except (KeyError, TypeError):
        return None
    if {type(a) for a in at} != {int}:
        return None
    diffs = list(map(sub, at, at[1:]))
    wide = bool(diffs) and (min(diffs) < 0 or max(diffs) > _U32_MAX)
    try:
        times = _I8.pack(at[0]) + struct.pack(f"<{n - 1}{'q' if wide else 'I'}", *diffs)
    except struct.error:
        return None
    return struct.pack(f"<{n}I", *o), times, n, wide


def _deflate(raw: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=REST_ZDICT)
    return z.compress(raw) + z.flush()


def _inflate(raw: bytes) -> bytes:
    z = zlib.decompressobj(-15, zdict=REST_ZDICT)
    out = z.decompress(raw)
    if not z.eof or z.unused_data:
        raise ValueError("truncated or padded deflated rest")
    return out


def encode_profile(
    p: Profile, fmt: str = "compact", items: ItemTable | None = ITEMS, deflate: bool = True
) -> bytes:
    """Serialise a profile for ``fp:profile:{user}``.

    Args:
        p: the profile dict (feedpipe.model.profile).
        fmt: ``"compact"`` (the binary form; JSON when the profile does not fit it) or
            ``"json"``.
        items: item table whose cache holds an ordinal for every content id of the profile's
            ``recent_reads`` and ``pending`` (:func:`profile_ids`, then
            :func:`feedpipe.store.interning.intern`).
        deflate: store the compact form's rest JSON deflated when that is smaller
            (``profiles.profile_deflate``; the module docstring gives the cost).

    Returns:
        The bytes to store. Raises ``TypeError`` only when ``p`` is not JSON-serialisable.
    """
    if fmt != "compact" or items is None or items.gen is None:
        return orjson.dumps(p)
    reads = _pack_entries(p.get("recent_reads"), items.ords)
    pend = _pack_entries(p.get("pending"), items.ords)
    flags = 0
    seen_raw = b""
    seen = p.get("seen")
    if isinstance(seen, str):
        try:
            seen_raw = base64.b64decode(seen, validate=True)
            if base64.b64encode(seen_raw).decode() == seen:
                flags |= 4
        except (binascii.Error, ValueError):
            pass
    if flags & 4:
        runs = pack_seen(seen_raw)
        if runs is not None:
            seen_raw = runs
            flags |= 32
    skip = {"seen"} if flags & 4 else set()
    if reads is not None:
        flags |= 8 | (1 if reads[3] else 0)
        skip.add("recent_reads")
    if pend is not None:
        flags |= 16 | (2 if pend[3] else 0)
        skip.add("pending")
    rest = {SHORT.get(k) or "~" + k: v for k, v in p.items() if k not in skip}
    head = orjson.dumps(rest)
    if deflate:
        small = _deflate(head)
        if len(small) < len(head):
            head = small
            flags |= 64
    nr = reads[2] if reads is not None else 0
    npd = pend[2] if pend is not None else 0
    parts = [
        MAGIC,
        _HEAD.pack(items.gen, len(head), nr, npd, len(seen_raw) if flags & 4 else 0, flags),
        head,
    ]
    for packed in (reads, pend):
        if packed is not None:
            parts += (packed[0], packed[1])
    if flags & 4:
        parts.append(seen_raw)
    return b"".join(parts)


def profile_ids(p: Profile) -> list[str]:
    """The content ids of a profile's ``recent_reads`` and ``pending`` (what must be interned
    before :func:`encode_profile`)."""
    out: list[str] = []
    for name in ("recent_reads", "pending"):
        entries = p.get(name)
        if type(entries) is list:
            out += [e["content_id"] for e in entries if isinstance(e, dict) and "content_id" in e]
    return [c for c in out if isinstance(c, str)]


def _layout(raw: bytes) -> tuple[int, int, int, int, int, int]:
    gen, hlen, nr, npd, ns, flags = _HEAD.unpack_from(raw, 4)
    return gen, hlen, nr, npd, ns, flags


def profile_ordinals(raw: bytes | str | None) -> list[int]:
    """The item ordinals a stored compact profile names (``[]`` for JSON or an unreadable
    value): what :func:`feedpipe.store.interning.resolve` must cache before
    :func:`decode_profile`."""
    if not isinstance(raw, bytes) or not raw.startswith(MAGIC):
        return []
    try:
        _gen, hlen, nr, npd, _ns, flags = _layout(raw)
        pos = 4 + _HEAD.size + hlen
        out = list(struct.unpack_from(f"<{nr}I", raw, pos))
        pos += 4 * nr + (8 + (nr - 1) * (8 if flags & 1 else 4) if nr else 0)
        out += struct.unpack_from(f"<{npd}I", raw, pos)
        return out
    except struct.error:
        return []


def _entries(
    raw: bytes, pos: int, n: int, wide: bool, ids: dict[int, str]
) -> tuple[list[dict[str, Any]], int]:
    if n == 0:
        return [], pos
    o = struct.unpack_from(f"<{n}I", raw, pos)
    pos += 4 * n
    (first,) = _I8.unpack_from(raw, pos)
    pos += 8
    diffs = struct.unpack_from(f"<{n - 1}{'q' if wide else 'I'}", raw, pos)
    pos += (n - 1) * (8 if wide else 4)
    at = accumulate(diffs, sub, initial=first)
    names = map(ids.__getitem__, o)  # KeyError: an ordinal the table does not know
    return [{"content_id": c, "at": a} for c, a in zip(names, at, strict=True)], pos


def decode_profile(raw: bytes | str, items: ItemTable = ITEMS) -> Profile:
    """A stored profile value (compact or JSON) -> the profile dict.

    ``items``: the item table whose cache resolves the compact form's ordinals (the process's
    by default; :func:`profile_ordinals` then :func:`feedpipe.store.interning.resolve` fill it).

    Raises:
        ProfileFormatError: not a JSON object nor a complete compact profile, or a compact
            profile of another item-table generation or naming an ordinal the table lacks.
    """
    if isinstance(raw, str):
        raw = raw.encode()
    if not raw.startswith(MAGIC):
        from feedpipe.store.feeds import json_object

        return json_object(raw, ProfileFormatError, "profile")
    try:
        gen, hlen, nr, npd, ns, flags = _layout(raw)
        if gen != items.gen:
            raise ValueError(f"written under item table generation {gen}, current {items.gen}")
        pos = 4 + _HEAD.size
        body = raw[pos : pos + hlen]
        rest = orjson.loads(_inflate(body) if flags & 64 else body)
        pos += hlen
        p: Profile = {_BACK[k] if k in _BACK else k[1:]: v for k, v in rest.items()}
        if flags & 8:
            p["recent_reads"], pos = _entries(raw, pos, nr, bool(flags & 1), items.ids)
        if flags & 16:
            p["pending"], pos = _entries(raw, pos, npd, bool(flags & 2), items.ids)
        if flags & 4:
            if pos + ns > len(raw):
                raise ValueError("truncated seen")
            body = raw[pos : pos + ns]
            p["seen"] = base64.b64encode(unpack_seen(body) if flags & 32 else body).decode()
            pos += ns
        if pos != len(raw):
            raise ValueError(f"{len(raw) - pos} trailing bytes")
        return p
    except (struct.error, KeyError, TypeError, ValueError, AttributeError, zlib.error) as exc:
        raise ProfileFormatError(f"corrupt compact profile: {exc!r}") from exc


def stored_ordinals(raws: Iterable[bytes | str | None]) -> list[int]:
    """The item ordinals named by stored values (compact profiles and interned feeds, any mix;
    other values name none): pass them to :func:`feedpipe.store.interning.resolve` before decoding.
    """
    from feedpipe.store.feeds import MAGIC2, MAGIC3, feed_ordinals

    out: list[int] = []
    for raw in raws:
        if not isinstance(raw, bytes):
            continue
        if raw.startswith(MAGIC):
            out += profile_ordinals(raw)
        elif raw.startswith(MAGIC3) or raw.startswith(MAGIC2):
            out += feed_ordinals(raw)
    return out


def read_sync(r: Any, user_id: str) -> tuple[Profile | None, dict[str, Any] | None]:
    """(profile, feed) of ``user_id`` as stored, read with a synchronous redis-py client (one
    MGET with the item-table generation, then the ordinals the process lacks); ``None`` for a
    missing key. For tests, benchmarks and tools.

    Raises:
        ProfileFormatError, feedpipe.store.feeds.FeedFormatError: an unreadable stored value.
    """
    from feedpipe.store.client import mget_sync
    from feedpipe.store.feeds import decode_feed
    from feedpipe.store.interning import resolve_sync
    from feedpipe.store.keys import keys

    k = keys()
    raw_p, raw_f, gen = mget_sync(r, [k.profile(user_id), k.feed(user_id), k.item_gen()])
    ITEMS.sync(gen)
    resolve_sync(r, stored_ordinals([raw_p, raw_f]))
    return (
        decode_profile(raw_p) if raw_p is not None else None,
        decode_feed(raw_f) if raw_f is not None else None,
    )


def stored_profile(user_id: str, raw: bytes | str | None, stage: str) -> Profile | None:
    """The stored profile of ``user_id`` (:func:`decode_profile`), or ``None`` when there is
    none. An unreadable one is logged as an error (logger ``feedpipe.streams``, prefixed by
    ``stage``) and ``None`` is returned: the stage starts the user anew instead of crashing."""
    if not raw:
        return None
    try:
        return decode_profile(raw)
    except ProfileFormatError as exc:
        import logging

        logging.getLogger("feedpipe.streams").error(
            "%s: stored profile of %s is unreadable (%s); starting anew", stage, user_id, exc
        )
        return None


# -- writes and reads of fp:profile:{user} (the click path's partition transaction) -----------


def queue_profiles(
    pipe: Any, values: Mapping[str, bytes], ttl_s: int, kept_feeds: Sequence[str] = ()
) -> None:
    """Queue SET ... EX ``ttl_s`` of user -> encoded profile, and an EXPIRE ``ttl_s`` of the
    feeds of ``kept_feeds`` (users of ``values`` whose stored feed is kept without a re-rank:
    it lives as long as its profile), in one SET_EX_MANY call (a feed key has its user's hash
    tag, the slot of the profile key)."""
    if not values:
        return
    k = keys()
    users = list(values)
    pipe.eval(
        scripts.SET_EX_MANY, len(users) + len(kept_feeds), *[k.profile(u) for u in users],
        *[k.feed(u) for u in kept_feeds], ttl_s, *[values[u] for u in users],
    )


def queue_delete(pipe: Any, user_id: str) -> None:
    """Queue the deletion of the user's profile."""
    pipe.delete(keys().profile(user_id))


async def read_raw(r: Any, user_ids: Sequence[str], feeds: bool = False) -> list[Any]:
    """The stored profiles of ``user_ids`` (then their feeds, when ``feeds``) as raw values,
    in one MGET with the item-table generation; the process's item table is synced and the
    ordinals they name resolved (feedpipe/store/interning.py), so :func:`decode_profile` and
    :func:`feedpipe.store.feeds.decode_feed` can read them."""
    k = keys()
    names = [k.profile(u) for u in user_ids]
    if feeds:
        names += [k.feed(u) for u in user_ids]
    raws = await mget(r, [*names, k.item_gen()])
    ITEMS.sync(raws.pop())
    await resolve(r, stored_ordinals(raws))
    return raws


async def existing(r: Any, user_ids: Sequence[str]) -> list[bool]:
    """Whether each user of ``user_ids`` has a stored profile (one MGET)."""
    k = keys()
    return [raw is not None for raw in await mget(r, [k.profile(u) for u in user_ids])]
