"""Storage codec of ranked feeds (``fp:feed:{user}``): JSON or a compact binary form.

The feed document (streams/clickpath/catalogue.py :func:`feed_json`) is a dict: ``user_id``,
``profile_version``, ``stats_version``, ``catalogue_version``, ``generated_at`` (epoch ms),
``ranker``, ... and ``items``: a list of dicts, item *i* having ``content_id``, ``rank`` (= i+1),
its score and score components (floats, e.g. ``score``, ``affinity``, ``recency``,
``engagement``) and descriptive fields shared by many items (``brand``, ``weights``, ``ranker``,
``weight_version``, ``arm``). :func:`decode_feed` returns that same dict shape for both forms.

The binary forms (compact ``MAGIC``, interned ``MAGIC2`` and ``MAGIC3`` with a deflated header
using :data:`HEADER_ZDICT`): their byte layouts, the uint16 quantisation of floats in [0, 1]
(error <= 1/131070), when a document falls back to JSON, and their sizes (~1.3 KB for 100
items against ~34 KB of JSON) are in docs/redis-keys.md, "Feed values". :func:`encode_feed`
never raises for a well-formed dict; a value written under another item-table generation, or
naming an ordinal the table does not know, is a :class:`FeedFormatError`.
"""

from __future__ import annotations

import struct
import zlib
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from feedpipe.store import scripts
from feedpipe.store.client import mget
from feedpipe.store.feed_layout import (
    FP3,
    GEN_HEADER,
    HEADER,
    HEADER_ZDICT,
    MAGIC,
    MAGIC2,
    MAGIC3,
    QUANT,
    encode_columns,
    framed,
    record_dtype,
)
from feedpipe.store.interning import ITEMS, ItemTable, resolve
from feedpipe.store.keys import keys
from feedpipe.wire.ranked import RankedFeed

__all__ = ["HEADER_ZDICT", "MAGIC", "MAGIC2", "MAGIC3", "FeedFormatError", "decode_feed",
           "encode_feed", "feed_ordinals", "json_object", "queue_delete",
           "queue_feeds", "read_raw"]

_HEX = frozenset("0123456789abcdef")

Feed = dict[str, Any]


class FeedFormatError(ValueError):
    """A stored feed value is neither JSON nor a readable compact feed."""


def _is_hex_id(cid: str) -> bool:
    return len(cid) == 64 and cid.isascii() and _HEX.issuperset(cid)


def encode_feed(doc: Feed, fmt: str = "compact", items: ItemTable | None = None) -> bytes:
    """Serialise a feed document for ``fp:feed:{user}``.

    Args:
        doc: the feed dict (shape in the module docstring); its ``items`` may be a
            :class:`feedpipe.wire.ranked.RankedFeed` (the click path's), encoded from its
            columns into the same bytes as its item dicts.
        fmt: ``"compact"`` (binary form; falls back to JSON for a document it cannot hold) or
            ``"json"`` (orjson).
        items: with ``compact``, an item table whose cache holds an ordinal for every content
            id of the feed (:func:`feedpipe.store.interning.intern` first): the interned form
            (MAGIC2). Without it, or when an id is missing, the hex compact form (MAGIC).

    Returns:
        The bytes to store. Raises ``TypeError`` only when ``doc`` is not JSON-serialisable.
    """
    feed = doc.get("items")
    if isinstance(feed, RankedFeed):
        if fmt == "compact":
            quick = encode_columns(doc, feed, items)
            if quick is not None:
                return quick
        doc = {**doc, "items": feed.dicts()}
    if fmt != "compact":
        return orjson.dumps(doc)
    out = _encode_compact(doc, items)
    return out if out is not None else orjson.dumps(doc)


def feed_ordinals(raw: bytes | str | None) -> list[int]:
    """The item ordinals a stored feed names (interned form only; ``[]`` for the others and for
    a value too short to read): what :func:`feedpipe.store.interning.resolve` must cache before
    :func:`decode_feed`."""
    if not isinstance(raw, bytes):
        return []
    if raw.startswith(MAGIC3):
        try:
            _gen, hlen, count, width, flags = FP3.unpack_from(raw, 4)
            dt = record_dtype(bool(flags & 1), width, bool(flags & 2), interned=True)
            rec = np.frombuffer(raw, dtype=dt, count=count, offset=4 + FP3.size + hlen)
            ords: list[int] = rec["o"].tolist()
            return ords
        except (struct.error, ValueError):
            return []
    if not raw.startswith(MAGIC2):
        return []
    try:
        _gen, hlen = GEN_HEADER.unpack_from(raw, 4)
        pos = 12 + hlen
        header = orjson.loads(raw[12:pos])
        count = int(header["_c"])
        width = len(header["_g"][0]["_n"]) if header["_g"] else 0
        dt = record_dtype(len(header["_g"]) > 1, width, bool(header["_q"]), interned=True)
        rec = np.frombuffer(raw, dtype=dt, count=count, offset=pos)
        out: list[int] = rec["o"].tolist()
        return out
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
        return []


