"""Property-based tests (hypothesis) of the connectors: each entry point returns a value or
raises its documented rejection, and whatever it emits encodes and is then taken or rejected by
the normaliser (shared settings, strategies and checks: ``properties_support``).

| entry point | allowed rejection | the stage that dead-letters it |
|---|---|---|
| ``connectors.cdc.wp_posts.cdc_to_raw_event`` (Debezium messages) | RejectedInput | cdc |
| ``connectors.webhook.bodies.body_events`` (webhook bodies) | RejectedInput | webhook (HTTP 4xx) |
| ``connectors.wordpress.post_event`` | none | WordPress poller |
| ``connectors.files`` readers (WordPress, Drupal, MIND behaviours) | none (Malformed) | replay |
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from properties_support import (
    _DATE,
    _TEXT,
    JSON,
    JSONAPI_DOC,
    WP_POST,
    _obj,
    normalise_or_reject,
    prop,
)

from connectors.cdc.debezium import Skip
from connectors.cdc.wp_posts import cdc_to_raw_event
from connectors.files.cms import drupal_events, wordpress_events
from connectors.files.mind import mind_behavior_events
from connectors.records import Malformed
from connectors.webhook.bodies import body_events
from connectors.wordpress import post_event
from feedpipe.errors import RejectedInput
from feedpipe.wire.codec import codec

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
