"""Property-based tests (hypothesis) of the streams layer: each entry point returns a value or
raises its documented rejection, which the stage dead-letters (shared settings, strategies and
checks: ``properties_support``).

| entry point | allowed rejection | the stage that dead-letters it |
|---|---|---|
| ``streams.normalisers.normalise`` (+ splitters, per kind) | RejectedInput | normalise |
| ``streams.stages.normalise.process`` (decode, normalise, encode) | none (Outcome) | normalise |
| ``streams.stages.enrich.enrich_batch`` (decode + enrich) | none ((code, reason)) | enrich |
| ``streams.clickpath.records.decode`` (record decode) | none (DLQ list) | click path |
| ``streams.clickpath.records.reader_event`` (any decodable ReaderEvent) | none | click path |
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from hypothesis import example, given
from hypothesis import strategies as st
from properties_support import (
    _TEXT,
    JSON,
    JSONAPI_DOC,
    WP_POST,
    normalise_or_reject,
    prop,
    raw_event,
)

from feedpipe.cms.drupal import split_collection
from feedpipe.cms.wordpress import split_posts
from feedpipe.errors import RejectedInput
from feedpipe.store.keys import safe_id
from feedpipe.wire.codec import codec
from streams.clickpath.records import Record, RecordLike, reader_event
from streams.clickpath.records import decode as _decode
from streams.normalisers import KINDS
from streams.normalisers.drupal import normalise_node
from streams.normalisers.wordpress import normalise_post
from streams.stages.normalise import process

_FEED_PREFIXES = st.sampled_from(
    [
        b"",
        b'<?xml version="1.0"?><rss version="2.0"><channel><item><title>',
        b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><entry>',
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><item><title>',
        b'{"version": "https://jsonfeed.org/version/1.1", "items": [',
    ]
)


# -- normalisers --------------------------------------------------------------------------------
@prop(150)
@given(
    kind=st.sampled_from((*KINDS, "bogus")),
    op=st.sampled_from(["upsert", "delete", "x"]),
    payload=st.binary(max_size=300),
)
def test_normalise_arbitrary_bytes_only_rejects(kind: str, op: str, payload: bytes) -> None:
    normalise_or_reject(raw_event(kind, payload, op, source_id="1"))


@prop(150)
@given(kind=st.sampled_from(KINDS), doc=JSON)
def test_normalise_arbitrary_json_only_rejects(kind: str, doc: Any) -> None:
    normalise_or_reject(raw_event(kind, orjson.dumps(doc)))


@prop(200)
@example(post={"id": 1, "title": "t", "date_gmt": 10**15}, op="upsert")  # was OSError
@example(post={"id": 1, "title": "t", "modified_gmt": 2**62}, op="upsert")  # was OverflowError
@given(post=WP_POST, op=st.sampled_from(["upsert", "delete"]))
def test_wordpress_post_shaped_json_only_rejects(post: dict[str, Any], op: str) -> None:
    normalise_or_reject(raw_event("wordpress.post", orjson.dumps(post), op))
    with contextlib.suppress(RejectedInput):
        normalise_post(post, op == "delete")


@prop(200)
@example(doc={"data": [{"type": "node--article"}], "included": 1}, op="upsert")
@given(doc=JSONAPI_DOC, op=st.sampled_from(["upsert", "delete"]))
def test_drupal_jsonapi_shaped_json_only_rejects(doc: dict[str, Any], op: str) -> None:
    normalise_or_reject(raw_event("drupal.node", orjson.dumps(doc), op))
    try:
        for node in split_collection(doc):
            normalise_node(node, op == "delete")
    except RejectedInput:
        pass


@prop(100)
@given(doc=JSON)
def test_splitters_only_reject(doc: Any) -> None:
    for split in (split_posts, split_collection):
        try:
            parts = split(doc)
        except RejectedInput:
            continue
        assert isinstance(parts, list)


@prop(150)
@given(
    prefix=_FEED_PREFIXES,
    tail=st.binary(max_size=300),
    ctype=st.sampled_from(["application/xml", "application/feed+json", "text/html", ""]),
)
def test_feed_documents_only_reject(prefix: bytes, tail: bytes, ctype: str) -> None:
    normalise_or_reject(raw_event("feed.document", prefix + tail, content_type=ctype))


@prop(150)
@given(
    cols=st.lists(
        st.one_of(_TEXT, st.just("N1"), st.just('[{"Label": "x"}]')), min_size=0, max_size=9
    )
)
def test_mind_rows_only_reject(cols: list[str]) -> None:
    normalise_or_reject(raw_event("mind.news", "\t".join(cols).encode("utf-8", "surrogatepass")))


@prop(150)
@given(
    value=st.one_of(st.none(), st.binary(max_size=200)),
    kind=st.sampled_from(KINDS),
    payload=st.binary(max_size=200),
)
def test_normalise_stage_never_raises(value: bytes | None, kind: str, payload: bytes) -> None:
    # arbitrary record bytes, and well-framed RawCmsEvents with arbitrary payloads
    for v in (value, codec("RawCmsEvent").encode(raw_event(kind, payload))):
        out = process(v)
        assert (out.rejected is None) or (out.rejected[0] and out.rejected[1])


@prop(40)
@given(value=st.one_of(st.none(), st.binary(max_size=200)))
def test_enrich_stage_decode_never_raises(value: bytes | None) -> None:
    from streams.stages.enrich import enrich_batch

    [res] = enrich_batch([value])
    assert isinstance(res, dict) or (isinstance(res, tuple) and res[0] and res[1])


# -- click path ---------------------------------------------------------------------------------
_EVENT = st.fixed_dictionaries(
    {
        "event_id": _TEXT,
        "type": st.one_of(st.sampled_from(["click", "impression", "resolve", "erase"]), _TEXT),
        "user_id": st.one_of(_TEXT, st.just("U1")),
        "content_id": st.one_of(_TEXT, st.just("c" * 64)),
        "source_item_id": st.none() | _TEXT,
        "occurred_at": st.datetimes(
            min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)
        ).map(lambda d: d.replace(tzinfo=UTC, microsecond=0)),
        "impression_id": st.none() | _TEXT,
        "position": st.none() | st.integers(-(2**31), 2**31 - 1),
        "dwell_ms": st.none() | st.integers(-(2**63), 2**63 - 1),
        "origin": st.one_of(st.sampled_from(["live", "history"]), _TEXT),
    }
)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@prop(200)
@given(
    values=st.lists(
        st.one_of(
            st.none(),
            st.binary(max_size=80),
            _EVENT.filter(
                lambda e: all(_encodable(v) for v in e.values() if isinstance(v, str))
            ).map(codec("ReaderEvent").encode),
        ),
        max_size=6,
    )
)
def test_click_path_decode_splits_into_good_and_dead_letters(values: list[bytes | None]) -> None:
    records = [Record("reader.events", 0, i, b"U1", v) for i, v in enumerate(values)]
    good, bad = _decode(cast("list[RecordLike]", records))
    assert sorted([o for o, _ in good] + [o for o, _, _ in bad]) == list(range(len(values)))
    for _, rec in good:  # what passed is safe to use in a Redis key and to convert
        safe_id(rec["user_id"])
        ev = reader_event(rec)
        assert isinstance(ev.at, int)
    for _, _, dlq in bad:
        letter = codec("DeadLetter").decode(dlq)
        assert letter["reason"] and letter["error_type"]