def _encode_fast(doc: Feed, items: list[Any], table: ItemTable | None = None) -> bytes | None:
    """Vectorised encoder for the common case (every item has the same keys, in the same
    order, and a 64-hex content id); the same bytes as the generic path. None: not that case.
    With ``table`` holding every content id: the interned form (ids need not be hex)."""
    first = items[0]
    if not isinstance(first, dict):
        return None
    keys = first.keys()
    names = [k for k in keys if k not in ("content_id", "rank") and type(first[k]) is float]
    fixed_keys = [k for k in keys if k not in ("content_id", "rank") and k not in names]
    n = len(items)
    try:
        if any(type(it) is not dict or it.keys() != keys for it in items):
            return None
        if list(map(itemgetter("rank"), items)) != list(range(1, n + 1)):
            return None
        cids = list(map(itemgetter("content_id"), items))
        ords: list[int] | None = None
        if table is not None and table.gen is not None:
            try:
                ords = list(map(table.ords.__getitem__, cids))
            except (KeyError, TypeError):
                ords = None
        rows: list[Any] = list(map(itemgetter(*names), items)) if names else [()] * n
        fixed: list[Any] = list(map(itemgetter(*fixed_keys), items)) if fixed_keys else [()] * n
        if len(fixed_keys) == 1:
            fixed = [(fx,) for fx in fixed]
        id_bytes = b""
        if ords is None:
            joined = "".join(cids)
            if len(joined) != 64 * n or joined != joined.lower():
                return None
            id_bytes = bytes.fromhex(joined)
    except (KeyError, TypeError, ValueError):
        return None
    if ords is None and len(id_bytes) != 32 * n:  # fromhex skips whitespace: not 64 hex digits
        return None
    group_fixed: list[tuple[Any, ...]] = []
    gidx = np.zeros(n, dtype=np.uint8)
    for i, fx in enumerate(fixed):
        if group_fixed and (fx is group_fixed[-1] or fx == group_fixed[-1]):
            gidx[i] = len(group_fixed) - 1
            continue
        try:
            g = group_fixed.index(fx)
        except ValueError:
            if len(group_fixed) >= 255:
                return None
            g = len(group_fixed)
            group_fixed.append(fx)
        gidx[i] = g
    vals = np.array(rows, dtype=np.float64).reshape(n, len(names))
    if not np.all(np.isfinite(vals)):
        return None
    quant = bool(vals.size == 0 or (vals.min() >= 0.0 and vals.max() <= 1.0))
    multi = len(group_fixed) > 1
    rec = np.zeros(n, dtype=record_dtype(multi, len(names), quant, ords is not None))
    if multi:
        rec["g"] = gidx
    if ords is not None:
        rec["o"] = ords
    else:
        rec["id"] = np.frombuffer(id_bytes, dtype="V32")
    rec["v"] = np.rint(vals * QUANT) if quant else vals
    groups = [{**dict(zip(fixed_keys, fx, strict=True)), "_n": names} for fx in group_fixed]
    return framed(doc, groups, quant, n, rec, ords is not None, table)


