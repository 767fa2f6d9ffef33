"""The feeds.updated record (feedpipe.UserFeed version 3, schemas/user_feed.v3.avsc): columnar.

A ranked feed is written as parallel columns rather than one Avro record per item, because
fastavro encodes a record with maps field by field in Python-level calls (about 1 ms for a
100-item version 2 feed on the benchmark machine) while a ``bytes`` field is one copy:

* ``content_digests``: the item ids in rank order as raw SHA-256 digests, 32 bytes each, when
  every id is a 64-digit lowercase hex string (the content id of :func:`feedpipe.ids.content_id`);
  otherwise empty and the ids are in ``content_ids`` (an array of strings);
* ``scores`` and each ``features`` entry: one little-endian IEEE 754 float64 per item
  (``numpy.frombuffer(b, "<f8")``), the feature names in ``feature_names`` (the rankers'
  components before weighting; 0.0 for an item whose ranker has no such feature);
* ``brands`` / ``brand_of`` and ``served`` / ``served_of``: the feed's distinct brands and
  servings (ranker, weight set, version, arm, experiment), and per item the index of its own;
  ``brand_of`` (``served_of``) is empty when the feed has a single brand (serving);
* ``weight_sets``: the values of every weight set named in ``served``, once per feed;
* ``items``: the version 2 per-item records, written empty (version 2 readers still decode a
  version 3 record; they see a feed without items).

:func:`user_feed_record` builds the record from the feed document stored in Redis
(:func:`streams.clickpath.catalogue.feed_json`); :func:`feed_items` turns a decoded record of
any version (1, 2, 3) back into the items, which is what a consumer of feeds.updated uses.
"""

from __future__ import annotations

import binascii
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feedpipe.wire.ranked import RankedFeed

ITEM_FIELDS = frozenset(
    ("content_id", "brand", "rank", "score", "weights", "ranker", "weight_set",
     "weight_version", "arm", "experiment", "sources")
)
"""Feed item keys that are not features (``sources``, the candidate sources, stay in Redis and
the read endpoint's explanation only; not a UserFeed field)."""

_CONTENT_ID = operator.itemgetter("content_id")
_SCORE = operator.itemgetter("score")
_BRAND = operator.itemgetter("brand")
_WEIGHT_SET = operator.itemgetter("weight_set")
_ARM = operator.itemgetter("arm")
_EXPERIMENT = operator.itemgetter("experiment")
_SERVED = operator.itemgetter("ranker", "weight_set", "weight_version", "arm", "experiment")
_DIGEST_HEX = 64
_F64 = np.dtype("<f8")


def _pack(values: Sequence[float]) -> bytes:
    """``values`` as little-endian float64 bytes (8 per value)."""
    return np.asarray(values, dtype=_F64).tobytes()


def _ids(items: Sequence[Mapping[str, Any]]) -> tuple[bytes, list[str]]:
    """(``content_digests``, ``content_ids``) of ``items``: the digests when every id is 64
    lowercase hex digits, else the ids as strings."""
    ids = list(map(_CONTENT_ID, items))
    joined = "".join(ids)
    n = len(ids)
    # one length for all, 64 hex digits each (fromhex skips whitespace: the byte count
    # tells), lowercase (the hex of the digests gives the same ids back)
    if n and len(joined) == _DIGEST_HEX * n and len(set(map(len, ids))) == 1:
        try:
            raw = bytes.fromhex(joined)
        except ValueError:
            return b"", ids
        if len(raw) == 32 * n and joined == joined.lower():
            return raw, []
    return b"", ids


def _index(values: list[Any]) -> tuple[list[Any], list[int]]:
    """(distinct values in first-seen order, per value its index; empty when one value)."""
    first = dict.fromkeys(values)
    if len(first) <= 1:
        return list(first), []
    pos = {v: i for i, v in enumerate(first)}
    return list(first), [pos[v] for v in values]


