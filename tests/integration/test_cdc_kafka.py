"""CdcConnector end to end through a real Kafka broker.

Debezium envelopes of synthetic ``wp_posts`` rows (plus the real ``inventory.customers``
envelopes of the shared data, a tombstone and garbage) are produced to a fresh CDC topic
(created here with the AdminClient: auto-creation is off); the connector turns them into
``cms.raw`` events and dead letters, commits its offsets only after the events were
acknowledged, and resumes from the committed offsets.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pipeline import consume_all, high_watermarks

from connectors.cdc.connector import CdcConnector
from feedpipe.kafka.producer import DeliveryError, IdempotentProducer
from feedpipe.kafka.topics import TopicChange
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration

BRAND = "frontity"
DATE_MS = 1709634030000


def wp_row(pid: int, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ID": pid,
        "post_author": 1,
        "post_date_gmt": DATE_MS,
        "post_content": f"<p>Body {pid}</p>",
        "post_title": f"Title {pid}",
        "post_excerpt": "",
        "post_status": "publish",
        "post_name": f"post-{pid}",
        "post_modified_gmt": DATE_MS + pid,
        "guid": f"https://blog.example.org/?p={pid}",
        "post_type": "post",
    }
    row.update(over)
    return row


def env(op: str, before: Any, after: Any) -> bytes:
    source = {"connector": "mysql", "db": "wordpress", "table": "wp_posts", "snapshot": "false"}
    if op == "r":
        source["snapshot"] = "true"
    return orjson.dumps(
        {"before": before, "after": after, "source": source, "op": op, "ts_ms": DATE_MS}
    )


@pytest.fixture()
def cdc_topic(kafka_bootstrap: str, topics_applied: list[TopicChange]) -> Iterator[str]:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"cdc.wordpress.wp_posts.test-{uuid.uuid4().hex[:10]}"
    for fut in admin.create_topics(
        [NewTopic(name, num_partitions=2, replication_factor=1)]
    ).values():
        fut.result(30)
    try:
        yield name
    finally:
        for fut in admin.delete_topics([name]).values():
            fut.result(30)


def produce_raw(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes | None]]) -> None:
    """Produce (key, value) pairs (value None = tombstone) as Debezium would."""
    p = Producer({"bootstrap.servers": bootstrap})
    for key, value in messages:
        p.produce(topic, value=value, key=key)
    assert p.flush(30) == 0


def raw_events(bootstrap: str, start: dict[int, int], source: str) -> list[dict[str, Any]]:
    decode = codec("RawCmsEvent").decode
    recs = (decode(m.value()) for m in consume_all(bootstrap, "cms.raw", start))
    return [r for r in recs if r["source"] == source]


def dead_letters(bootstrap: str, start: dict[int, int], topic: str) -> list[dict[str, Any]]:
    decode = codec("DeadLetter").decode
    recs = (decode(m.value()) for m in consume_all(bootstrap, "cms.raw.dlq", start))
    return [d for d in recs if d["source_topic"] == topic]


def connector(bootstrap: str, topic: str, source: str, **kw: Any) -> CdcConnector:
    return CdcConnector(
        source,
        BRAND,
        topic=topic,
        group_id=f"test-cdc-{source}",
        bootstrap=bootstrap,
        idle_exit_s=3.0,
        poll_timeout_s=0.5,
        **kw,
    )


def test_cdc_end_to_end(kafka_bootstrap: str, cdc_topic: str, data_dir: Path) -> None:
    source = f"wp-cdc-{uuid.uuid4().hex[:6]}"
    customers = (data_dir / "cdc" / "debezium__serde-without-schema.json").read_bytes()
    k = orjson.dumps
    messages: list[tuple[bytes, bytes | None]] = [
        (k({"ID": 1}), env("r", None, wp_row(1))),  # snapshot read
        (k({"ID": 2}), env("c", None, wp_row(2))),
        (k({"ID": 3}), env("c", None, wp_row(3, post_status="draft"))),  # -> delete
        (k({"ID": 4}), env("c", None, wp_row(4, post_type="page"))),  # skipped
        (k({"ID": 2}), env("u", wp_row(2), wp_row(2, post_title="Title 2 (updated)"))),
        (k({"ID": 1}), env("d", wp_row(1), None)),
        (k({"ID": 1}), None),  # tombstone
        (k({"ID": 5}), orjson.dumps({**wp_row(5), "__op": "c", "__deleted": "false"})),  # row
        (b"garbage", b"{not json"),
        (k({"id": 1004}), customers),  # the real customers envelope: not wp_posts
    ]
    produce_raw(kafka_bootstrap, cdc_topic, messages)
    raw_start = high_watermarks(kafka_bootstrap, "cms.raw")
    dlq_start = high_watermarks(kafka_bootstrap, "cms.raw.dlq")

    conn = connector(kafka_bootstrap, cdc_topic, source)
    metrics = conn.run()
    conn.stop()
    assert metrics.fetched == len(messages)
    assert metrics.skipped == {"post_type": 1, "tombstone": 1}
    assert metrics.rejected == {"invalid_json": 1, "not_wp_posts": 1}
    assert metrics.published == 6 + 2  # events + dead letters
    assert sum(metrics.offsets.values()) == len(messages)
    assert metrics.cursor and cdc_topic in metrics.cursor

    events = raw_events(kafka_bootstrap, raw_start, source)
    got = sorted((e["source_id"], e["op"]) for e in events)
    assert got == [
        ("1", "delete"),
        ("1", "upsert"),
        ("2", "upsert"),
        ("2", "upsert"),
        ("3", "delete"),
        ("5", "upsert"),
    ]
    assert {e["kind"] for e in events} == {"wordpress.post"}
    titles = {
        orjson.loads(e["payload"])["title"]["rendered"] for e in events if e["source_id"] == "2"
    }
    assert titles == {"Title 2", "Title 2 (updated)"}
    # per-key order is kept (same partition): 1 upsert before 1 delete
    ones = [e["op"] for e in events if e["source_id"] == "1"]
    assert ones == ["upsert", "delete"]

    dlq = dead_letters(kafka_bootstrap, dlq_start, cdc_topic)
    by_code = {d["error_type"]: d for d in dlq}
    assert set(by_code) == {"invalid_json", "not_wp_posts"}
    assert by_code["not_wp_posts"]["value"] == customers
    assert "inventory.customers" in by_code["not_wp_posts"]["reason"]
    assert by_code["invalid_json"]["stage"] == "cdc"
    assert by_code["invalid_json"]["origin"].startswith(f"{cdc_topic}[")

    # resume: the same group has committed everything; only a new message is read
    produce_raw(kafka_bootstrap, cdc_topic, [(k({"ID": 6}), env("c", None, wp_row(6)))])
    raw_start = high_watermarks(kafka_bootstrap, "cms.raw")
    again = connector(kafka_bootstrap, cdc_topic, source)
    m2 = again.run()
    again.stop()
    assert m2.fetched == 1
    assert [e["source_id"] for e in raw_events(kafka_bootstrap, raw_start, source)] == ["6"]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_offsets_are_not_committed_without_acks(kafka_bootstrap: str, cdc_topic: str) -> None:
    source = f"wp-cdc-{uuid.uuid4().hex[:6]}"
    produce_raw(
        kafka_bootstrap,
        cdc_topic,
        [(orjson.dumps({"ID": i}), env("c", None, wp_row(i))) for i in (10, 11, 12)],
    )
    dead = IdempotentProducer(
        f"127.0.0.1:{_dead_port()}",
        client_id="test-cdc-dead",
        config={"message.timeout.ms": 2000, "log_level": 0},
    )
    broken = connector(kafka_bootstrap, cdc_topic, source, producer=dead, flush_timeout_s=10)
    with pytest.raises(DeliveryError):
        broken.run()
    assert broken.metrics.offsets == {}

    # a healthy run of the same group starts again from the beginning: nothing is lost
    raw_start = high_watermarks(kafka_bootstrap, "cms.raw")
    healthy = connector(kafka_bootstrap, cdc_topic, source)
    metrics = healthy.run()
    healthy.stop()
    assert metrics.fetched == 3
    got = sorted(e["source_id"] for e in raw_events(kafka_bootstrap, raw_start, source))
    assert got == ["10", "11", "12"]