def _encode_compact(doc: Feed, table: ItemTable | None = None) -> bytes | None:
    items = doc.get("items")
    if not isinstance(items, list):
        return None
    if items:
        quick = _encode_fast(doc, items, table)
        if quick is not None:
            return quick
    groups: dict[bytes, int] = {}  # group content (sorted JSON) -> index
    fast: dict[tuple[Any, ...], int] = {}  # (field, value or id of a container) -> index
    group_docs: list[dict[str, Any]] = []
    per_item: list[tuple[int, str, list[float]]] = []
    all_hex = True
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            return None
        cid = it.get("content_id")
        if not isinstance(cid, str) or it.get("rank") != i + 1:
            return None
        names: list[str] = []
        vals: list[float] = []
        fixed: list[tuple[str, Any]] = []
        for key, v in it.items():
            if key == "content_id" or key == "rank":
                continue
            if type(v) is float:
                names.append(key)
                vals.append(v)
            else:
                fixed.append((key, v))
        # items of one ranked feed share their weights mapping: key on its identity first
        fkey = (*names, "", *[(f, id(v) if isinstance(v, dict | list) else v) for f, v in fixed])
        g = fast.get(fkey)
        if g is None:
            gdoc = dict(fixed)
            gdoc["_n"] = names
            gkey = orjson.dumps(gdoc, option=orjson.OPT_SORT_KEYS)
            g = groups.get(gkey)
            if g is None:
                if len(groups) >= 255:
                    return None
                g = groups[gkey] = len(group_docs)
                group_docs.append(gdoc)
            fast[fkey] = g
        if all_hex and not _is_hex_id(cid):
            all_hex = False
        per_item.append((g, cid, vals))
    if not all_hex and any(len(cid.encode()) > 255 for _, cid, _ in per_item):
        return None
    flat = np.fromiter((v for _, _, vs in per_item for v in vs), dtype=np.float64)
    if not np.all(np.isfinite(flat)):
        return None
    quant = bool(flat.size == 0 or (flat.min() >= 0.0 and flat.max() <= 1.0))
    header = {k: v for k, v in doc.items() if k != "items"}
    header.update({"_g": group_docs, "_q": int(quant), "_h": int(all_hex), "_c": len(items)})
    head = orjson.dumps(header)
    stored = np.rint(flat * QUANT).astype("<u2") if quant else flat.astype("<f4")
    raw_vals = stored.tobytes()
    width = 2 if quant else 4
    parts = [MAGIC, HEADER.pack(len(head)), head]
    multi = len(group_docs) > 1
    pos = 0
    for g, cid, vs in per_item:
        if multi:
            parts.append(bytes((g,)))
        if all_hex:
            parts.append(bytes.fromhex(cid))
        else:
            b = cid.encode()
            parts.append(bytes((len(b),)) + b)
        n = len(vs) * width
        parts.append(raw_vals[pos : pos + n])
        pos += n
    return b"".join(parts)


