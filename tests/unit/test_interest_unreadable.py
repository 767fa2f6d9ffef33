"""An unreadable stored interest vector (feedpipe/model/interest.py) keeps the worker running,
is logged with the user and counted in feedpipe_interest_unreadable_total{where}
(feedpipe/monitoring/metrics.py); the wire form decodes the bytes on the topic as they are."""

from __future__ import annotations

import logging
import struct
from typing import Any

import pytest

from feedpipe.model import interest
from feedpipe.model.profile import new_profile
from feedpipe.monitoring import metrics
from feedpipe.topology import topology

T0 = 1_573_550_000_000


def _count(where: str) -> float:
    return metrics.counter_values("feedpipe_interest_unreadable").get((where,), 0.0)


def _broken(user: str) -> dict[str, object]:
    p = new_profile(user, T0, topology().profiles)
    p[interest.FIELD] = "AAAAAAA="  # base64 of 5 bytes: a scale and a partial term
    return p


@pytest.mark.parametrize("where", ["interest_of", "to_wire", "rebase"])
def test_an_unreadable_vector_is_logged_with_the_user_and_counted(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics.count_unreadable_interests()
    metrics.count_unreadable_interests()  # idempotent: still one count per vector
    p = _broken(f"u-{where}")
    before = _count(where)
    with caplog.at_level(logging.ERROR, logger="feedpipe.model.interest"):
        if where == "interest_of":
            assert interest.interest_of(p) == {}
        elif where == "to_wire":
            assert interest.to_wire(p) == b""
        else:
            interest.rebase(p, 1.0)
            assert interest.FIELD not in p
    assert _count(where) == before + 1
    lines = [r for r in caplog.records if r.name == "feedpipe.model.interest"]
    assert len(lines) == 1 and f"u-{where}" in lines[0].getMessage()
    assert getattr(lines[0], interest.UNREADABLE_ATTR) == where


def test_a_readable_or_missing_vector_is_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    metrics.count_unreadable_interests()
    p = new_profile("u-ok", T0, topology().profiles)
    before = {w: _count(w) for w in ("interest_of", "to_wire")}
    assert interest.interest_of(p) == {} and interest.to_wire(p) == b""
    interest.add_read(p, {7: 1.0, 9: 0.5}, T0)
    assert interest.to_wire(p) and interest.interest_of(p)
    assert {w: _count(w) for w in before} == before
    assert not [r for r in caplog.records if r.name == "feedpipe.model.interest"]


def test_the_wire_form_is_decoded_as_it_is_on_the_topic() -> None:
    # a record as version 2 writers put it on profiles.updated: log2(scale) = 0, then
    # term 5 at weight 255/255 and term 2**20 - 1 at weight 51/255
    raw = struct.pack("<f2I", 0.0, 5 | 255 << 24, (2**20 - 1) | 51 << 24)
    assert interest.from_wire(raw) == {5: 1.0, 2**20 - 1: pytest.approx(0.2)}
    assert interest.from_wire(bytearray(raw)) == interest.from_wire(raw)
    p = new_profile("u-wire", T0, topology().profiles)
    interest.add_read(p, {5: 1.0, 2**20 - 1: 0.2}, T0)
    assert interest.from_wire(interest.to_wire(p)) == interest.interest_of(p)


def test_the_read_endpoint_exposes_the_counter() -> None:
    from readapi.app import create_app

    app: Any = create_app("redis://127.0.0.1:1/0", require_keys=False)  # connects on start only
    p = _broken("u-api")
    before = _count("interest_of")
    interest.interest_of(p)
    names = metrics.metric_names(app.state.registry)
    assert "feedpipe_interest_unreadable_total" in names
    got = metrics.counter_values("feedpipe_interest_unreadable", app.state.registry)
    assert got[("interest_of",)] == before + 1
