"""streams.normalisers, what every kind shares: ``html_to_text``, dispatch errors (unknown kind
or op, invalid JSON or encoding) and arbitrary payloads of every kind, which must give records
that encode or a RejectedInput (hypothesis).

Helpers: ``normalisers_support``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from normalisers_support import TOPO, make_raw, mind_raw

from feedpipe.errors import RejectedInput
from feedpipe.wire.codec import codec
from streams.normalisers import KINDS, html_to_text, normalise


def test_html_to_text_blocks_entities_scripts() -> None:
    html_in = (
        "<div><p>One &amp; two&#8217;s&nbsp;&nbsp; three</p><script>alert(1)</script>"
        "<style>p{color:red}</style><!-- note --><ul><li>a</li><li>b</li></ul>"
        '<p style="x">Last<br>line</p></div>'
    )
    assert html_to_text(html_in) == "One & two\u2019s three\n* a\n* b\nLast\nline"
    assert html_to_text("") == "" and html_to_text("<p> </p>") == ""
    assert html_to_text("a < b") == "a < b"


def test_dispatch_errors() -> None:
    raw = mind_raw(b"x")
    with pytest.raises(RejectedInput) as exc:
        normalise(raw | {"kind": "joomla.article"}, TOPO)
    assert exc.value.code == "unknown_kind"
    with pytest.raises(RejectedInput) as exc:
        normalise(raw | {"op": "truncate"}, TOPO)
    assert exc.value.code == "unknown_op"
    for payload, code in ((b"{not json", "invalid_json"), (b"\xc3\x28{}", "invalid_encoding")):
        for kind in ("wordpress.post", "drupal.node"):
            with pytest.raises(RejectedInput) as exc:
                normalise(raw | {"kind": kind, "payload": payload}, TOPO)
            assert exc.value.code == code


_PREFIXES = st.sampled_from(
    [
        b"",
        b"{",
        b'{"data": {"type": "node--article", "id": "x", "attributes": {"title": ',
        b'<?xml version="1.0"?><rss version="2.0"><channel><item><title>',
        b"<feed ",
        b"N1\tnews\t",
    ]
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), prefix=_PREFIXES, tail=st.binary(max_size=400))
def test_arbitrary_payload_only_rejects(kind: str, prefix: bytes, tail: bytes) -> None:
    raw = make_raw(
        kind, prefix + tail, source="s", brand="b", content_type="application/xml", origin="fuzz"
    )
    try:
        records = normalise(raw, TOPO)
    except RejectedInput:
        return
    for rec in records:
        codec("Content").encode(rec)
