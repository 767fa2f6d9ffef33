"""Contract: the Faust app, topology.yaml and the .avsc files agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import orjson

from feedpipe.store.keys import Keys
from feedpipe.topology import topology
from feedpipe.wire.codec import SCHEMA_DIR, registry

ROOT = Path(__file__).resolve().parents[2]


def _app_agents() -> dict[str, object]:
    from streams.app import app, load_stages

    load_stages()
    return {a.name: a for a in app.agents.values()}


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
    agents = _app_agents()
    topo = {n: s for n, s in topology().stages.items() if s.kind == "agent"}
    assert set(topo) <= set(agents)
    for name, spec in topo.items():
        agent = agents[name]
        channel = agent.channel  # type: ignore[attr-defined]
        assert set(channel.topics) == {spec.input}, name
        assert agent.fun.__module__ == spec.module, name  # type: ignore[attr-defined]


def test_topics_used_in_streams_code_are_declared_outputs() -> None:
    """Every topic("...") literal in a stage module is its input, an output or its DLQ."""
    topo = topology()
    used_anywhere: set[str] = set()
    for name, spec in topo.stages.items():
        path = ROOT / (spec.module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        used = {
            node.args[0].value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "topic"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        }
        allowed = {spec.input, *spec.outputs.values(), *([spec.dlq] if spec.dlq else [])}
        assert used <= allowed, f"{name} uses undeclared topics {used - allowed}"
        used_anywhere |= used
    # the shared runtime sends 'resolve' events: both stages that call it declare the topic
    assert topo.stages["enrich"].output("reader_events") == topo.ingest.reader_events


def test_redis_key_templates_match_the_key_builder() -> None:
    templates = set(topology().redis.keys)
    methods = {m for m in vars(Keys) if not m.startswith("_")}
    assert templates == methods