def user_feed_record(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A feed document (``user_id``, ``profile_version``, ``generated_at`` epoch ms,
    ``ranker``, ``items``: dicts of ``content_id``, ``brand``, ``score``, the serving fields
    of :func:`feedpipe.rank.rankers.rank_users`, ``weights`` and the ranker's features) as a
    feedpipe.UserFeed version 3 record (see the module docstring). Items are taken in list
    order (rank = position + 1). Extra document keys are left to the Avro writer, which
    ignores them. ``items`` may be a :class:`feedpipe.wire.ranked.RankedFeed`: the record is
    then built from its columns (:func:`_columns_record`, the same record).
    """
    items = doc["items"]
    if isinstance(items, RankedFeed):
        return _columns_record(doc, items)
    digests, ids = _ids(items)
    brands, brand_of = _index(list(map(_BRAND, items)))
    if (len(set(map(_WEIGHT_SET, items))) == 1 and len(set(map(_ARM, items))) == 1
            and len(set(map(_EXPERIMENT, items))) == 1):
        # one weight set (which names the ranker and version) and arm: one serving
        served_keys, served_of = [_SERVED(items[0])], list[int]()
    else:
        served_keys, served_of = _index(list(map(_SERVED, items)))
    sets: dict[str, dict[str, float]] = {}
    names: dict[str, None] = {}
    if len(served_keys) == 1:  # one ranker and weight set: every item has the same keys
        names = dict.fromkeys(k for k in items[0] if k not in ITEM_FIELDS)
        sets[served_keys[0][1]] = items[0].get("weights") or {}
    else:
        for it in items:
            names.update(dict.fromkeys(k for k in it if k not in ITEM_FIELDS))
            sets.setdefault(it["weight_set"], it.get("weights") or {})
    return _record(doc, sets, digests, ids, _pack(list(map(_SCORE, items))), brands, brand_of,
                   served_keys, served_of, list(names),
                   [_pack([it.get(k, 0.0) for it in items]) for k in names])


def _record(doc: Mapping[str, Any], sets: dict[str, dict[str, float]], digests: bytes,
            ids: list[str], scores: bytes, brands: list[str], brand_of: list[int],
            served_keys: list[tuple[Any, ...]], served_of: list[int], names: list[str],
            features: list[bytes]) -> dict[str, Any]:
    """The UserFeed version 3 record of ``doc`` from its columns (both builders' output)."""
    return {
        **doc,
        "items": [],
        "weight_sets": sets,
        "content_digests": digests,
        "content_ids": ids,
        "scores": scores,
        "brands": brands,
        "brand_of": brand_of,
        "served": [
            {"ranker": r, "weight_set": ws, "weight_version": v, "arm": arm, "experiment": exp}
            for r, ws, v, arm, exp in served_keys
        ],
        "served_of": served_of,
        "feature_names": names,
        "features": features,
    }


def _columns_record(doc: Mapping[str, Any], feed: RankedFeed) -> dict[str, Any]:
    """:func:`user_feed_record` of a columnar feed, from its columns (no item dicts)."""
    digests, ids = (feed.digests, []) if feed.digests else _ids([{"content_id": c}
                                                                 for c in feed.ids])
    order = feed.first_seen()  # servings by first item
    servings = feed.servings
    brands = list(dict.fromkeys(servings[g].brand for g in order))
    brand_of: list[int] = []
    if len(brands) > 1:
        lut = np.array([brands.index(s.brand) for s in servings], dtype=np.int64)
        brand_of = lut[feed.serving_of].tolist()
    keys = [(s.ranker, s.weight_set, s.weight_version, s.arm, s.experiment) for s in servings]
    one = len({(keys[g][1], keys[g][3], keys[g][4]) for g in order}) == 1
    served_keys = list(dict.fromkeys(keys[g] for g in order))[:1 if one else None]
    served_of: list[int] = []
    if len(served_keys) > 1:
        lut = np.array([served_keys.index(k) for k in keys], dtype=np.int64)
        served_of = lut[feed.serving_of].tolist()
    sets: dict[str, dict[str, float]] = {}
    for g in order:
        sets.setdefault(servings[g].weight_set, servings[g].weights)
    if one:
        sets = {served_keys[0][1]: servings[order[0]].weights} if order else {}
    names = list(dict.fromkeys(nm for g in order for nm in servings[g].names))
    return _record(doc, sets, digests, ids, feed.scores.astype(_F64).tobytes(), brands,
                   brand_of, served_keys, served_of, names,
                   [np.ascontiguousarray(feed.column(nm), dtype=_F64).tobytes() for nm in names])


def _unpack(raw: bytes, n: int, what: str) -> list[float]:
    if len(raw) != 8 * n:
        raise ValueError(f"UserFeed {what}: {len(raw)} bytes for {n} items (8 per item)")
    return np.frombuffer(raw, dtype=_F64).tolist()


def feed_items(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The items of a decoded feedpipe.UserFeed record of any version, in rank order: dicts
    of ``content_id``, ``brand``, ``rank`` (1-based), ``score``, ``ranker``, ``weight_set``,
    ``weight_version``, ``arm``, ``experiment``, ``weights`` (the weight set's values) and
    one key per feature (version 3: ``feature_names``; versions 1 and 2: ``affinity``,
    ``recency``, ``engagement`` and the ``components`` map).

    Raises:
        ValueError: a version 3 record whose columns disagree in length or index out of range.
    """
    digests = record.get("content_digests") or b""
    ids = ([binascii.hexlify(digests[i : i + 32]).decode() for i in range(0, len(digests), 32)]
           if digests else list(record.get("content_ids") or []))
    sets = record.get("weight_sets") or {}
    if not ids:
        out: list[dict[str, Any]] = []
        for it in record.get("items") or []:
            item: dict[str, Any] = {k: v for k, v in it.items() if k != "components"}
            item.update(it.get("components") or {})
            item["weights"] = it.get("weights") or sets.get(it.get("weight_set", ""), {})
            out.append(item)
        return out
    if len(digests) % 32:
        raise ValueError(f"UserFeed content_digests: {len(digests)} bytes, not 32 per item")
    n = len(ids)
    scores = _unpack(record["scores"], n, "scores")
    columns = [_unpack(raw, n, name)
               for name, raw in zip(record["feature_names"], record["features"], strict=True)]
    brand_of = record.get("brand_of") or [0] * n
    served_of = record.get("served_of") or [0] * n
    if len(brand_of) != n or len(served_of) != n:
        raise ValueError(f"UserFeed brand_of/served_of: not one entry per item ({n} items)")
    brands, served = record["brands"], record["served"]
    out = []
    for j, cid in enumerate(ids):
        s = served[served_of[j]]
        item = {"content_id": cid, "brand": brands[brand_of[j]],
                                "rank": j + 1, "score": scores[j], **s,
                                "weights": sets.get(s["weight_set"], {})}
        for name, col in zip(record["feature_names"], columns, strict=True):
            item[name] = col[j]
        out.append(item)
    return out
