"""Byte layout of the binary feed values (``fp:feed:{user}``) and their columnar encoder.

:mod:`feedpipe.store.feeds` is the codec; this module holds what its encoders share: the
magic prefixes, the fixed-size item record (:func:`record_dtype`), the framing of a value
(:func:`framed`) and :func:`encode_columns`, which writes a click-path
:class:`feedpipe.wire.ranked.RankedFeed` from its columns. Layouts: docs/redis-keys.md,
"Feed values".
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import orjson

from feedpipe.store.interning import ItemTable
from feedpipe.wire.ranked import RankedFeed

MAGIC = b"\xffFP1"
MAGIC2 = b"\xffFP2"
MAGIC3 = b"\xffFP3"
GEN_HEADER = struct.Struct("<II")
"""MAGIC2 header after the magic: item-table generation, JSON header length (bytes)."""
FP3 = struct.Struct("<IIIBB")
"""MAGIC3 header after the magic: generation, deflated header length, item count, floats per
item, flags (bit 0 item groups, bit 1 quantised values)."""
HEADER_ZDICT = (
    b'{"user_id":"U36684","profile_version":1,"stats_version":1,"catalogue_version":1,'
    b'"generated_at":1573269098000,"ranker":"affinity","digest":{"c":{},"t":{},'
    b'"ls":1573269098000,"b":["mind"]},"_g":[{"brand":"mind","weights":{"a":0.6,"b":0.1,'
    b'"c":0.3},"ranker":"affinity","weight_set":"affinity-seed-mind","weight_version":1,'
    b'"arm":null,"experiment":null,"_n":["score","affinity","recency","engagement"]}]}'
)
"""Preset DEFLATE dictionary of MAGIC3 headers (frozen: stored values depend on it)."""
QUANT = 65535.0
"""Scale of a quantised value: a float in [0, 1] is stored as round(v * QUANT) in a uint16."""
HEADER = struct.Struct("<I")
"""MAGIC header after the magic: JSON header length (bytes)."""
_SOURCE_BITS = 8
"""Bits of a candidate source set in :func:`encode_columns`' group key (4 sources today)."""


def record_dtype(multi: bool, width: int, quant: bool, interned: bool = False) -> np.dtype[Any]:
    """The fixed-size item layout of a feed with hex ids (or item ordinals when ``interned``)
    and ``width`` floats per item."""
    fields: list[tuple[str, str] | tuple[str, str, tuple[int]]] = []
    if multi:
        fields.append(("g", "u1"))
    fields.append(("o", "<u4") if interned else ("id", "V32"))
    fields.append(("v", "<u2" if quant else "<f4", (width,)))
    return np.dtype(fields)


def framed(doc: dict[str, Any], groups: list[dict[str, Any]], quant: bool, n: int, rec: Any,
            interned: bool, table: ItemTable | None) -> bytes:
    """The stored value: magic, header (``doc`` without items, ``_g`` the item groups) and the
    item records ``rec``: MAGIC3 (deflated header, ``table``'s generation) when ``interned``,
    else MAGIC (hex ids)."""
    header = {k: v for k, v in doc.items() if k != "items"}
    width = len(groups[0]["_n"]) if groups else 0
    if interned and table is not None and table.gen is not None:
        header["_g"] = groups
        z = zlib.compressobj(6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_ZDICT)
        head = z.compress(orjson.dumps(header)) + z.flush()
        flags = (1 if len(groups) > 1 else 0) | (2 if quant else 0)
        return b"".join(
            (MAGIC3, FP3.pack(table.gen, len(head), n, width, flags), head, rec.tobytes())
        )
    header.update({"_g": groups, "_q": int(quant), "_h": 1, "_c": n})
    head = orjson.dumps(header)
    return b"".join((MAGIC, HEADER.pack(len(head)), head, rec.tobytes()))


def encode_columns(doc: dict[str, Any], feed: RankedFeed, table: ItemTable | None
                   ) -> bytes | None:
    """The stored value of feed document ``doc`` whose items are ``feed``, built from the
    columns: the same bytes as :func:`feedpipe.store.feeds.encode_feed` of ``feed.dicts()``
    (MAGIC3 when ``table`` holds every id, else MAGIC with hex ids). None (the caller encodes
    the dicts) when the feed is empty, its servings differ in features, a value is not finite,
    there are more than 255 (serving, source set) groups, or the ids need the hex form and
    are not 64 hex digits."""
    n = len(feed)
    names = feed.servings[0].names if feed.servings else ()
    if n == 0 or any(s.names != names for s in feed.servings):
        return None
    vals = np.empty((n, len(names) + 1))
    vals[:, 0] = feed.scores
    vals[:, 1:] = (feed.features if names == feed.names
                   else feed.features[:, [feed.names.index(k) for k in names]])
    if not np.all(np.isfinite(vals)):
        return None
    ords: list[int] | None = None
    if table is not None and table.gen is not None:
        try:
            ords = list(map(table.ords.__getitem__, feed.ids))
        except KeyError:
            ords = None
    if ords is None and not feed.digests:
        return None
    # groups: the distinct (serving, source set) pairs, in first-seen order
    key = feed.serving_of << _SOURCE_BITS
    if feed.bits is not None:
        if int(feed.bits.max()) >= 1 << _SOURCE_BITS:
            return None
        key = key | feed.bits
    distinct = list(dict.fromkeys(key.tolist()))
    if len(distinct) > 255:
        return None
    group_of = np.zeros(int(max(distinct)) + 1, dtype=np.uint8)
    group_of[distinct] = np.arange(len(distinct))
    groups = []
    for kv in distinct:
        s = feed.servings[kv >> _SOURCE_BITS]
        g: dict[str, Any] = {"brand": s.brand}
        if feed.sources is not None:
            g["sources"] = feed.sources[int(np.argmax(key == kv))]
        g.update(s.tail())
        g["_n"] = ["score", *names]
        groups.append(g)
    quant = bool(vals.min() >= 0.0 and vals.max() <= 1.0)
    multi = len(groups) > 1
    rec = np.zeros(n, dtype=record_dtype(multi, len(names) + 1, quant, ords is not None))
    if multi:
        rec["g"] = group_of[key]
    if ords is not None:
        rec["o"] = ords
    else:
        rec["id"] = np.frombuffer(feed.digests, dtype="V32")
    rec["v"] = np.rint(vals * QUANT) if quant else vals
    return framed(doc, groups, quant, n, rec, ords is not None, table)
