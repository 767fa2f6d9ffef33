"""Property-based tests (hypothesis): every normaliser and decoder, fed arbitrary bytes or
arbitrary JSON, returns a value or raises the project's documented rejection error, which the
stage turns into a DLQ record with a reason. Nothing else may escape (a crash of a worker).

| entry point | allowed rejection | the stage that dead-letters it |
|---|---|---|
| ``streams.normalisers.normalise`` (+ splitters, per kind) | RejectedInput | normalise |
| ``streams.stages.normalise.process`` (decode, normalise, encode) | none (Outcome) | normalise |
| ``streams.stages.enrich.enrich_batch`` (decode + enrich) | none ((code, reason)) | enrich |
| ``connectors.cdc.wp_posts.cdc_to_raw_event`` (Debezium messages) | RejectedInput | cdc |
| ``connectors.webhook.bodies.body_events`` (webhook bodies) | RejectedInput | webhook (HTTP 4xx) |
| ``connectors.wordpress.post_event`` | none | WordPress poller |
| ``connectors.files`` readers (WordPress, Drupal, MIND behaviours) | none (Malformed) | replay |
| ``feedpipe.wire.codec.AvroCodec.decode`` | SerializationError | every consumer |
| ``streams.clickpath.records.decode`` (record decode) | none (DLQ list) | click path |
| ``streams.clickpath.records.reader_event`` (any decodable ReaderEvent) | none | click path |
| ``feedpipe.store.feeds.decode_feed`` | FeedFormatError | read endpoint, feeds |
| ``readapi.store.parse_feed`` / ``content_summary`` | none ({} / None) | read endpoint |
| ``readapi.params.decode_cursor`` / ``feed_params`` | BadRequest (HTTP 400) | read endpoint |

Runs are deterministic (``derandomize=True``: the same examples on every run, as CI needs).
``FEEDPIPE_FUZZ_EXPLORE=N`` (tests only) switches to random exploration with N times the examples,
to look for new failures locally; any failure found is then pinned below with ``@example``.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors.cdc.debezium import Skip
from connectors.cdc.wp_posts import cdc_to_raw_event
from connectors.files.cms import drupal_events, wordpress_events
from connectors.files.mind import mind_behavior_events
from connectors.records import Malformed
from connectors.webhook.bodies import body_events
from connectors.wordpress import post_event
from feedpipe.cms.drupal import split_collection
from feedpipe.cms.wordpress import split_posts
from feedpipe.errors import RejectedInput, SerializationError
from feedpipe.ids import event_id
from feedpipe.store.feeds import MAGIC, FeedFormatError, decode_feed
from feedpipe.store.keys import safe_id
from feedpipe.topology import topology
from feedpipe.wire.codec import AvroCodec, codec, registry
from feedpipe.wire.compat import minimal_record
from readapi.params import BadRequest, decode_cursor, encode_cursor, feed_params
from readapi.store import content_summary, parse_feed
from streams.clickpath.records import Record, RecordLike, reader_event
from streams.clickpath.records import decode as _decode
from streams.normalisers import KINDS, normalise
from streams.normalisers.drupal import normalise_node
from streams.normalisers.wordpress import normalise_post
from streams.stages.normalise import process

TOPO = topology()
_EXPLORE = int(os.environ.get("FEEDPIPE_FUZZ_EXPLORE", "0") or 0)

F = TypeVar("F", bound=Callable[..., Any])


def prop(n: int) -> Callable[[F], F]:
    """hypothesis settings of this file: ``n`` examples, no deadline, derandomized (or
    ``n * FEEDPIPE_FUZZ_EXPLORE`` random examples when exploring)."""
    return settings(
        max_examples=n * _EXPLORE if _EXPLORE else n,
        deadline=None,
        derandomize=not _EXPLORE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- strategies ---------------------------------------------------------------------------------
_HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "*",
        ":",
        "{",
        "}",
        "\n",
        "\r\n",
        "\x00",
        "..",
        "é",
        "\U0001f600",
        "\ud7ff",
        "1e999",
        "-0",
        "NaN",
        "null",
        "true",
        "<",
        "&amp;",
        "\ufeff",
        "0" * 300,
    ]
)
_TEXT = st.one_of(st.text(max_size=40), _HOSTILE_TEXT)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=5),
    max_leaves=25,
)
"""Arbitrary JSON values (orjson-serialisable: 64-bit ints, finite floats)."""


def _obj(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with the named members (each present or not, any JSON or a typical value)
    plus arbitrary extra members: reaches deeper into a normaliser than fully random JSON."""
    return st.fixed_dictionaries(
        {}, optional={k: st.one_of(v, JSON) for k, v in fields.items()}
    ).flatmap(lambda d: st.dictionaries(_TEXT, JSON, max_size=2).map(lambda extra: {**extra, **d}))


