"""Agent tests: the two Faust agents (normalise, enrich) driven through
``agent.test_context()`` (no broker). The click path is not a Faust agent: test_clickpath.py.

Events are put into the agent's channel by the test wrapper; what the agents send to other
topics is captured by replacing ``Topic.send`` (the Kafka side is covered by test_e2e.py). Redis
is the real one from the ``redis_url`` fixture, flushed before each test.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
import redis

from feedpipe.ids import content_id
from feedpipe.store.keys import keys
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration

Sent = dict[str, list[tuple[bytes | None, bytes | None]]]


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Capture every Topic.send by topic name."""
    out: Sent = defaultdict(list)

    async def capture(self: faust.Topic, *, key: Any = None, value: Any = None, **_: Any) -> None:
        out[self.get_topic_name()].append((key, value))

    monkeypatch.setattr(faust.Topic, "send", capture)
    return out


@pytest.fixture()
def stages(redis_client: redis.Redis) -> Iterator[Any]:
    """The Faust app finalised for testing, with a fresh async Redis client per test."""
    from streams import runtime
    from streams.worker import load_stages

    app = load_stages()
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    runtime.redis_client.cache_clear()
    yield app
    runtime.redis_client.cache_clear()


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


async def wait_for(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for the agent"
        await asyncio.sleep(0.05)


def _raw(kind: str, source: str, brand: str, payload: bytes, source_id: str | None) -> bytes:
    return codec("RawCmsEvent").encode(
        {
            "event_id": hashlib.sha256(payload).hexdigest(),
            "kind": kind,
            "op": "upsert",
            "source": source,
            "brand": brand,
            "source_id": source_id,
            "content_type": "text/tab-separated-values",
            "payload": payload,
            "origin": "test",
            "emitted_at": datetime.now(UTC),
        }
    )


def test_normalise_agent_sends_content_and_dead_letters(
    stages: Any, sent: Sent, data_dir: Path
) -> None:
    from streams.stages.normalise import normalise_agent

    rows = (data_dir / "mind" / "news.tsv").read_bytes().splitlines()[:3]
    values = [_raw("mind.news", "mind", "mind", r, r.split(b"\t")[0].decode()) for r in rows]
    values.append(b"\x00\x00\x00\x00\x01garbage")  # right magic, truncated Avro
    values.append(_raw("mind.news", "mind", "mind", b"only\ttwo", "x"))  # bad TSV row

    async def go() -> None:
        async with normalise_agent.test_context() as agent:
            for v in values:
                await agent.put(v, key=b"k")
            await wait_for(lambda: len(sent["content.normalised"]) + len(sent["cms.raw.dlq"]) == 5)

    run(go)
    contents = [codec("Content").decode(v) for _, v in sent["content.normalised"]]
    assert [c["source_id"] for c in contents] == [r.split(b"\t")[0].decode() for r in rows]
    assert all(
        k == c["content_id"].encode()
        for (k, _), c in zip(sent["content.normalised"], contents, strict=True)
    )
    dlq = [codec("DeadLetter").decode(v) for _, v in sent["cms.raw.dlq"]]
    assert [d["error_type"] for d in dlq] == ["undecodable", "bad_tsv_row"]
    assert all(d["stage"] == "normalise" and d["reason"] for d in dlq)
    assert dlq[0]["value"] == values[3]


def _content(cid_source: str, sid: str, categories: list[str]) -> dict[str, Any]:
    from streams.normalisers.common import content_hash

    rec: dict[str, Any] = {
        "content_id": content_id(cid_source, sid),
        "source": cid_source,
        "source_id": sid,
        "kind": "mind.news",
        "brand": "mind",
        "status": "published",
        "title": f"Test article {sid} about city council budgets",
        "summary": "The council voted on the budget after a long debate about parks.",
        "body": "",
        "url": None,
        "authors": [],
        "published_at": None,
        "updated_at": None,
        "categories": categories,
        "source_categories": categories,
        "tags": [],
        "language_hint": "en",
        "media": [],
        "entities": [],
        "ingest_warnings": [],
        "raw_event_id": "r" + sid,
    }
    rec["content_hash"] = content_hash(rec)
    return rec


def test_enrich_agent_materialises_and_releases_waiting_clicks(
    stages: Any, sent: Sent, redis_client: redis.Redis
) -> None:
    from streams.stages.enrich import enrich_agent

    k = keys()
    item = _content("agent-test", "a1", ["news"])
    for u in ("U1", "U2"):
        redis_client.sadd(k.pending_users(item["content_id"], k.partition_of(u)), u)
    value = codec("Content").encode(item)

    async def go() -> None:
        async with enrich_agent.test_context() as agent:
            await agent.put(value, key=item["content_id"].encode())
            await agent.put(value, key=item["content_id"].encode())  # redelivery: no change
            await wait_for(
                lambda: len(sent["content.enriched"]) == 2 and len(sent["reader.events"]) == 2
            )
            await asyncio.sleep(0.6)

    run(go)
    doc = orjson.loads(redis_client.get(k.content(item["content_id"])) or b"null")
    assert doc["title"] == item["title"] and doc["language"] == "en" and doc["word_count"] > 10
    assert redis_client.zscore(k.catalogue("mind"), item["content_id"]) is not None
    assert int(redis_client.get(k.catalogue_version()) or 0) == 1  # the duplicate wrote nothing
    resolves = [codec("ReaderEvent").decode(v) for _, v in sent["reader.events"]]
    assert sorted(r["user_id"] for r in resolves) == ["U1", "U2"]
    assert {r["type"] for r in resolves} == {"resolve"}
    assert not any(
        redis_client.exists(k.pending_users(item["content_id"], p)) for p in k.partitions()
    )
