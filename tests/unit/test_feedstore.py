"""The feed storage codec (feedpipe/store/feeds.py): round trips, fallbacks, corrupt input."""

from __future__ import annotations

import hashlib
import random

import orjson
import pytest

from feedpipe.store.feeds import (
    MAGIC,
    MAGIC2,
    MAGIC3,
    FeedFormatError,
    decode_feed,
    encode_feed,
    feed_ordinals,
)
from feedpipe.store.interning import ItemTable


def _doc(n: int = 100, ids: str = "hex", brands: tuple[str, ...] = ("mind",)) -> dict:
    rnd = random.Random(7)
    w = {"a": 0.6, "b": 0.1, "c": 0.3}
    items = []
    for i in range(n):
        cid = hashlib.sha256(str(i).encode()).hexdigest() if ids == "hex" else f"item-{i}"
        a, r, e = rnd.random(), rnd.random(), rnd.random()
        items.append(
            {
                "content_id": cid,
                "brand": brands[i % len(brands)],
                "rank": i + 1,
                "score": 0.6 * a + 0.1 * r + 0.3 * e,
                "affinity": a,
                "recency": r,
                "engagement": e,
                "weights": w,
                "weight_version": 1,
                "arm": None,
            }
        )
    return {
        "user_id": "U1",
        "profile_version": 3,
        "stats_version": 9,
        "catalogue_version": 2,
        "generated_at": 1_573_000_000_000,
        "ranker": "affinity",
        "items": items,
    }


def _close(a: dict, b: dict, tol: float) -> None:
    assert {k: v for k, v in a.items() if k != "items"} == {
        k: v for k, v in b.items() if k != "items"
    }
    assert len(a["items"]) == len(b["items"])
    for x, y in zip(a["items"], b["items"], strict=True):
        assert x.keys() == y.keys()
        for k, v in x.items():
            if isinstance(v, float):
                assert abs(v - y[k]) <= tol, k
            else:
                assert v == y[k], k


@pytest.mark.parametrize("ids", ["hex", "plain"])
@pytest.mark.parametrize("brands", [("mind",), ("mind", "frontity")])
def test_compact_round_trip_keeps_order_and_fields(ids: str, brands: tuple[str, ...]) -> None:
    doc = _doc(ids=ids, brands=brands)
    raw = encode_feed(doc)
    assert raw.startswith(MAGIC)
    _close(decode_feed(raw), doc, 1 / 131070 + 1e-12)


def test_compact_is_much_smaller_than_json() -> None:
    doc = _doc()
    raw = encode_feed(doc)
    assert len(raw) <= 40 * 100 + 400
    assert len(raw) * 5 < len(orjson.dumps(doc))


def test_values_outside_unit_interval_use_float32() -> None:
    doc = _doc(5)
    doc["items"][2]["score"] = 3.25
    doc["items"][3]["affinity"] = -0.5
    _close(decode_feed(encode_feed(doc)), doc, 1e-6)


def test_json_format_and_legacy_json_values_decode() -> None:
    doc = _doc(3)
    assert decode_feed(encode_feed(doc, "json")) == doc
    assert decode_feed(orjson.dumps(doc)) == doc


def test_unholdable_document_falls_back_to_json() -> None:
    doc = _doc(3)
    doc["items"][1]["rank"] = 7  # ranks must be 1..n to be implicit
    raw = encode_feed(doc)
    assert not raw.startswith(MAGIC)
    assert decode_feed(raw) == doc
    nan = _doc(2)
    nan["items"][0]["score"] = float("nan")
    assert not encode_feed(nan).startswith(MAGIC)


def test_empty_feed_round_trips() -> None:
    doc = _doc(0)
    assert decode_feed(encode_feed(doc)) == doc


@pytest.mark.parametrize("cut", [5, 12, -1, -30])
def test_truncated_or_corrupt_values_raise_format_error(cut: int) -> None:
    raw = encode_feed(_doc(10))
    with pytest.raises(FeedFormatError):
        decode_feed(raw[:cut])
    with pytest.raises(FeedFormatError):
        decode_feed(b"not json")
    with pytest.raises(FeedFormatError):
        decode_feed(b"[1, 2]")