_DATE = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()), st.sampled_from(["2024-13-45T99:00", "0000"])
)
_RENDERED = st.one_of(_TEXT, st.fixed_dictionaries({"rendered": _TEXT}))
WP_POST = _obj(
    {
        "id": st.one_of(st.integers(-(2**63), 2**63 - 1), _TEXT),
        "title": _RENDERED,
        "content": _RENDERED,
        "excerpt": _RENDERED,
        "link": _TEXT,
        "status": st.sampled_from(["publish", "draft", "trash", "private", "x"]),
        "date_gmt": _DATE,
        "modified_gmt": _DATE,
        "lang": _TEXT,
        "deleted": st.booleans(),
        "_embedded": _obj(
            {
                "author": st.lists(_obj({"name": _TEXT}), max_size=2),
                "wp:term": st.lists(st.lists(_obj({"name": _TEXT, "taxonomy": _TEXT}))),
                "wp:featuredmedia": st.lists(
                    _obj({"source_url": _TEXT, "media_type": _TEXT, "mime_type": _TEXT})
                ),
            }
        ),
    }
)
DRUPAL_NODE = _obj(
    {
        "type": st.sampled_from(["node--article", "node--page", "taxonomy_term--tags"]),
        "id": _TEXT,
        "attributes": _obj(
            {
                "title": _TEXT,
                "status": st.booleans(),
                "created": _DATE,
                "changed": _DATE,
                "langcode": _TEXT,
                "body": _obj({"value": _TEXT, "processed": _TEXT, "summary": _TEXT}),
                "path": _obj({"alias": _TEXT}),
            }
        ),
        "relationships": _obj(
            {
                "field_tags": _obj({"data": st.lists(_obj({"type": _TEXT, "id": _TEXT}))}),
                "uid": _obj({"data": _obj({"type": _TEXT, "id": _TEXT})}),
            }
        ),
        "links": _obj({"self": _obj({"href": _TEXT})}),
    }
)
JSONAPI_DOC = _obj(
    {
        "data": st.one_of(DRUPAL_NODE, st.lists(DRUPAL_NODE, max_size=3)),
        "included": st.lists(DRUPAL_NODE, max_size=3),
        "errors": st.lists(_obj({"detail": _TEXT, "title": _TEXT})),
    }
)
_FEED_PREFIXES = st.sampled_from(
    [
        b"",
        b'<?xml version="1.0"?><rss version="2.0"><channel><item><title>',
        b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><entry>',
        b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><item><title>',
        b'{"version": "https://jsonfeed.org/version/1.1", "items": [',
    ]
)