def json_object(raw: bytes, error: type[ValueError], what: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object (the JSON form of a stored feed or profile).

    Raises:
        error: ``raw`` is not JSON, or not an object (``what`` names it in the message).
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{what} is neither compact nor JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise error(f"{what} JSON is not an object")
    return doc


def decode_feed(raw: bytes | str, items: ItemTable = ITEMS) -> Feed:
    """A stored feed value (compact or JSON) -> the feed dict (shape in the module docstring).

    ``raw`` is the value as Redis returns it (bytes); a ``str`` (a client decoding responses)
    is read as UTF-8, which only a JSON feed survives. ``items``: the item table whose cache
    resolves an interned feed's ordinals (:func:`feed_ordinals`, then
    :func:`feedpipe.store.interning.resolve`); the process's table by default.

    Raises:
        FeedFormatError: ``raw`` is neither a JSON object nor a complete compact feed, or an
            interned feed of another table generation or with an ordinal the table lacks.
    """
    if isinstance(raw, str):
        raw = raw.encode()
    if raw.startswith(MAGIC3) or raw.startswith(MAGIC2):
        try:
            return _decode_interned(raw, items)
        except (
            struct.error, IndexError, KeyError, TypeError, ValueError, AttributeError, zlib.error
        ) as exc:
            raise FeedFormatError(f"corrupt interned feed: {exc!r}") from exc
    if not raw.startswith(MAGIC):
        return json_object(raw, FeedFormatError, "feed")
    try:
        return _decode_compact(raw)
    except (struct.error, IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FeedFormatError(f"corrupt compact feed: {exc}") from exc


def _decode_interned(raw: bytes, table: ItemTable) -> Feed:
    if raw.startswith(MAGIC3):
        gen, hlen, count, _width, flags = FP3.unpack_from(raw, 4)
        if gen != table.gen:
            raise ValueError(f"written under item table generation {gen}, current {table.gen}")
        pos = 4 + FP3.size + hlen
        z = zlib.decompressobj(-15, HEADER_ZDICT)
        header = orjson.loads(z.decompress(raw[4 + FP3.size : pos]) + z.flush())
        if not z.eof:
            raise ValueError("truncated feed header")
        groups: list[dict[str, Any]] = header.pop("_g")
        quant = bool(flags & 2)
    else:
        gen, hlen = GEN_HEADER.unpack_from(raw, 4)
        if gen != table.gen:
            raise ValueError(f"written under item table generation {gen}, current {table.gen}")
        pos = 12 + hlen
        header = orjson.loads(raw[12:pos])
        groups = header.pop("_g")
        quant = bool(header.pop("_q"))
        count = int(header.pop("_c"))
    multi = len(groups) > 1
    fixed_parts = [({k: v for k, v in g.items() if k != "_n"}, list(g["_n"])) for g in groups]
    widths = {len(names) for _, names in fixed_parts}
    if len(widths) > 1:
        raise ValueError("interned feed groups of different widths")
    width = widths.pop() if widths else 0
    dt = record_dtype(multi, width, quant, interned=True)
    if len(raw) - pos != dt.itemsize * count:
        raise ValueError("interned feed length does not match its item count")
    rec = np.frombuffer(raw, dtype=dt, count=count, offset=pos)
    ids = list(map(table.ids.__getitem__, rec["o"].tolist()))  # KeyError: unknown ordinal
    vals = ((rec["v"] / QUANT) if quant else rec["v"].astype(np.float64)).tolist()
    gs = rec["g"].tolist() if multi else [0] * count
    out: list[dict[str, Any]] = []
    for i, (g, row) in enumerate(zip(gs, vals, strict=True)):
        fixed, names = fixed_parts[g]
        entry: dict[str, Any] = {"content_id": ids[i], "rank": i + 1}
        entry.update(zip(names, row, strict=True))
        entry.update(fixed)
        out.append(entry)
    header["items"] = out
    return header


def _decode_compact(raw: bytes) -> Feed:
    (hlen,) = HEADER.unpack_from(raw, 4)
    pos = 8 + hlen
    header = orjson.loads(raw[8:pos])
    groups: list[dict[str, Any]] = header.pop("_g")
    quant = bool(header.pop("_q"))
    all_hex = bool(header.pop("_h"))
    count = int(header.pop("_c"))
    width = 2 if quant else 4
    dtype = "<u2" if quant else "<f4"
    multi = len(groups) > 1
    fixed_parts = [({k: v for k, v in g.items() if k != "_n"}, list(g["_n"])) for g in groups]
    widths = {len(names) for _, names in fixed_parts}
    if all_hex and count and len(widths) == 1:  # fixed-size records: vectorised
        dt = record_dtype(multi, widths.pop(), quant)
        if len(raw) - pos != dt.itemsize * count:
            raise ValueError("compact feed length does not match its item count")
        rec = np.frombuffer(raw, dtype=dt, count=count, offset=pos)
        vals = (rec["v"] / QUANT) if quant else rec["v"].astype(np.float64)
        gs = rec["g"].tolist() if multi else [0] * count
        ids = rec["id"].tobytes().hex()
        out: list[dict[str, Any]] = []
        for i, (g, row) in enumerate(zip(gs, vals.tolist(), strict=True)):
            fixed, names = fixed_parts[g]
            entry: dict[str, Any] = {"content_id": ids[64 * i : 64 * i + 64], "rank": i + 1}
            entry.update(zip(names, row, strict=True))
            entry.update(fixed)
            out.append(entry)
        header["items"] = out
        return header
    items: list[dict[str, Any]] = []
    for i in range(count):
        g = 0
        if multi:
            g = raw[pos]
            pos += 1
        if all_hex:
            end = pos + 32
            if end > len(raw):
                raise ValueError("truncated content id")
            cid = raw[pos:end].hex()
        else:
            n = raw[pos]
            end = pos + 1 + n
            if end > len(raw):
                raise ValueError("truncated content id")
            cid = raw[pos + 1 : end].decode()
        pos = end
        fixed, names = fixed_parts[g]
        nbytes = len(names) * width
        if pos + nbytes > len(raw):
            raise ValueError("truncated item values")
        vals = np.frombuffer(raw, dtype=dtype, count=len(names), offset=pos)
        pos += nbytes
        floats = (vals / QUANT).tolist() if quant else vals.astype(np.float64).tolist()
        item: dict[str, Any] = {"content_id": cid, "rank": i + 1}
        item.update(zip(names, floats, strict=True))
        item.update(fixed)
        items.append(item)
    if pos != len(raw):
        raise ValueError(f"{len(raw) - pos} trailing bytes")
    header["items"] = items
    return header


# -- writes of fp:feed:{user} --------------------------------------------------------------


def queue_feeds(pipe: Any, values: dict[str, bytes], ttl_s: int | None) -> None:
    """Queue the SET of user -> encoded feed: with EX ``ttl_s`` (one SET_EX_MANY call), or
    keeping each key's TTL when ``ttl_s`` is None (a re-rank of a live user)."""
    k = keys()
    if ttl_s is None:
        for u, v in values.items():
            pipe.set(k.feed(u), v, keepttl=True)
    elif values:
        pipe.eval(
            scripts.SET_EX_MANY, len(values), *[k.feed(u) for u in values], ttl_s,
            *values.values(),
        )


def queue_delete(pipe: Any, user_id: str) -> None:
    """Queue the deletion of the user's feed."""
    pipe.delete(keys().feed(user_id))


async def read_raw(r: Any, user_ids: list[str]) -> list[Any]:
    """The stored feeds of ``user_ids`` (raw, None where missing), one MGET with the item-table
    generation; the table is synced and the ordinals resolved for :func:`decode_feed`."""
    raws = await mget(r, [*(keys().feed(u) for u in user_ids), keys().item_gen()])
    ITEMS.sync(raws.pop())
    await resolve(r, [o for raw in raws for o in feed_ordinals(raw)])
    return raws
