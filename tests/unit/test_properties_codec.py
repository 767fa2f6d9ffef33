"""Property-based tests (hypothesis) of Avro decoding, used by every consumer: arbitrary bytes,
and genuine records cut short or extended, are refused with SerializationError and never decode
silently (shared settings: ``properties_support``).

| entry point | allowed rejection | the stage that dead-letters it |
|---|---|---|
| ``feedpipe.wire.codec.AvroCodec.decode`` | SerializationError | every consumer |
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from properties_support import prop

from feedpipe.errors import SerializationError
from feedpipe.wire.codec import AvroCodec, registry
from feedpipe.wire.compat import minimal_record

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