def _table(doc: dict, gen: int = 77) -> ItemTable:
    t = ItemTable()
    t.gen = gen
    ids = sorted({it["content_id"] for it in doc["items"]})
    t.learn([1000 + i for i in range(len(ids))], ids)
    return t


@pytest.mark.parametrize("ids", ["hex", "plain"])
@pytest.mark.parametrize("brands", [("mind",), ("mind", "frontity")])
def test_interned_round_trip_keeps_order_fields_and_extra_header_keys(
    ids: str, brands: tuple[str, ...]
) -> None:
    doc = _doc(ids=ids, brands=brands)
    doc["digest"] = {"categories": ["news"], "topics": []}  # extra header keys survive
    t = _table(doc)
    raw = encode_feed(doc, "compact", t)
    assert raw.startswith(MAGIC3)
    assert len(raw) <= (5 if len(brands) > 1 else 4) * 100 + 8 * 100 + 500  # ordinal + 4 uint16
    assert feed_ordinals(raw) == [t.ords[it["content_id"]] for it in doc["items"]]
    _close(decode_feed(raw, t), doc, 1 / 131070 + 1e-12)


def test_interned_needs_every_id_and_the_same_generation() -> None:
    doc = _doc(10)
    t = _table(doc)
    partial = ItemTable()
    partial.gen = 77
    partial.learn([1], [doc["items"][0]["content_id"]])
    assert encode_feed(doc, "compact", partial).startswith(MAGIC)  # hex form: an id is missing
    assert encode_feed(doc, "compact", ItemTable()).startswith(MAGIC)  # no table generation
    raw = encode_feed(doc, "compact", t)
    other = _table(doc, gen=78)  # the table was wiped and rebuilt: ordinals mean other items
    with pytest.raises(FeedFormatError, match="generation"):
        decode_feed(raw, other)
    empty = ItemTable()
    empty.gen = 77  # the process has not resolved the ordinals
    with pytest.raises(FeedFormatError):
        decode_feed(raw, empty)
    assert feed_ordinals(encode_feed(doc)) == [] and feed_ordinals(raw[:6]) == []


@pytest.mark.parametrize("cut", [5, 14, -1, -30])
def test_truncated_interned_values_raise_format_error(cut: int) -> None:
    doc = _doc(10)
    t = _table(doc)
    raw = encode_feed(doc, "compact", t)
    with pytest.raises(FeedFormatError):
        decode_feed(raw[:cut], t)


def test_interned_header_is_deflated_and_legacy_interned_values_decode() -> None:
    import struct

    import numpy as np

    doc = _doc(20)
    t = _table(doc)
    raw = encode_feed(doc, "compact", t)
    header = {k: v for k, v in doc.items() if k != "items"}
    assert len(raw) < 20 * 12 + len(orjson.dumps(header)) // 2  # header ~4x smaller
    # a MAGIC2 value (header as JSON) written before the deflated header
    w = {"a": 0.6, "b": 0.1, "c": 0.3}
    group = {"brand": "mind", "weights": w, "weight_version": 1, "arm": None}
    names = ["score", "affinity", "recency", "engagement"]
    head = orjson.dumps({**header, "_g": [{**group, "_n": names}], "_q": 1, "_c": 20})
    rec = np.zeros(20, dtype=[("o", "<u4"), ("v", "<u2", (4,))])
    rec["o"] = [t.ords[it["content_id"]] for it in doc["items"]]
    rec["v"] = [[round(it[n] * 65535) for n in names] for it in doc["items"]]
    legacy = MAGIC2 + struct.pack("<II", t.gen, len(head)) + head + rec.tobytes()
    assert feed_ordinals(legacy) == rec["o"].tolist()
    _close(decode_feed(legacy, t), doc, 1 / 131070 + 1e-12)
