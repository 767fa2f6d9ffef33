"""Replay generators on the real shared data (read in place; no Kafka).

Counts are checked twice: against the data README (2,000 news; 189,359 impressions; 7,542
clicks; 4,637 users) and against an independent parse of the files in this test. Synthetic
inputs (written to tmp_path) are invented here, never copied from the data.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.base import Connector, ConnectorMetrics
from connectors.files.cms import drupal_events, wordpress_events
from connectors.files.feeds import feed_document_events, guess_feed_content_type
from connectors.files.mind import mind_behavior_events, mind_news_events
from connectors.reader_encoder import ReaderEventEncoder, zigzag_varint
from connectors.records import Keyed, Malformed
from connectors.replay import ReplayConnector, source_files, target_topic
from feedpipe import ids
from feedpipe.kafka.producer import DeliveryError, IdempotentProducer
from feedpipe.topology import SourceSpec, topology
from feedpipe.wire.codec import codec

SPACING_S = topology().profiles.history_click_spacing_s
FEED_TYPES = {
    "application/feed+json",
    "application/rss+xml",
    "application/atom+xml",
    "application/rdf+xml",
    "application/xml",
}


def _roundtrip(subject: str, records: list[dict[str, Any]]) -> None:
    c = codec(subject)
    for rec in records:
        back = c.decode(c.encode(rec))
        assert back == rec, rec.get("event_id")


def _cms_checks(items: list[Keyed], kind: str, source: str, brand: str) -> None:
    for it in items:
        r = it.record
        assert r["kind"] == kind and r["source"] == source and r["brand"] == brand
        assert r["op"] in ("upsert", "delete")
        sid = r["source_id"]
        digest = hashlib.sha256(r["payload"]).hexdigest()
        if sid is not None:
            assert r["event_id"] == ids.event_id(source, sid, digest)
            assert it.key == f"{source}:{sid}"
        else:  # fallback: the file name (plus line / item position)
            assert r["event_id"] != ids.event_id(source, None, digest)
            assert it.key.startswith(f"{source}:{Path(r['origin']).name}")
        assert r["emitted_at"].tzinfo is not None
    assert len({it.record["event_id"] for it in items}) == len(items)
    _roundtrip("RawCmsEvent", [it.record for it in items])


# -- MIND news ------------------------------------------------------------------------------
def test_mind_news_one_event_per_line(data_dir: Path) -> None:
    path = data_dir / "mind" / "news.tsv"
    items = list(mind_news_events(path, "mind", "mind"))
    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    assert len(items) == len(lines) == 2000
    for it, line in zip(items, lines, strict=True):
        r = it.record
        assert r["payload"] == line and b"\n" not in r["payload"]
        assert r["source_id"] == line.split(b"\t")[0].decode()
        assert r["source_id"].startswith("N")
        assert r["content_type"] == "text/tab-separated-values"
        assert it.key == f"mind:{r['source_id']}"
    assert len({it.record["source_id"] for it in items}) == 2000
    _cms_checks(items, "mind.news", "mind", "mind")


# -- WordPress ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "count"), [("posts.json", 3), ("posts-from-category-7.json", 5), ("post-60.json", 1)]
)
def test_wordpress_posts(data_dir: Path, name: str, count: int) -> None:
    path = data_dir / "wordpress" / "frontity" / name
    items = list(wordpress_events(path, "frontity-wp", "frontity"))
    assert len(items) == count
    doc = orjson.loads(path.read_bytes())
    posts = doc if isinstance(doc, list) else [doc]
    assert [it.record["source_id"] for it in items] == [str(p["id"]) for p in posts]
    for it, post in zip(items, posts, strict=True):
        assert orjson.loads(it.record["payload"]) == post
        assert it.record["op"] == "upsert"  # all published in this capture
        assert it.record["content_type"] == "application/json"
    _cms_checks(items, "wordpress.post", "frontity-wp", "frontity")


def test_wordpress_invalid_json_and_unpublished(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_bytes(b'[{"id": 1, "title": ')
    items = list(wordpress_events(bad, "wp", "b"))
    assert len(items) == 1
    assert items[0].record["source_id"] is None
    assert items[0].record["payload"] == bad.read_bytes()
    assert items[0].key == "wp:broken.json"

    mixed = tmp_path / "mixed.json"
    mixed.write_bytes(
        orjson.dumps(
            [{"id": 7, "status": "draft"}, {"id": 8, "status": "publish"}, {"no": "id"}, 3]
        )
    )
    items = list(wordpress_events(mixed, "wp", "b"))
    assert [(i.record["source_id"], i.record["op"]) for i in items] == [
        ("7", "delete"),
        ("8", "upsert"),
        (None, "upsert"),
        (None, "upsert"),
    ]
    assert orjson.loads(items[3].record["payload"]) == 3
    assert len({i.record["event_id"] for i in items}) == 4
    _roundtrip("RawCmsEvent", [i.record for i in items])


# -- Drupal ---------------------------------------------------------------------------------
def test_drupal_documents(data_dir: Path) -> None:
    folder = data_dir / "drupal" / "drupal-kit"
    coll = list(drupal_events(folder / "jsonapi_article_collection.json", "umami", "umami"))
    doc = orjson.loads((folder / "jsonapi_article_collection.json").read_bytes())
    assert len(coll) == 8
    assert [i.record["source_id"] for i in coll] == [item["id"] for item in doc["data"]]
    for it, item in zip(coll, doc["data"], strict=True):
        assert orjson.loads(it.record["payload"]) == {"data": item, "included": []}
        assert it.record["content_type"] == "application/vnd.api+json"
    detail = list(drupal_events(folder / "jsonapi_article_detail.json", "umami", "umami"))
    assert len(detail) == 1
    assert detail[0].record["source_id"] == orjson.loads(detail[0].record["payload"])["data"]["id"]
    for name in (
        "jsonapi_include_error.json",
        "jsonapi_index_error.json",
        "jsonapi_multiple_errors.json",
        "jsonapi_index.json",  # data is an empty list: still published, never dropped
    ):
        raw = list(drupal_events(folder / name, "umami", "umami"))
        assert len(raw) == 1, name
        assert raw[0].record["source_id"] is None
        assert raw[0].record["payload"] == (folder / name).read_bytes()
        assert raw[0].key == f"umami:{name}"
    _cms_checks(coll + detail, "drupal.node", "umami", "umami")


def test_drupal_included_filtered_per_item(tmp_path: Path) -> None:
    doc = {
        "data": [
            {
                "type": "node--article",
                "id": "a",
                "attributes": {"status": False},
                "relationships": {
                    "uid": {"data": {"type": "user--user", "id": "u1"}},
                    "tags": {"data": [{"type": "tag", "id": "t1"}, {"type": "tag", "id": "t2"}]},
                    "empty": {"data": None},
                },
            },
            {"type": "node--article", "id": "b", "relationships": {}},
        ],
        "included": [
            {"type": "user--user", "id": "u1"},
            {"type": "tag", "id": "t2"},
            {"type": "tag", "id": "t9"},
        ],
    }
    path = tmp_path / "c.json"
    path.write_bytes(orjson.dumps(doc))
    a, b = drupal_events(path, "d", "x")
    inc_a = orjson.loads(a.record["payload"])["included"]
    assert {(r["type"], r["id"]) for r in inc_a} == {("user--user", "u1"), ("tag", "t2")}
    assert a.record["op"] == "delete" and b.record["op"] == "upsert"
    assert orjson.loads(b.record["payload"])["included"] == []


# -- feed documents -------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["realworld", "edge_cases"])
def test_feed_documents_one_event_per_file(data_dir: Path, folder: str) -> None:
    files = sorted(p for p in (data_dir / "feeds" / folder).iterdir() if p.is_file())
    assert files
    items = [it for f in files for it in feed_document_events(f, "feeds", "feeds")]
    assert len(items) == len(files)
    for it, f in zip(items, files, strict=True):
        assert it.record["payload"] == f.read_bytes()
        assert it.record["source_id"] is None
        assert it.key == f"feeds:{f.name}"
        assert it.record["content_type"] in FEED_TYPES, f.name
        if f.suffix == ".json":
            assert it.record["content_type"] == "application/feed+json"
    _cms_checks(items, "feed.document", "feeds", "feeds")


def test_guess_feed_content_type() -> None:
    assert guess_feed_content_type(Path("a.xml"), b"<?xml?>\n<rss version='2.0'>") == (
        "application/rss+xml"
    )
    assert guess_feed_content_type(Path("a.xml"), b"\xef\xbb\xbf<feed xmlns=''>") == (
        "application/atom+xml"
    )
    assert guess_feed_content_type(Path("a"), b"<rdf:RDF>") == "application/rdf+xml"
    assert guess_feed_content_type(Path("a.xml"), b"") == "application/xml"
    assert guess_feed_content_type(Path("a.bin"), b"\x00\x01") == "application/octet-stream"


# -- MIND behaviours ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def behaviors(data_dir: Path) -> tuple[list[Keyed | Malformed], list[list[str]]]:
    path = data_dir / "mind" / "behaviors.tsv"
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    return list(mind_behavior_events(path, "mind", SPACING_S)), rows


def test_behaviors_counts(behaviors: tuple[list[Keyed | Malformed], list[list[str]]]) -> None:
    items, rows = behaviors
    assert not [i for i in items if isinstance(i, Malformed)]
    recs = [i.record for i in items if isinstance(i, Keyed)]
    kinds = Counter((r["type"], r["origin"]) for r in recs)
    shown = sum(len(r[4].split()) for r in rows)
    clicked = sum(e.endswith("-1") for r in rows for e in r[4].split())
    first_history: dict[str, list[str]] = {}
    for r in rows:
        first_history.setdefault(r[1], r[3].split())
    assert kinds[("impression", "live")] == shown == 189_359
    assert kinds[("click", "live")] == clicked == 7_542
    assert kinds[("click", "history")] == sum(len(h) for h in first_history.values())
    assert len(first_history) == 4_637
    assert {r["user_id"] for r in recs} == set(first_history)
    hist_users = {r["user_id"] for r in recs if r["origin"] == "history"}
    assert hist_users == {u for u, h in first_history.items() if h}
    assert len(kinds) == 3
    assert len({r["event_id"] for r in recs}) == len(recs)
    assert all(i.key == i.record["user_id"] for i in items if isinstance(i, Keyed))


def test_behaviors_history_timing_and_order(
    behaviors: tuple[list[Keyed | Malformed], list[list[str]]],
) -> None:
    items, rows = behaviors
    recs = [i.record for i in items if isinstance(i, Keyed)]
    first_time: dict[str, datetime] = {}
    first_history: dict[str, list[str]] = {}
    for row in rows:
        t = datetime.strptime(row[2], "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC)
        first_time[row[1]] = min(t, first_time.get(row[1], t))
        first_history.setdefault(row[1], row[3].split())
    hist: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen_impression: set[str] = set()
    for r in recs:
        u = r["user_id"]
        if r["origin"] == "history":
            assert u not in seen_impression, "history must come before the user's impressions"
            hist[u].append(r)
        else:
            seen_impression.add(u)
    assert SPACING_S > 0
    for u, events in hist.items():
        assert [e["source_item_id"] for e in events] == first_history[u]  # once, in order
        times = [e["occurred_at"] for e in events]
        assert all(a < b for a, b in itertools.pairwise(times))
        assert times[-1] < first_time[u]  # strictly before every impression of the user
        assert times[-1] == first_time[u] - timedelta(seconds=SPACING_S)
        for i, e in enumerate(events):
            assert e["event_id"] == ids.event_id("mind-history", u, e["source_item_id"], i)
            assert e["content_id"] == ids.content_id("mind", e["source_item_id"])
            assert e["impression_id"] is None and e["position"] is None


def test_behaviors_live_events_follow_file_order(
    behaviors: tuple[list[Keyed | Malformed], list[list[str]]],
) -> None:
    items, rows = behaviors
    live = [i.record for i in items if isinstance(i, Keyed) and i.record["origin"] == "live"]
    order = [r["impression_id"] for r in live if r["type"] == "impression"]
    dedup = [imp for k, imp in enumerate(order) if k == 0 or order[k - 1] != imp]
    assert dedup == [r[0] for r in rows if r[4].split()]
    by_row = {r[0]: r for r in rows}
    prev: dict[str, Any] | None = None
    for r in live:
        row = by_row[r["impression_id"]]
        entry = row[4].split()[r["position"]]
        assert entry.rsplit("-", 1)[0] == r["source_item_id"]
        assert r["occurred_at"] == datetime.strptime(row[2], "%m/%d/%Y %I:%M:%S %p").replace(
            tzinfo=UTC
        )
        assert r["event_id"] == ids.event_id(
            "mind", r["impression_id"], r["source_item_id"], r["position"], r["type"]
        )
        if r["type"] == "click":  # right after its impression, entry labelled 1
            assert entry.endswith("-1")
            assert prev is not None and prev["type"] == "impression"
            assert prev["position"] == r["position"]
        prev = r


def test_behaviors_encode_fast_path_matches_codec(
    behaviors: tuple[list[Keyed | Malformed], list[list[str]]],
) -> None:
    items, _ = behaviors
    recs = [i.record for i in items if isinstance(i, Keyed)]
    c = codec("ReaderEvent")
    enc = ReaderEventEncoder(verify_first=0, verify_every=0)
    assert enc.fast
    for r in recs:
        assert enc.encode(r) == c.encode(r), r["event_id"]
    assert enc.fallbacks == 0
    for r in recs[::5000]:
        assert c.decode(c.encode(r)) == r


def test_reader_encoder_edge_values() -> None:
    c = codec("ReaderEvent")
    enc = ReaderEventEncoder(verify_first=10**9)  # verifies every record against the codec
    base = {
        "event_id": "e" * 64,
        "type": "click",
        "user_id": "Ü-ser ☃",
        "content_id": "c" * 64,
        "source_item_id": None,
        "occurred_at": datetime(1960, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC),
        "impression_id": None,
        "position": None,
        "dwell_ms": -5,
        "origin": "live",
    }
    variants = [
        base,
        {**base, "position": 5000, "dwell_ms": 2**40, "impression_id": "x" * 300},
        {**base, "position": -3, "event_id": "short", "source_item_id": ""},
    ]
    for v in variants:
        assert enc.encode(v) == c.encode(v)
    naive = {**base, "occurred_at": datetime(2019, 11, 12)}  # not tz-aware: codec path
    enc.encode(naive)
    assert enc.fallbacks == 1
    assert zigzag_varint(0) == b"\x00" and zigzag_varint(-1) == b"\x01"
    assert zigzag_varint(64) == b"\x80\x01"


def test_behaviors_malformed_rows_are_marked(tmp_path: Path) -> None:
    path = tmp_path / "behaviors.tsv"
    good = "1\tU1\t11/12/2019 2:14:46 PM\tN1 N2\tN3-1 N4-0"
    path.write_text(
        "\n".join(
            [
                good,
                "2\tU2\tnot a time\tN1\tN3-0",
                "3\tU3\t11/12/2019 2:14:46 PM\tN1",
                "4\tU1\t11/11/2019 1:00:00 AM\t\tN3-2",
                "5\tU1\t11/13/2019 1:00:00 AM\tN1 N2\tN5-0",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    items = list(mind_behavior_events(path, "mind", 60))
    bad = [i for i in items if isinstance(i, Malformed)]
    assert [(b.code, b.key, b.origin.rsplit(":", 1)[1]) for b in bad] == [
        ("bad_time", "U2", "2"),
        ("bad_columns", None, "3"),
        ("bad_label", "U1", "4"),
    ]
    assert bad[1].raw == b"3\tU3\t11/12/2019 2:14:46 PM\tN1"
    ok = [i.record for i in items if isinstance(i, Keyed)]
    # U1: history N1, N2 once; impressions of rows 1 and 5 (row 4 rejected whole)
    assert [(r["type"], r["source_item_id"], r["origin"]) for r in ok] == [
        ("click", "N1", "history"),
        ("click", "N2", "history"),
        ("impression", "N3", "live"),
        ("click", "N3", "live"),
        ("impression", "N4", "live"),
        ("impression", "N5", "live"),
    ]
    # the rejected row 4 is not an anchor: history sits before row 1 (12 Nov 14:14:46)
    assert ok[1]["occurred_at"] == datetime(2019, 11, 12, 14, 13, 46, tzinfo=UTC)


# -- sources and the connector (no Kafka: items only) -------------------------------------
def test_topology_sources_resolve_and_encode(data_dir: Path) -> None:
    topo = topology()
    totals: dict[str, int] = {}
    for spec in topo.sources:
        conn = ReplayConnector(spec, data_dir, topo.topics, spacing_s=SPACING_S)
        if spec.kind == "mind.behaviors":
            assert conn.topic == "reader.events" and conn.dlq == "reader.events.dlq"
            continue  # covered above
        assert conn.topic == "cms.raw"
        items = list(conn.items())
        assert all(isinstance(i, Keyed) for i in items)
        _roundtrip("RawCmsEvent", [i.record for i in items if isinstance(i, Keyed)])
        totals[spec.name] = len(items)
    assert totals["mind"] == 2000
    assert totals["frontity-wp"] == 9
    assert totals["umami-drupal"] == 8 + 1 + 4
    assert totals["feeds-realworld"] == len(list((data_dir / "feeds/realworld").iterdir()))
    assert totals["feeds-edge"] == len(list((data_dir / "feeds/edge_cases").iterdir()))


def test_source_files_errors(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.xml").write_bytes(b"<rss/>")
    (tmp_path / "d" / "a.xml").write_bytes(b"<rss/>")
    (tmp_path / "d" / ".hidden").write_bytes(b"")
    spec = SourceSpec(name="s", kind="feed.document", brand="b", path="d", glob="*")
    assert [p.name for p in source_files(spec, tmp_path)] == ["a.xml", "b.xml"]
    with pytest.raises(FileNotFoundError):
        source_files(spec.model_copy(update={"glob": "*.json"}), tmp_path)
    with pytest.raises(FileNotFoundError):
        source_files(spec.model_copy(update={"glob": None, "files": ["nope.xml"]}), tmp_path)
    with pytest.raises(FileNotFoundError):
        source_files(spec.model_copy(update={"glob": None, "path": "missing.tsv"}), tmp_path)
    assert target_topic("mind.behaviors") == "reader.events"
    assert target_topic("drupal.jsonapi") == "cms.raw"


# -- producer and base (real librdkafka, no broker) --------------------------------------
def test_producer_settings_and_undeliverable_raises() -> None:
    # Nothing listens on port 9 (discard) here: every message times out and flush must raise.
    prod = IdempotentProducer("127.0.0.1:9", config={"message.timeout.ms": 300, "log_level": 0})
    assert prod.config["enable.idempotence"] is True
    assert prod.config["acks"] == "all"
    assert prod.config["partitioner"] == "murmur2_random"
    assert prod.config["compression.type"] == "lz4"
    for n in range(3):
        prod.produce("t", b"k", b"v%d" % n)
    with pytest.raises(DeliveryError, match="failed delivery"):
        prod.flush(10)
    assert prod.failed == 3 and prod.acked == 0 and prod.errors


class _Tiny(Connector):
    def run(self) -> ConnectorMetrics:
        return self.metrics


def test_cursor_roundtrip_and_metrics(tmp_path: Path) -> None:
    conn = _Tiny("tiny", cursor_path=tmp_path / "state" / "cursor.json")
    assert conn.load_cursor() is None
    conn.save_cursor({"modified_after": "2024-01-01T00:00:00Z", "page": 3})
    assert conn.load_cursor() == {"modified_after": "2024-01-01T00:00:00Z", "page": 3}
    (tmp_path / "state" / "cursor.json").write_bytes(b"[1]")
    with pytest.raises(ValueError):
        conn.load_cursor()
    with pytest.raises(RuntimeError):
        conn.produce("t", None, b"")  # setup() not called
    m = ConnectorMetrics(published=10, elapsed_s=2.0)
    m.reject("bad_time")
    m.reject("bad_time")
    assert m.rate == 5.0 and m.rejected_total == 2
    assert m.as_dict()["rejected"] == {"bad_time": 2}
