"""UserProfile version 2 on profiles.updated (schemas/user_profile.v2.avsc): the click path
publishes the reader's interest vector, version 1 records stay readable and version 2 records
are readable by version 1 readers (schemas/registry.json, feedpipe.wire.compat)."""

from __future__ import annotations

import asyncio
import io
import struct
from typing import Any

import fastavro
import pytest

from feedpipe.model import interest
from feedpipe.model.profile import new_profile
from feedpipe.model.text import encode
from feedpipe.topology import topology
from feedpipe.wire.codec import codec, registry
from feedpipe.wire.compat import check_pair, working_tree
from streams.clickpath import publish

T0 = 1_573_550_000_000
V1, V2 = 5, 11


def _published(profile: dict[str, Any]) -> bytes:
    """The profiles.updated value the click path sends for ``profile``."""
    sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(topic: str, key: bytes, value: bytes | None) -> Any:
        sent.append((topic, key, value))
        return None

    asyncio.run(publish.publish_state(send, {profile["user_id"]: profile}, {}))
    ((topic, key, value),) = sent
    assert topic == topology().stages["clickpath"].output("profiles")
    assert key == profile["user_id"].encode() and value is not None
    return value


def _reader() -> dict[str, Any]:
    p = new_profile("U1", T0, topology().profiles)
    for i, text in enumerate(["Football club wins the championship final",
                              "Parliament election results announced in the capital"]):
        interest.add_read(p, encode([text], "en"), T0 + i * 60_000)
    p["clicks"] = 2
    return p


def test_profiles_updated_carries_the_interest_vector() -> None:
    p = _reader()
    want = interest.interest_of(p)
    assert len(want) >= 8  # the two titles' stemmed terms
    value = _published(p)
    assert struct.unpack_from(">bI", value) == (0, V2)  # version 2 is what is written
    got = codec("UserProfile").decode(value)
    assert interest.from_wire(got["interest"]) == want  # the same vector, to the last bit
    assert len(got["interest"]) == 4 + 4 * len(want)
    assert got["clicks"] == 2 and got["user_id"] == "U1"


def test_a_reader_without_interest_publishes_an_empty_vector() -> None:
    p = new_profile("U2", T0, topology().profiles)
    assert codec("UserProfile").decode(_published(p))["interest"] == b""
    p[interest.FIELD] = "not base64!"  # unreadable: published as none, never a crash
    assert codec("UserProfile").decode(_published(p))["interest"] == b""


def test_version_1_and_version_2_records_read_each_other() -> None:
    reg = registry()
    v1, v2 = reg.by_id[V1], reg.by_id[V2]
    assert v1.subject == v2.subject == "feedpipe.UserProfile"
    p = _reader()
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, V1))
    fastavro.schemaless_writer(buf, v1.parsed, p)  # a record already on the compacted topic
    old = codec("UserProfile").decode(buf.getvalue())
    assert not old["interest"] and old["clicks"] == 2  # the default: no vector
    assert interest.from_wire(old["interest"]) == {}
    value = _published(p)  # a version 1 reader (old code in a rolling deploy) reads version 2
    back = fastavro.schemaless_reader(io.BytesIO(value[5:]), v2.parsed, v1.parsed)
    assert isinstance(back, dict) and "interest" not in back and back["clicks"] == 2
    named = working_tree().named  # feedpipe.Read and the other shared record types
    assert check_pair("feedpipe.UserProfile", v1.parsed, v2.parsed, old_named=named,
                      new_named=named) == []


def test_a_malformed_wire_vector_raises() -> None:
    with pytest.raises(ValueError):
        interest.from_wire(b"\x00\x00\x80\x3f\x01")  # a scale and one byte of a term
