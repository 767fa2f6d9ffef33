"""Contract: the worker (Faust agents and the click path service), topology.yaml, the Redis key
layout and the .avsc files agree."""

from __future__ import annotations

import ast
import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from feedpipe.model.profile import new_profile
from feedpipe.store.keys import Keys
from feedpipe.topology import topology
from feedpipe.wire.codec import SCHEMA_DIR, registry

ROOT = Path(__file__).resolve().parents[2]


def _app() -> Any:
    from streams.worker import load_stages

    return load_stages()


def _app_agents() -> dict[str, Any]:
    return {a.name: a for a in _app().agents.values()}


def test_every_schema_file_is_registered_and_every_topic_schema_exists() -> None:
    reg = registry()
    files = {p.name for p in SCHEMA_DIR.glob("*.avsc")}
    assert files == {e.file for e in reg.by_id.values()}
    ids = [e.id for e in reg.by_id.values()]
    assert len(ids) == len(set(ids))
    for name, spec in topology().topics.items():
        assert spec.schema_ in reg.by_subject, f"{name}: unknown schema {spec.schema_}"
        if name.endswith(".dlq"):
            assert spec.schema_ == "feedpipe.DeadLetter"
        if spec.dlq:
            assert topology().topics[spec.dlq].schema_ == "feedpipe.DeadLetter"


def test_topic_keys_are_fields_of_their_value_schema() -> None:
    for name, spec in topology().topics.items():
        if not re.fullmatch(r"[a-z_]+", spec.key):
            continue  # composite or descriptive keys (source:source_id, original key)
        schema = orjson.loads((SCHEMA_DIR / registry().subject(spec.schema_).file).read_bytes())
        fields = {f["name"] for f in schema["fields"]}
        nested = {str(g["name"]) for f in schema["fields"] for g in _record_fields(f)}
        assert spec.key in fields | nested, f"{name}: key {spec.key} not in {spec.schema_}"


def _record_fields(field: dict[str, object]) -> list[dict[str, object]]:
    """Fields of a nested record, inline or named (a registered subject, e.g. feedpipe.Content)."""
    t = field["type"]
    if isinstance(t, str) and t in registry().by_subject:
        schema = orjson.loads((SCHEMA_DIR / registry().subject(t).file).read_bytes())
        return list(schema["fields"])
    if isinstance(t, dict) and t.get("type") == "record":
        return list(t["fields"])  # type: ignore[arg-type]
    return []


def test_faust_agents_match_topology() -> None:
    """The app's agents are exactly the ``kind: agent`` stages, each on its input topic and
    defined in its stage module."""
    agents = _app_agents()
    topo = {n: s for n, s in topology().stages.items() if s.kind == "agent"}
    assert set(topo) == set(agents)
    for name, spec in topo.items():
        agent = agents[name]
        channel = agent.channel
        assert set(channel.topics) == {spec.input}, name
        assert agent.fun.__module__ == spec.module, name


def test_the_click_path_service_is_registered_and_consumes_its_input_under_its_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ``kind: service`` stage (the click path) is a service of the app defined in its
    stage module; its consumer subscribes to exactly ``stages.clickpath.input`` under
    ``stages.clickpath.group(app_id)``."""
    import aiokafka

    from streams.clickpath import consumer

    app = _app()
    services = {n: s for n, s in topology().stages.items() if s.kind == "service"}
    assert set(services) == {"clickpath"}
    spec = services["clickpath"]
    assert consumer.ClickPathService in app._extra_services
    assert consumer.ClickPathService.__module__ == spec.module
    assert consumer.consumer_group("fp-test") == spec.group("fp-test")
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    class FakeConsumer:
        def __init__(self, *topics: str, group_id: str, **_: Any) -> None:
            seen.update(topics=topics, group=group_id)

        async def start(self) -> None:
            raise Stop

    class FakeProducer:
        async def start(self) -> None:
            pass

        async def send(self, topic: str, key: bytes | None, value: bytes | None) -> Any:
            raise AssertionError("nothing is consumed, so nothing is sent")

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", FakeConsumer)
    with pytest.raises(Stop):
        asyncio.run(
            consumer.run_consumer(
                "127.0.0.1:9", consumer.consumer_group("fp-test"), asyncio.Event(),
                producer=FakeProducer(),
            )
        )
    assert seen == {"topics": (spec.input,), "group": spec.group("fp-test")}


def test_the_click_path_sends_only_to_its_declared_outputs_and_dlq() -> None:
    """Profiles, feeds, tombstones, DLQ records and late events of a batch go to the click
    path's declared outputs and DLQ (the 'resolve' events of publish.release_arrived to
    ``outputs.reader_events``, checked in the source)."""
    from streams.clickpath import publish
    from streams.clickpath.fold import Plan
    from streams.clickpath.records import Record

    spec = topology().stages["clickpath"]
    sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(topic: str, key: bytes, value: bytes | None) -> Any:
        sent.append((topic, key, value))
        return None

    at = datetime(2019, 11, 12, tzinfo=UTC)
    late = {"user_id": "U1", "occurred_at": at, "event_id": "e1"}
    plan = Plan(0, 3, 1, erased={"U2": None}, late=[(1, late)])
    rec = Record(spec.input, 0, 1, b"U1", b"x")
    profile = new_profile("U1", 0, topology().profiles)
    feed = {"user_id": "U1", "profile_version": 1, "generated_at": 0, "items": []}

    async def go() -> None:
        await publish.dead_and_tombstones(
            send, [(b"U3", b"dead")], plan, {1: rec}, topology().profiles
        )
        await publish.publish_state(send, {"U1": profile}, {"U1": feed})

    asyncio.run(go())
    allowed = {*spec.outputs.values(), spec.dead_letters()}
    assert {t for t, _, _ in sent} == {spec.output("profiles"), spec.output("feeds"), spec.dlq}
    assert {t for t, _, _ in sent} <= allowed
    source = (ROOT / "streams/clickpath/publish.py").read_text()
    assert 'output("reader_events")' in source and "stage().input" not in source


class _Recorder:
    """A redis-py pipeline stand-in recording the keys each queued command writes."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **_: Any) -> None:
            if name == "eval":
                n = int(args[1])
                self.keys += [str(x) for x in args[2 : 2 + n]]
            elif name in ("delete",):
                self.keys += [str(x) for x in args]
            elif args:
                self.keys.append(str(args[0]))

        return call

    async def __aenter__(self) -> _Recorder:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None

    def pipeline(self, **_: Any) -> _Recorder:
        return self

    async def execute(self) -> list[Any]:
        return [[set() for _ in range(64)] for _ in range(64)]  # e.g. TAKE_SETS replies


