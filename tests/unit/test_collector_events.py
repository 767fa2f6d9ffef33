"""The collector's body and event rules (connectors/collector/events.py), pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from connectors.collector.events import MAX_EVENTS, check_event, parse_body
from connectors.collector.openapi import openapi_document
from connectors.reader_encoder import ReaderEventEncoder
from feedpipe.errors import RejectedInput
from feedpipe.wire.codec import codec

NOW = 1_764_892_800_000  # 2025-12-05T00:00:00Z


def ev(**kw: Any) -> dict[str, Any]:
    return {"type": "click", "user_id": "U1", "content_id": "c1", "occurred_at": NOW, **kw}


def code_of(event: Any) -> str:
    parsed = parse_body(orjson.dumps({"events": [event]}), NOW, beacon=False)
    assert not parsed.records
    return parsed.rejects[0].code


def test_valid_events_become_reader_event_records_the_codec_accepts() -> None:
    enc = ReaderEventEncoder()
    dec = codec("ReaderEvent").decode
    for event in (
        ev(),
        ev(type="impression", impression_id="imp-1", position=4),
        ev(type="dwell", dwell_ms=1234),
        {"type": "erase", "user_id": "U1", "occurred_at": NOW},
        ev(occurred_at="2025-12-05T01:00:00+01:00", event_id="e-1"),
    ):
        rec = check_event(event, NOW)
        back = dec(enc.encode(rec))
        assert back["type"] == event["type"] and back["user_id"] == "U1"
        assert back["occurred_at"] == datetime(2025, 12, 5, tzinfo=UTC)
        assert back["origin"] == "live" and back["source_item_id"] is None


def test_event_id_is_derived_deterministically() -> None:
    a, b = check_event(ev(), NOW), check_event(ev(), NOW)
    assert a["event_id"] == b["event_id"] and len(a["event_id"]) == 64
    assert check_event(ev(position=1), NOW)["event_id"] != a["event_id"]
    assert check_event(ev(event_id="mine"), NOW)["event_id"] == "mine"


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ([1], "not_an_object"),
        (ev(type="resolve"), "invalid_type"),
        (ev(type=None), "invalid_type"),
        (ev(user_id=""), "invalid_user_id"),
        (ev(user_id="a" * 129), "invalid_user_id"),
        (ev(user_id="U1\n"), "invalid_user_id"),
        (ev(content_id=None), "invalid_content_id"),
        ({"type": "erase", "user_id": "U1", "content_id": "c1", "occurred_at": NOW},
         "invalid_content_id"),
        (ev(occurred_at=True), "invalid_occurred_at"),
        (ev(occurred_at=NOW / 1000), "invalid_occurred_at"),
        (ev(occurred_at=NOW // 1000), "invalid_occurred_at"),
        (ev(occurred_at="2025-12-05T00:00:00"), "invalid_occurred_at"),
        (ev(occurred_at="yesterday"), "invalid_occurred_at"),
        (ev(occurred_at=NOW + 3_600_001), "future_event"),
        (ev(position=-1), "invalid_position"),
        (ev(position=2**31), "invalid_position"),
        (ev(dwell_ms="5"), "invalid_dwell_ms"),
        (ev(type="dwell"), "invalid_dwell_ms"),
        (ev(impression_id="has space"), "invalid_impression_id"),
        (ev(event_id=""), "invalid_event_id"),
        (ev(brand="mind"), "unknown_field"),
    ],
)  # fmt: skip
def test_each_rule_has_its_code(event: Any, code: str) -> None:
    assert code_of(event) == code


def test_body_rules() -> None:
    ok = orjson.dumps({"events": [ev()], "api_key": "fpk_x"})
    assert parse_body(ok, NOW, beacon=True).api_key == "fpk_x"
    assert parse_body(ok, NOW, beacon=False).api_key is None
    for body, code in (
        (b"{", "invalid_json"),
        (b'{"events": {}}', "invalid_body"),
        (b'{"events": [], "x": 1}', "invalid_body"),
        (b'{"events": []}', "empty_batch"),
        (orjson.dumps({"events": [ev()] * (MAX_EVENTS + 1)}), "too_many_events"),
    ):
        with pytest.raises(RejectedInput) as exc:
            parse_body(body, NOW, beacon=False)
        assert exc.value.code == code


def test_openapi_document_names_the_limits() -> None:
    doc = openapi_document()
    post = doc["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "403", "413", "415", "429", "503"}
    batch = doc["components"]["schemas"]["EventBatch"]
    assert batch["properties"]["events"]["maxItems"] == MAX_EVENTS
    assert doc["components"]["schemas"]["ReaderEvent"]["properties"]["type"]["enum"] == [
        "impression", "click", "dwell", "erase",
    ]  # fmt: skip


def test_one_future_settles_a_whole_batch_of_delivery_reports() -> None:
    import asyncio

    from feedpipe.kafka.producer import DeliveryError, DeliverySettler

    class Msg:
        def __init__(self, offset: int) -> None:
            self._offset = offset

        def topic(self) -> str:
            return "t"

        def partition(self) -> int:
            return 1

        def offset(self) -> int:
            return self._offset

    class Err:
        def str(self) -> str:
            return "broker said no"

    class NoPoll:
        def poll(self, timeout: float = 0.0, /) -> int:
            return 0

    async def run() -> None:
        settler = DeliverySettler(NoPoll())
        settler.loop = asyncio.get_running_loop()
        ok = settler.loop.create_future()
        cb = settler.batch_callback(ok, 3)
        cb(None, Msg(7))  # type: ignore[arg-type]
        cb(None, Msg(8))  # type: ignore[arg-type]
        settler.drain()
        assert not ok.done()  # 2 of 3 acknowledged
        cb(None, Msg(9))  # type: ignore[arg-type]
        settler.drain()
        assert ok.result() == (1, 9)
        bad = settler.loop.create_future()
        cb = settler.batch_callback(bad, 2)
        cb(Err(), Msg(1))  # type: ignore[arg-type]
        cb(None, Msg(2))  # type: ignore[arg-type]
        settler.drain()
        with pytest.raises(DeliveryError, match="broker said no"):
            bad.result()

    asyncio.run(run())
