"""Replay connectors against a real Kafka broker (session fixtures from tests/conftest.py).

Topics may already hold records from other tests, so every test reads only the offsets its
own replay added (high watermarks before and after).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from pipeline import consume_all, high_watermarks

from connectors.files.cms import wordpress_events
from connectors.replay import ReplayConnector, replay_all
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.kafka.topics import TopicChange
from feedpipe.topology import SourceSpec, topology
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration


def _source(name: str) -> SourceSpec:
    return next(s for s in topology().sources if s.name == name)


def test_wordpress_replay_round_trip(
    kafka_bootstrap: str, topics_applied: list[TopicChange], data_dir: Path
) -> None:
    spec = _source("frontity-wp")
    expected = [
        it
        for f in spec.files or []
        for it in wordpress_events(data_dir / spec.path / f, spec.name, spec.brand)
    ]
    before = high_watermarks(kafka_bootstrap, "cms.raw")
    producer = IdempotentProducer(kafka_bootstrap, stats_interval_ms=100)
    conn = ReplayConnector(spec, data_dir, topology().topics, producer=producer)
    metrics = conn.run()
    assert metrics.published == metrics.fetched == len(expected) == 9
    assert metrics.rejected == {} and metrics.last_success_at is not None
    assert producer.acked == 9 and producer.failed == 0

    after = high_watermarks(kafka_bootstrap, "cms.raw")
    msgs = list(consume_all(kafka_bootstrap, "cms.raw", before, after))
    assert len(msgs) == 9
    dec = codec("RawCmsEvent")
    partitioner = DefaultPartitioner()
    parts = sorted(after)
    by_key: dict[str, dict[str, Any]] = {}
    for m in msgs:
        key = m.key()
        # murmur2 like the Java client / aiokafka, so Faust finds keys where it expects
        assert m.partition() == partitioner(key, parts, parts)
        by_key[key.decode()] = dec.decode(m.value())
    assert sorted(by_key) == sorted(it.key for it in expected)
    for it in expected:
        got = by_key[it.key]
        assert got["event_id"] == it.record["event_id"]
        assert got["payload"] == it.record["payload"]
        assert orjson.loads(got["payload"])["id"] == int(got["source_id"])
        assert (got["kind"], got["source"], got["brand"]) == (
            "wordpress.post",
            "frontity-wp",
            "frontity",
        )

    # idempotent producer in effect: the broker assigned a producer id
    deadline = time.monotonic() + 10
    while (producer.last_stats or {}).get("eos", {}).get("idemp_state") != "Assigned":
        assert time.monotonic() < deadline, producer.last_stats
        producer.poll(0.2)
    assert producer.last_stats is not None
    assert producer.last_stats["eos"]["producer_id"] >= 0
    assert producer.config["acks"] == "all" and producer.config["enable.idempotence"] is True


def test_malformed_behaviour_rows_reach_the_dlq(
    kafka_bootstrap: str, topics_applied: list[TopicChange], tmp_path: Path
) -> None:
    (tmp_path / "b.tsv").write_text(
        "1\tUx1\t11/12/2019 2:14:46 PM\tN1\tN3-1 N4-0\n"
        "2\tUx2\tyesterday\t\tN3-0\n"
        "3\tUx3\t11/12/2019 2:14:46 PM\n",
        encoding="utf-8",
    )
    spec = SourceSpec(
        name="synthetic", kind="mind.behaviors", brand="mind", path="b.tsv", content_source="mind"
    )
    before = high_watermarks(kafka_bootstrap, "reader.events")
    dlq_before = high_watermarks(kafka_bootstrap, "reader.events.dlq")
    conn = ReplayConnector(
        spec, tmp_path, topology().topics, spacing_s=60, bootstrap=kafka_bootstrap
    )
    with conn:
        metrics = conn.run()
    assert metrics.rejected == {"bad_time": 1, "bad_columns": 1}
    assert metrics.published == 4 + 2  # history click, impression, click, impression + 2 DLQ

    events = [
        codec("ReaderEvent").decode(m.value())
        for m in consume_all(
            kafka_bootstrap,
            "reader.events",
            before,
            high_watermarks(kafka_bootstrap, "reader.events"),
        )
    ]
    assert sorted((e["type"], e["origin"]) for e in events) == [
        ("click", "history"),
        ("click", "live"),
        ("impression", "live"),
        ("impression", "live"),
    ]
    dead = [
        (m.key(), codec("DeadLetter").decode(m.value()))
        for m in consume_all(
            kafka_bootstrap,
            "reader.events.dlq",
            dlq_before,
            high_watermarks(kafka_bootstrap, "reader.events.dlq"),
        )
    ]
    assert [(k, d["error_type"], d["stage"], d["source_topic"]) for k, d in dead] == [
        (b"Ux2", "bad_time", "replay", "reader.events"),
        (None, "bad_columns", "replay", "reader.events"),
    ]
    assert dead[0][1]["value"] == b"2\tUx2\tyesterday\t\tN3-0"
    assert dead[1][1]["origin"].endswith("b.tsv:3")
    assert "columns" in dead[1][1]["reason"]


def test_mind_behaviours_replay_rate(
    kafka_bootstrap: str, topics_applied: list[TopicChange], data_dir: Path
) -> None:
    before = high_watermarks(kafka_bootstrap, "reader.events")
    seen: list[int] = []
    result = replay_all(
        topology(), data_dir, ["mind-behaviors"], seen.append, bootstrap=kafka_bootstrap
    )
    m = result["mind-behaviors"]
    after = high_watermarks(kafka_bootstrap, "reader.events")
    added = sum(after[p] - before.get(p, 0) for p in after)
    # 189,359 impressions + 7,542 clicks + the history clicks of each user's first row
    assert m.published == m.fetched == added
    assert added > 189_359 + 7_542
    assert m.rejected == {}
    assert seen and seen[-1] == m.fetched and seen == sorted(seen)
    print(
        f"\nMIND behaviours replay: {m.published:,} records in {m.elapsed_s:.2f} s "
        f"= {m.rate:,.0f} records/s (encode + produce + flush)"
    )