def raw_event(
    kind: str,
    payload: bytes,
    op: str = "upsert",
    source_id: str | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """A decoded RawCmsEvent as a connector builds it."""
    return {
        "event_id": event_id("fuzz", source_id or "o", len(payload)),
        "kind": kind,
        "op": op,
        "source": "fuzz",
        "brand": "fuzz",
        "source_id": source_id,
        "content_type": content_type,
        "payload": payload,
        "origin": "fuzz",
        "emitted_at": datetime(2024, 1, 1, tzinfo=UTC),
    }


def normalise_or_reject(raw: dict[str, Any]) -> None:
    """``normalise`` returns encodable Content records or raises RejectedInput."""
    try:
        records = normalise(raw, TOPO)
    except RejectedInput as exc:
        assert exc.code and exc.reason
        return
    for rec in records:
        codec("Content").encode(rec)  # a SerializationError here is a normaliser bug


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


# -- connectors -------------------------------------------------------------------------------
_ROW = _obj(
    {
        "ID": st.one_of(st.integers(-(2**63), 2**63 - 1), _TEXT),
        "post_type": st.sampled_from(["post", "page"]),
        "post_status": st.sampled_from(["publish", "draft", "trash"]),
        "post_title": _TEXT,
        "post_content": _TEXT,
        "post_date_gmt": st.one_of(st.integers(-(2**63), 2**63 - 1), _DATE),
        "post_modified_gmt": st.one_of(st.integers(-(2**63), 2**63 - 1), _DATE),
        "post_name": _TEXT,
        "post_author": st.integers(-(2**63), 2**63 - 1),
    }
)
DEBEZIUM = st.one_of(
    _obj(  # the standard envelope, with or without the schema/payload wrapper
        {
            "op": st.sampled_from(["c", "u", "d", "r", "t", "m", "x"]),
            "before": st.one_of(st.none(), _ROW),
            "after": st.one_of(st.none(), _ROW),
            "source": _obj({"table": _TEXT, "db": _TEXT}),
        }
    ).flatmap(lambda env: st.sampled_from([env, {"schema": {}, "payload": env}])),
    _ROW.flatmap(  # the ExtractNewRecordState (unwrapped) form
        lambda row: st.sampled_from(["c", "u", "d", 1, None]).map(lambda op: {**row, "__op": op})
    ),
)


@prop(200)
@example(message=b"")
@example(message=b"null")
@example(message=b'{"op": "c", "after": {"ID": 1, "post_type": [], "post_status": "publish"}}')
@given(
    message=st.one_of(st.binary(max_size=200), JSON.map(orjson.dumps), DEBEZIUM.map(orjson.dumps))
)
def test_cdc_envelopes_only_reject(message: bytes) -> None:
    try:
        out = cdc_to_raw_event(message, "wp", "brand")
    except RejectedInput as exc:
        assert exc.code and exc.reason
        return
    if isinstance(out, Skip):
        return
    _, event = out
    codec("RawCmsEvent").encode(event)
    normalise_or_reject(event)  # and the normaliser downstream takes it or rejects it


@prop(200)
@given(
    kind=st.sampled_from(["wordpress.post", "drupal.node"]),
    body=st.one_of(
        st.binary(max_size=200),
        JSON.map(orjson.dumps),
        WP_POST.map(orjson.dumps),
        JSONAPI_DOC.map(orjson.dumps),
        st.lists(WP_POST, max_size=3).map(orjson.dumps),
    ),
)
def test_webhook_bodies_only_reject(kind: str, body: bytes) -> None:
    try:
        events = body_events(kind, body, "hook", "brand", "webhook:test")
    except RejectedInput as exc:
        assert exc.code and exc.reason
        return
    for event in events:
        assert event.key.startswith("hook:")
        codec("RawCmsEvent").encode(event.record)


@prop(100)
@given(post=st.one_of(JSON, WP_POST))
def test_wordpress_poller_item_never_raises(post: Any) -> None:
    keyed = post_event(post, "wp", "brand", "https://example.org/wp-json", "page1#0")
    codec("RawCmsEvent").encode(keyed.record)
    normalise_or_reject(keyed.record)


@prop(60)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        JSON.map(orjson.dumps),
        st.lists(WP_POST, max_size=3).map(orjson.dumps),
        JSONAPI_DOC.map(orjson.dumps),
    )
)
def test_replay_cms_files_never_raise(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("replay") / "doc.json"
    path.write_bytes(data)
    for reader in (wordpress_events, drupal_events):
        for keyed in reader(path, "src", "brand"):
            codec("RawCmsEvent").encode(keyed.record)
            normalise_or_reject(keyed.record)


_MIND_LINE = st.lists(
    st.one_of(
        _TEXT, st.sampled_from(["U1", "11/12/2019 2:14:46 PM", "N1 N2", "N1-1 N2-0", "N3-2"])
    ),
    max_size=6,
).map(lambda cols: "\t".join(cols).encode("utf-8", "surrogatepass"))


@prop(60)
@given(lines=st.lists(st.one_of(_MIND_LINE, st.binary(max_size=60)), max_size=5))
def test_mind_behaviours_rows_are_events_or_malformed(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]
) -> None:
    path = tmp_path_factory.mktemp("mind") / "behaviors.tsv"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
    for item in mind_behavior_events(path):
        if isinstance(item, Malformed):
            assert item.code and item.reason
        else:
            codec("ReaderEvent").encode(item.record)


# -- decoders -----------------------------------------------------------------------------------
_SUBJECTS = sorted(registry().by_subject)


@prop(200)
@example(subject="feedpipe.ReaderEvent", data=b"\x00\x00\x00\x00\x04" + b"\xff" * 12)
@example(subject="feedpipe.Content", data=b"\x00\x00\x00\x00\x02\x80\x80\x80\x80\x80\x80\x80")
@given(
    subject=st.sampled_from(_SUBJECTS),
    data=st.one_of(
        st.binary(max_size=120),
        st.tuples(st.integers(0, 9), st.binary(max_size=120)).map(
            lambda t: struct.pack(">bI", 0, t[0]) + t[1]
        ),
    ),
)
def test_avro_decode_only_raises_serialization_error(subject: str, data: bytes) -> None:
    try:
        rec = AvroCodec(subject).decode(data)
    except SerializationError:
        return
    assert isinstance(rec, dict)


@prop(60)
@given(subject=st.sampled_from(_SUBJECTS), data=st.data())
def test_avro_decode_of_a_truncated_or_extended_record_is_refused(
    subject: str, data: st.DataObject
) -> None:
    # a genuine record of each type, cut short or with bytes appended, never decodes silently
    good = _sample_record(subject)
    c = AvroCodec(subject)
    enc = c.encode(good)
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(SerializationError):
        c.decode(enc[:cut])
    with pytest.raises(SerializationError):
        c.decode(enc + data.draw(st.binary(min_size=1, max_size=8)))


def _sample_record(subject: str) -> dict[str, Any]:
    """A minimal valid record of ``subject``, built from the parsed schema so that new schema
    fields are covered without editing this test."""
    reg = registry()
    named = {e.subject: e.parsed for e in reg.by_id.values()}
    return minimal_record(reg.subject(subject).parsed, named)


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
