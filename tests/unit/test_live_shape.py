"""The live-shaped load and the click path's cheaper per-event steps: the simulated reader
population, epoch-ms decoding, UserFeed version 3 and batch metrics without a per-event loop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from feedpipe.monitoring.metrics import observe_many
from feedpipe.wire.codec import AvroCodec, codec
from feedpipe.wire.user_feed import feed_items, user_feed_record
from ops.simulate import Population, Shape, collector_body

ITEMS = [f"{i:064x}" for i in range(50)]


def test_population_is_zipf_shaped_time_ordered_and_seeded() -> None:
    pop = Population(ITEMS, Shape(users=1000, seed=3))
    events = [ev for _, ev in zip(range(5000), pop.events(500.0, 1_000_000), strict=False)]
    times = [ev["occurred_at"] for ev in events]
    assert times == sorted(times)
    per_user: dict[str, int] = {}
    for ev in events:
        per_user[ev["user_id"]] = per_user.get(ev["user_id"], 0) + 1
    counts = sorted(per_user.values(), reverse=True)
    assert counts[0] > 5 * counts[len(counts) // 2]  # a heavy head: Zipf, not uniform
    clicks = sum(ev["type"] == "click" for ev in events) / len(events)
    assert 0.10 < clicks < 0.20  # ctr 0.176 per impression: ~15% of events
    assert all(ev["content_id"] in ITEMS for ev in events)
    again = Population(ITEMS, Shape(users=1000, seed=3))
    assert [ev for _, ev in zip(range(50), again.events(500.0, 1_000_000), strict=False)] == (
        events[:50]
    )


def test_population_events_encode_and_fit_the_collector_contract() -> None:
    ev = next(Population(ITEMS).events(10.0, 1_700_000_000_000))
    assert codec("ReaderEvent").decode_plain(codec("ReaderEvent").encode(ev)) == ev
    body = collector_body([ev])["events"][0]
    assert set(body) <= {"type", "user_id", "content_id", "occurred_at", "event_id",
                         "impression_id", "position", "dwell_ms"}
    assert isinstance(body["occurred_at"], int)


def test_decode_plain_gives_epoch_ms_and_decode_datetimes() -> None:
    at = datetime(2026, 12, 5, 1, 2, 3, 456000, tzinfo=UTC)
    rec = {"event_id": "e", "type": "click", "user_id": "u", "content_id": "c",
           "occurred_at": at}
    raw = codec("ReaderEvent").encode(rec)
    assert codec("ReaderEvent").decode(raw)["occurred_at"] == at
    assert codec("ReaderEvent").decode_plain(raw)["occurred_at"] == int(at.timestamp() * 1000)


def _items(ids: list[str], **served: object) -> list[dict[str, Any]]:
    weights = {"a": 0.6, "b": 0.1, "c": 0.3}
    base = {"ranker": "affinity", "weight_set": "seed", "weight_version": 1, "arm": None,
            "experiment": None, **served}
    return [
        {"content_id": c, "brand": "mind", "rank": i + 1, "score": 0.5 - i / 8,
         "affinity": 0.1 * i, "recency": 0.2, "engagement": 0.3, "sources": ["fresh"],
         "weights": weights, **base}
        for i, c in enumerate(ids)
    ]


def _round_trip(items: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    doc = {"user_id": "u", "profile_version": 2, "stats_version": 1, "generated_at": 5,
           "ranker": "affinity", "items": items}
    got = codec("UserFeed").decode_plain(codec("UserFeed").encode(user_feed_record(doc)))
    return got, feed_items(got)


def test_user_feed_v3_is_columnar_and_round_trips_the_items() -> None:
    items = _items(ITEMS[:3])
    got, back = _round_trip(items)
    assert codec("UserFeed").schema_id == 10
    assert got["items"] == [] and got["weight_sets"] == {"seed": items[0]["weights"]}
    assert got["content_digests"] == bytes.fromhex("".join(ITEMS[:3])) and not got["content_ids"]
    assert got["feature_names"] == ["affinity", "recency", "engagement"]
    assert got["brand_of"] == [] and got["served_of"] == [] and len(got["served"]) == 1
    assert back == [{k: v for k, v in it.items() if k != "sources"} for it in items]
    assert items[0]["sources"] == ["fresh"]  # the feed document itself is not changed


def test_user_feed_v3_other_ids_mixed_servings_and_features() -> None:
    ids = ["N1", "AB" * 32, "x y"]  # not 64 lowercase hex digits: ids as strings
    items = [
        *_items(ids[:2]),
        {"content_id": ids[2], "brand": "other", "rank": 3, "score": 0.1, "category": 0.7,
         "bias": 1.0, "freshness": 0.5, "weights": {"category": 1.0}, "ranker": "editorial",
         "weight_set": "ed", "weight_version": 2, "arm": "b", "experiment": "e1"},
    ]
    got, back = _round_trip(items)
    assert got["content_ids"] == ids and got["content_digests"] == b""
    assert got["brands"] == ["mind", "other"] and got["brand_of"] == [0, 0, 1]
    assert got["served_of"] == [0, 0, 1]
    assert got["weight_sets"] == {"seed": items[0]["weights"], "ed": {"category": 1.0}}
    assert [it["content_id"] for it in back] == ids
    assert back[2]["ranker"] == "editorial" and back[2]["arm"] == "b"
    assert back[2]["freshness"] == 0.5 and back[2]["affinity"] == 0.0  # absent: 0.0
    assert back[0]["category"] == 0.0 and back[1]["affinity"] == 0.1


def test_user_feed_v2_records_still_read() -> None:
    v2 = AvroCodec("feedpipe.UserFeed")
    v2.entry = v2.registry.by_id[8]
    v2._header = b"\x00" + (8).to_bytes(4, "big")
    rec = {"user_id": "u", "profile_version": 1, "generated_at": 5, "ranker": "affinity",
           "weight_sets": {"seed": {"a": 1.0}},
           "items": [{"content_id": "c", "brand": "mind", "rank": 1, "score": 0.5,
                      "affinity": 0.1, "recency": 0.2, "engagement": 0.3, "weights": {},
                      "weight_set": "seed", "components": {}}]}
    back = feed_items(codec("UserFeed").decode_plain(v2.encode(rec)))
    assert back[0]["content_id"] == "c" and back[0]["weights"] == {"a": 1.0}
    assert back[0]["affinity"] == 0.1


def test_a_bad_user_feed_v3_record_is_a_clear_error() -> None:
    got, _ = _round_trip(_items(ITEMS[:2]))
    with pytest.raises(ValueError, match="scores"):
        feed_items({**got, "scores": got["scores"][:8]})


def test_observe_many_equals_repeated_observe() -> None:
    reg = CollectorRegistry()
    one = Histogram("one_s", "x", buckets=(0.001, 0.01, 0.1), registry=reg)
    many = Histogram("many_s", "x", buckets=(0.001, 0.01, 0.1), registry=reg)
    for _ in range(7):
        one.observe(0.005)
    observe_many(many, 0.005, 7)

    def samples(name: str) -> list[tuple[str, float]]:
        return [(s.name.replace(name, ""), s.value) for m in reg.collect() if m.name == name
                for s in m.samples if not s.name.endswith("_created")]

    assert samples("one_s") == samples("many_s")


def test_collector_sink_posts_the_contract_and_counts_rejections() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ops.simulate import CollectorSink, Counts

    got: list[tuple[str, str | None, dict[str, object]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got.append((self.path, self.headers.get("X-API-Key"), body))
            answer = json.dumps({"accepted": 1, "errors": [{"index": 1, "error": "bad"}]})
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sink = CollectorSink(f"http://127.0.0.1:{server.server_port}/", "tok")
        events = [ev for _, ev in zip(range(2), Population(ITEMS).events(10.0, 0), strict=False)]
        counts = Counts(errors=[])
        sink.send(events, counts)
        sink.close()
    finally:
        server.shutdown()
        server.server_close()
    assert [(p, key) for p, key, _ in got] == [("/v1/events", "tok")]
    assert got[0][2] == collector_body(events)
    assert counts.rejected == 1 and counts.errors and "bad" in counts.errors[0]
