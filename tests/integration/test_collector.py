"""The event collector on a real uvicorn server (127.0.0.1, free port) and a real Kafka broker:
accepted events are read back from reader.events (key user_id), refused ones from
reader.events.dlq. Topics may already hold records, so each test reads only the offsets after
the high watermarks taken before its requests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from collector_support import ORIGIN, Keys, make_keys, serve
from pipeline import consume_all, high_watermarks

from connectors.collector.events import MAX_BODY_BYTES, MAX_EVENTS
from feedpipe.ids import event_id
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration

TOPIC = "reader.events"
DLQ = "reader.events.dlq"
DEAD_PORT = 42999  # nothing listens there: a broker that never answers


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("collector-keys") / "api-keys.json")


@pytest.fixture(scope="module")
def base_url(producer: IdempotentProducer, keys: Keys) -> Iterator[str]:
    with serve(producer, keys.path) as srv:
        yield f"http://127.0.0.1:{srv.port}"


def read_after(bootstrap: str, topic: str, start: dict[int, int]) -> list[tuple[bytes, Any]]:
    """(key, decoded value) of every record of ``topic`` after ``start``, in partition order."""
    decode = codec("DeadLetter" if topic.endswith(".dlq") else "ReaderEvent").decode
    msgs = consume_all(bootstrap, topic, start)
    return [(m.key() or b"", decode(m.value() or b"")) for m in msgs]


def now_ms() -> int:
    return int(time.time() * 1000)


def test_batch_accepts_valid_events_and_dead_letters_the_rest(
    base_url: str, keys: Keys, kafka_bootstrap: str
) -> None:
    user = f"U-{uuid.uuid4().hex[:8]}"
    t = now_ms()
    events: list[Any] = [
        {"type": "impression", "user_id": user, "content_id": "c1", "occurred_at": t,
         "impression_id": "imp-1", "position": 0},
        {"type": "click", "user_id": user, "content_id": "c1",
         "occurred_at": "2026-01-02T03:04:05.678Z", "impression_id": "imp-1", "position": 0,
         "event_id": "client-id-1"},
        {"type": "dwell", "user_id": user, "content_id": "c1", "occurred_at": t, "dwell_ms": 4200},
        {"type": "erase", "user_id": user, "occurred_at": t},
        {"type": "like", "user_id": user, "content_id": "c1", "occurred_at": t},
        {"type": "click", "user_id": "bad:user", "content_id": "c1", "occurred_at": t},
        {"type": "click", "user_id": user, "content_id": "c1", "occurred_at": t // 1000},
        {"type": "click", "user_id": user, "content_id": "c1", "occurred_at": t, "extra": 1},
        {"type": "dwell", "user_id": user, "content_id": "c1", "occurred_at": t},
        "not an object",
    ]  # fmt: skip
    start, dlq_start = (
        high_watermarks(kafka_bootstrap, TOPIC),
        high_watermarks(kafka_bootstrap, DLQ),
    )
    r = httpx.post(
        f"{base_url}/v1/events", json={"events": events}, headers={"X-API-Key": keys.writer}
    )
    assert r.status_code == 202, r.text
    doc = r.json()
    assert (doc["accepted"], doc["rejected"]) == (4, 6)
    codes = {e["index"]: e["code"] for e in doc["errors"]}
    assert codes == {
        4: "invalid_type", 5: "invalid_user_id", 6: "invalid_occurred_at", 7: "unknown_field",
        8: "invalid_dwell_ms", 9: "not_an_object",
    }  # fmt: skip
    derived = event_id("collector", "impression", user, "c1", t, "imp-1", 0)
    assert doc["event_ids"][0] == derived
    assert doc["event_ids"][1] == "client-id-1"

    got = read_after(kafka_bootstrap, TOPIC, start)
    mine = [(k, v) for k, v in got if v["user_id"] == user]
    assert [v["type"] for _, v in mine] == ["impression", "click", "dwell", "erase"]  # one key
    assert all(k == user.encode() for k, _ in mine)
    by_type = {v["type"]: v for _, v in mine}
    assert by_type["impression"]["event_id"] == derived
    assert by_type["impression"]["origin"] == "live"
    assert int(by_type["impression"]["occurred_at"].timestamp() * 1000) == t
    click = by_type["click"]
    assert click["occurred_at"].isoformat() == "2026-01-02T03:04:05.678000+00:00"
    assert (click["impression_id"], click["position"]) == ("imp-1", 0)
    assert by_type["dwell"]["dwell_ms"] == 4200
    assert by_type["erase"]["content_id"] == ""

    dead = read_after(kafka_bootstrap, DLQ, dlq_start)
    mine_dead = [v for _, v in dead if v["stage"] == "collector" and user.encode() in v["value"]]
    assert sorted(v["error_type"] for v in mine_dead) == sorted(
        ["invalid_type", "invalid_occurred_at", "unknown_field", "invalid_dwell_ms"]
    )
    assert all(v["source_topic"] == TOPIC and v["reason"] for v in mine_dead)
    assert any(
        v["error_type"] == "not_an_object" and v["value"] == b'"not an object"' for _, v in dead
    )

    # the same event sent again gets the same id: the click path counts it once
    again = httpx.post(f"{base_url}/v1/events", json={"events": events[:1]},
                       headers={"Authorization": f"Bearer {keys.writer}"})  # fmt: skip
    assert again.status_code == 202 and again.json()["event_ids"] == [derived]


def test_keys_scopes_and_rate_limits(base_url: str, keys: Keys) -> None:
    body = {"events": [{"type": "impression", "user_id": "U1", "content_id": "c",
                        "occurred_at": now_ms()}]}  # fmt: skip
    url = f"{base_url}/v1/events"
    r = httpx.post(url, json=body)
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.post(url, json=body, headers={"X-API-Key": "fpk_nope"}).status_code == 401
    r = httpx.post(url, json=body, headers={"X-API-Key": keys.reader})
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    statuses = [httpx.post(url, json=body, headers={"X-API-Key": keys.slow}) for _ in range(3)]
    assert [s.status_code for s in statuses] == [202, 202, 429]
    assert int(statuses[2].headers["retry-after"]) >= 1
    assert httpx.get(url).status_code == 405


def test_beacon_body_carries_its_key(base_url: str, keys: Keys, kafka_bootstrap: str) -> None:
    user = f"U-{uuid.uuid4().hex[:8]}"
    event = {"type": "click", "user_id": user, "content_id": "c9", "occurred_at": now_ms()}
    start = high_watermarks(kafka_bootstrap, TOPIC)
    beacon = orjson.dumps({"events": [event], "api_key": keys.writer})
    headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN}
    r = httpx.post(f"{base_url}/v1/events", content=beacon, headers=headers)
    assert r.status_code == 202, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert [v["user_id"] for _, v in read_after(kafka_bootstrap, TOPIC, start)].count(user) == 1
    no_key = orjson.dumps({"events": [event]})
    assert httpx.post(f"{base_url}/v1/events", content=no_key, headers=headers).status_code == 401
    # a JSON body never reads a key from the body
    r = httpx.post(f"{base_url}/v1/events", content=beacon,
                   headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 401


def test_body_limits_and_cors(base_url: str, keys: Keys) -> None:
    url, h = f"{base_url}/v1/events", {"X-API-Key": keys.writer}
    ev = {"type": "impression", "user_id": "U1", "content_id": "c", "occurred_at": now_ms()}
    cases = [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"[]", "application/json", 400, "invalid_body"),
        (b'{"events": []}', "application/json", 400, "empty_batch"),
        (orjson.dumps({"events": [ev] * (MAX_EVENTS + 1)}), "application/json", 400,
         "too_many_events"),
        (b"x" * (MAX_BODY_BYTES + 1), "application/json", 413, "body_too_large"),
        (orjson.dumps({"events": [ev]}), "application/xml", 415, "unsupported_media_type"),
    ]  # fmt: skip
    for body, ctype, status, code in cases:
        r = httpx.post(url, content=body, headers={**h, "Content-Type": ctype})
        assert (r.status_code, r.json()["error"]) == (status, code), (code, r.text[:200])
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "x-api-key,content-type"}  # fmt: skip
    r = httpx.options(url, headers=pre)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in r.headers["access-control-allow-headers"].lower()
    r = httpx.options(url, headers={**pre, "Origin": "http://elsewhere.example"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers


def test_metrics_count_accepted_rejected_and_produce_latency(base_url: str, keys: Keys) -> None:
    t = now_ms()
    ev = {"type": "click", "user_id": "U7", "content_id": "c", "occurred_at": t}
    body = {"events": [ev, {**ev, "occurred_at": t + 10**10}]}
    assert httpx.post(f"{base_url}/v1/events", json=body,
                      headers={"X-API-Key": keys.writer}).status_code == 202  # fmt: skip
    text = httpx.get(f"{base_url}/metrics").text
    assert 'feedpipe_collector_events_accepted_total{type="click"}' in text
    assert 'feedpipe_collector_events_rejected_total{reason="future_event"}' in text
    assert 'feedpipe_collector_requests_rejected_total{reason="unauthorized"}' in text
    count = [
        ln for ln in text.splitlines() if ln.startswith("feedpipe_collector_produce_seconds_count")
    ]
    assert count and float(count[0].split()[-1]) >= 1
    assert httpx.get(f"{base_url}/healthz").json()["accepted"] >= 1


def test_unreachable_kafka_answers_503(keys: Keys) -> None:
    dead = IdempotentProducer(f"127.0.0.1:{DEAD_PORT}", client_id="test-collector-dead",
                              config={"message.timeout.ms": 3000})  # fmt: skip
    with serve(dead, keys.path, ack_timeout_s=1.0) as srv:
        body = {"events": [{"type": "click", "user_id": "U1", "content_id": "c",
                            "occurred_at": now_ms()}]}  # fmt: skip
        r = httpx.post(f"http://127.0.0.1:{srv.port}/v1/events", json=body,
                       headers={"X-API-Key": keys.writer}, timeout=20)  # fmt: skip
        assert (r.status_code, r.json()["error"]) == (503, "kafka_unavailable")
        assert r.headers["retry-after"] == "1"
    dead.wait(5)  # message.timeout.ms expires the queued record; nothing is left behind
