"""Property-based tests (hypothesis) of what the read endpoint parses: stored feed documents,
content summaries, cursors and query parameters each give a value or the documented rejection
(shared settings, strategies: ``properties_support``).

| entry point | allowed rejection | the stage that dead-letters it |
|---|---|---|
| ``feedpipe.store.feeds.decode_feed`` | FeedFormatError | read endpoint, feeds |
| ``readapi.store.parse_feed`` / ``content_summary`` | none ({} / None) | read endpoint |
| ``readapi.params.decode_cursor`` / ``feed_params`` | BadRequest (HTTP 400) | read endpoint |
"""

from __future__ import annotations

import re
import struct

import orjson
from hypothesis import example, given
from hypothesis import strategies as st
from properties_support import _TEXT, JSON, prop

from feedpipe.store.feeds import MAGIC, FeedFormatError, decode_feed
from readapi.params import BadRequest, decode_cursor, encode_cursor, feed_params
from readapi.store import content_summary, parse_feed


@prop(150)
@example(raw=MAGIC)
@example(raw=MAGIC + b"\xff\xff\xff\xff")
@example(raw=MAGIC + struct.pack("<I", 2) + b"{}")
@example(raw=MAGIC + struct.pack("<I", 4) + b"null")  # header not an object: was AttributeError
@given(
    raw=st.one_of(
        st.binary(max_size=120),
        st.binary(max_size=120).map(lambda b: MAGIC + b),
        JSON.map(orjson.dumps),
        st.tuples(JSON, st.binary(max_size=40)).map(
            lambda t: MAGIC + struct.pack("<I", len(orjson.dumps(t[0]))) + orjson.dumps(t[0]) + t[1]
        ),
    )
)
def test_decode_feed_only_raises_feed_format_error(raw: bytes) -> None:
    try:
        doc = decode_feed(raw)
    except FeedFormatError:
        assert parse_feed(raw) == {}
        return
    assert isinstance(doc, dict)
    assert parse_feed(raw) == doc


@prop(100)
@given(raw=st.one_of(st.none(), st.binary(max_size=100), JSON.map(orjson.dumps)))
def test_content_summary_never_raises(raw: bytes | None) -> None:
    out = content_summary(raw, "c1")
    assert out is None or out["content_id"]


@prop(200)
@example(raw="latest.1.1\n")
@example(raw="personalised.99999.0")
@example(raw="trending.\u0661.\u0662")  # Arabic-Indic digits: \d in Python, not [0-9]
@given(raw=st.one_of(_TEXT, st.from_regex(r"(personalised|trending|latest)\.[0-9]+\.[0-9]+")))
def test_cursor_decoding_only_raises_bad_request(raw: str) -> None:
    try:
        level, off, rank = decode_cursor(raw)
    except BadRequest:
        return
    assert raw.isascii() and raw.isprintable()  # no newline, NUL or look-alike digits
    assert decode_cursor(encode_cursor(level, off, rank)) == (level, off, rank)
    assert 0 <= off <= 99_999 and 0 <= rank <= 99_999


@example(qp={"brand": "b\n"})  # safe_id used re.match with "$": a trailing newline passed
@prop(200)
@given(
    qp=st.dictionaries(
        st.sampled_from(["limit", "brand", "explain", "cursor", "x"]), _TEXT, max_size=4
    )
)
def test_feed_query_parsing_only_raises_bad_request(qp: dict[str, str]) -> None:
    try:
        limit, brand, *_ = feed_params(qp)
    except BadRequest:
        return
    assert limit >= 1
    assert brand is None or re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", brand)
