"""The feed storage codec (feedpipe/feedstore.py): round trips, fallbacks, corrupt input."""

from __future__ import annotations

import hashlib
import random

import orjson
import pytest

from feedpipe.feedstore import MAGIC, FeedFormatError, decode_feed, encode_feed


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
