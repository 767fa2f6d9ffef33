"""Decoding skips fastavro's schema resolution only for the codec's own schema id, with the same
records out and every check kept (feedpipe/wire/codec.py)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import fastavro
import pytest

from feedpipe.errors import SerializationError
from feedpipe.wire.codec import codec


def test_decode_of_own_schema_id_equals_resolved_decode() -> None:
    c = codec("ReaderEvent")
    rec = {
        "event_id": "e" * 64, "type": "click", "user_id": "U1", "content_id": "c" * 64,
        "source_item_id": None, "occurred_at": datetime(2019, 11, 14, 7, 1, 2, tzinfo=UTC),
        "impression_id": "i", "position": 3, "dwell_ms": None, "origin": "live",
    }
    data = c.encode(rec)
    buf = io.BytesIO(data[5:])
    resolved = fastavro.schemaless_reader(buf, c.entry.parsed, c.entry.parsed)
    assert c.decode(data) == resolved == rec
    assert c.decode(data)["occurred_at"].tzinfo is not None
    with pytest.raises(SerializationError, match="trailing"):
        c.decode(data + b"\x00")
    with pytest.raises(SerializationError, match="invalid Avro"):
        c.decode(data[:-3])