def _families(written: list[str]) -> set[str]:
    """The redis.keys families of ``written`` keys (each matched against the templates, the
    most literal first: ``fp:stats:version`` is stats_version, not stats of item "version")."""
    topo = topology()
    templates = sorted(
        topo.redis.keys.items(), key=lambda kv: (kv[1].count("{"), -len(kv[1]))
    )
    out = set()
    for key in written:
        for family, template in templates:
            pattern = re.escape(template.replace("{prefix}", topo.redis.prefix))
            pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^:]+(?::[^:]+)?", pattern)
            if re.fullmatch(pattern, key):
                out.add(family)
                break
        else:
            raise AssertionError(f"key {key!r} matches no redis.keys family")
    return out


def test_state_families_match_what_the_stages_write() -> None:
    """Each stage's ``state`` names existing redis.keys families, and equals the families its
    writes touch: the click path's batch transaction (write.queue_plan on a plan touching
    every kind of write) plus the refresher's marks and the item table it interns into; the
    enrich stage's materialise (store.content.write_items) plus the pending sets it takes."""
    from feedpipe.rank.fanout import AudienceWrites
    from feedpipe.store import content as content_store
    from feedpipe.store import pending as pending_store
    from feedpipe.store.content import ItemWrite
    from feedpipe.store.coreads import CoReadState
    from streams.clickpath.fold import Plan
    from streams.clickpath.write import queue_plan

    topo = topology()
    k = Keys(topo)
    for name, spec in topo.stages.items():
        assert set(spec.state) <= set(topo.redis.keys), name
    json_topo = topo.model_copy(
        update={
            "profiles": topo.profiles.model_copy(update={"profile_format": "json"}),
            "ranking": topo.ranking.model_copy(update={"feed_format": "json"}),
        }
    )
    profile = new_profile("U1", 0, topo.profiles)
    feed = {"user_id": "U1", "profile_version": 1, "generated_at": 0, "items": []}
    plan = Plan(
        0, 9, 1,
        profiles={"U1": profile},
        feeds={"U1": feed},
        erased={"U2": {"pending": [{"content_id": "c1", "at": 0}]}},
        pending={"c2": {"U1"}},
        stats={"c3": [1, 1]},
        newest_ms=1,
        trending={("mind", 1): {"c3": 1.0}},
        trends={"c3": {2: [1.0, 1.0, 1.0, 1.0]}},
        ab={"exp": {"a:clicks": 1}},
        coreads=CoReadState(0, (1, 2), {(2, 0): {"c1": {"c3": 1.0}}}, {(2, "c1")}),
        audience=AudienceWrites(
            add={k.audience("mind", "c:news", 0): {"U1": 1.0}},
            remove={k.audience("mind", "c:sports", 0): ["U1"]},
        ),
    )
    pipe = _Recorder()
    queue_plan(pipe, plan, [k.audience("mind", "c:news", 0)], json_topo)
    clickpath = _families(pipe.keys) | {"feeds_refreshed", "item_ord", "item_id", "item_gen"}
    assert set(topo.stages["clickpath"].state) == clickpath

    r = _Recorder()
    doc = {"content_id": "c1", "brand": "mind", "status": "published", "published_at": 1}
    gone = {"content_id": "c2", "brand": "mind", "status": "deleted"}

    async def go() -> None:
        await content_store.write_items(
            r, [ItemWrite("c1", doc, {"content_id": "c1"}, True), ItemWrite("c2", gone, None, None)]
        )
        await pending_store.take(r, ["c1"])

    asyncio.run(go())
    assert set(topo.stages["enrich"].state) == _families(r.keys)
    assert topo.stages["normalise"].state == []


def test_no_topic_name_literals_in_streams_and_the_store() -> None:
    """Topic names come from topology() (stages, ingest): no string constant in streams/ or
    feedpipe/store/ code (docstrings aside) names a topic."""
    names = set(topology().topics)
    for path in [*(ROOT / "streams").rglob("*.py"), *(ROOT / "feedpipe/store").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                assert node.value not in names, f"{path.relative_to(ROOT)}: {node.value!r}"
                assert not node.value.endswith(".dlq"), f"{path.relative_to(ROOT)}: {node.value!r}"
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value for v in node.values if isinstance(v, ast.Constant)
                )
                assert ".dlq" not in text, f"{path.relative_to(ROOT)}: f-string DLQ name"


def test_redis_key_templates_match_the_key_builder() -> None:
    templates = set(topology().redis.keys)
    helpers = {"partition_of", "partitions"}  # the hash-tag layout's partition helpers
    methods = {m for m in vars(Keys) if not m.startswith("_")} - helpers
    assert templates == methods
