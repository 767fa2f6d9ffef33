"""connectors.cdc: Debezium envelopes -> wordpress.post RawCmsEvents (pure, no Kafka).

The four real files in ``<data>/cdc`` are Debezium envelopes of the tutorial
``inventory.customers`` table (see their PROVENANCE.md): they must parse structurally in every
shape and then be rejected as not ``wp_posts``. The ``wp_posts`` envelopes are synthetic rows
written here in the same shapes.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.cdc.debezium import Change, Skip, date_value, epoch_to_iso, parse_change
from connectors.cdc.wp_posts import cdc_to_raw_event, row_to_post
from feedpipe import ids
from feedpipe.errors import RejectedInput
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.normalisers import normalise

SOURCE, BRAND = "blog-cdc", "frontity"
CDC_FILES = {
    "debezium__serde-with-schema.json": ("envelope+schema", "c"),
    "debezium__serde-without-schema.json": ("envelope", "c"),
    "debezium__serde-update.json": ("envelope", "u"),
    "debezium__serde-unwrapped.json": ("row", "u"),
}

# 2024-03-05 10:20:30 UTC and 2024-03-06 08:00:00.123456 UTC
DATE_MS = 1709634030000
MODIFIED_US = 1709712000123456
BODY = "<!-- wp:paragraph --><p>Body of <b>the</b> post.</p><!-- /wp:paragraph -->"


@pytest.fixture(scope="module")
def cdc_dir(data_dir: Path) -> Path:
    path = data_dir / "cdc"
    missing = [f for f in CDC_FILES if not (path / f).is_file()]
    if missing:
        pytest.fail(f"shared CDC files missing in {path}: {missing}")
    return path


def wp_row(**over: Any) -> dict[str, Any]:
    """A synthetic wp_posts row (MySQL column names), dates as epoch ms (Debezium Timestamp)."""
    row: dict[str, Any] = {
        "ID": 42,
        "post_author": 3,
        "post_date": DATE_MS,
        "post_date_gmt": DATE_MS,
        "post_content": BODY,
        "post_title": "Hello &amp; welcome",
        "post_excerpt": "<p>Short.</p>",
        "post_status": "publish",
        "comment_status": "open",
        "post_name": "hello-welcome",
        "post_modified": MODIFIED_US // 1000,
        "post_modified_gmt": MODIFIED_US // 1000,
        "post_parent": 0,
        "guid": "https://blog.example.org/?p=42",
        "post_type": "post",
        "post_mime_type": "",
    }
    row.update(over)
    return row


SOURCE_BLOCK = {
    "version": "2.7.0.Final",
    "connector": "mysql",
    "name": "cdc.wordpress",
    "ts_ms": 1709712000000,
    "snapshot": "false",
    "db": "wordpress",
    "table": "wp_posts",
    "server_id": 1,
    "file": "mysql-bin.000003",
    "pos": 154,
    "row": 0,
}


def envelope(op: str, before: Any, after: Any, **source: Any) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": {**SOURCE_BLOCK, **source},
        "op": op,
        "ts_ms": 1709712000500,
    }


def row_schema(modified_name: str = "io.debezium.time.Timestamp") -> dict[str, Any]:
    def col(name: str, typ: str, logical: str | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"type": typ, "optional": True, "field": name}
        if logical:
            f["name"] = logical
        return f

    return {
        "type": "struct",
        "optional": True,
        "name": "cdc.wordpress.wordpress.wp_posts.Value",
        "fields": [
            col("ID", "int64"),
            col("post_author", "int64"),
            col("post_date_gmt", "int64", "io.debezium.time.Timestamp"),
            col("post_content", "string"),
            col("post_title", "string"),
            col("post_excerpt", "string"),
            col("post_status", "string"),
            col("post_name", "string"),
            col("post_modified_gmt", "int64", modified_name),
            col("guid", "string"),
            col("post_type", "string"),
        ],
    }


def with_schema(payload: dict[str, Any], modified_name: str) -> dict[str, Any]:
    rs = row_schema(modified_name)
    return {
        "schema": {
            "type": "struct",
            "name": "cdc.wordpress.wordpress.wp_posts.Envelope",
            "optional": False,
            "fields": [
                {**rs, "field": "before"},
                {**rs, "field": "after"},
                {"type": "struct", "fields": [], "optional": False, "field": "source"},
                {"type": "string", "optional": False, "field": "op"},
                {"type": "int64", "optional": True, "field": "ts_ms"},
            ],
        },
        "payload": payload,
    }


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


def event_of(result: Any) -> tuple[str, dict[str, Any]]:
    assert not isinstance(result, Skip), result
    key, event = result
    codec("RawCmsEvent").encode(event)  # fits the schema
    return key, event


# -- the real shared files: structure parses, table is rejected ------------------------------
@pytest.mark.parametrize("name", sorted(CDC_FILES))
def test_real_files_parse_structurally(cdc_dir: Path, name: str) -> None:
    shape, op = CDC_FILES[name]
    change = parse_change((cdc_dir / name).read_bytes())
    assert isinstance(change, Change)
    assert (change.shape, change.op) == (shape, op)
    assert change.row is not None
    assert change.row["id"] == 1004
    assert change.row["first_name"] == "Anne"
    if shape.startswith("envelope"):
        assert change.table == "inventory.customers"
        assert change.ts_ms == 1465491411815
    if name == "debezium__serde-update.json":
        assert change.before is not None and change.before["first_name"] == "Anne-Marie"
    if name == "debezium__serde-without-schema.json":
        assert change.before is None


@pytest.mark.parametrize("name", sorted(CDC_FILES))
def test_real_files_rejected_as_not_wp_posts(cdc_dir: Path, name: str) -> None:
    with pytest.raises(RejectedInput) as exc:
        cdc_to_raw_event((cdc_dir / name).read_bytes(), SOURCE, BRAND)
    assert exc.value.code == "not_wp_posts"
    assert "ID" in exc.value.reason and "first_name" in exc.value.reason
    if CDC_FILES[name][0].startswith("envelope"):
        assert "inventory.customers" in exc.value.reason


def test_real_with_schema_reads_no_logical_types(cdc_dir: Path) -> None:
    change = parse_change((cdc_dir / "debezium__serde-with-schema.json").read_bytes())
    assert isinstance(change, Change)
    assert change.column_types == {}  # customers has no Timestamp columns


# -- synthetic wp_posts envelopes in the three shapes ------------------------------------------
def _shapes() -> dict[str, bytes]:
    after = wp_row()
    env = envelope("c", None, after)
    row_with_schema = {"schema": row_schema(), "payload": after}
    return {
        "envelope+schema": dumps(with_schema(env, "io.debezium.time.Timestamp")),
        "envelope": dumps(env),
        "row": dumps(after),
        "row+schema": dumps(row_with_schema),
    }


@pytest.mark.parametrize("shape", ["envelope+schema", "envelope", "row", "row+schema"])
def test_wp_posts_shapes_map_to_the_same_post(shape: str) -> None:
    message = _shapes()[shape]
    change = parse_change(message)
    assert isinstance(change, Change) and change.shape == shape
    key, event = event_of(cdc_to_raw_event(message, SOURCE, BRAND))
    assert key == f"{SOURCE}:42"
    assert event["kind"] == "wordpress.post"
    assert event["op"] == "upsert"
    assert event["source"] == SOURCE and event["brand"] == BRAND
    assert event["source_id"] == "42"
    assert event["content_type"] == "application/json"
    post = orjson.loads(event["payload"])
    assert post == {
        "id": 42,
        "date_gmt": "2024-03-05T10:20:30",
        "modified_gmt": "2024-03-06T08:00:00",
        "status": "publish",
        "type": "post",
        "slug": "hello-welcome",
        "author": 3,
        "link": "https://blog.example.org/?p=42",
        "title": {"rendered": "Hello &amp; welcome"},
        "content": {"rendered": BODY},
        "excerpt": {"rendered": "<p>Short.</p>"},
    }
    digest = hashlib.sha256(event["payload"]).hexdigest()
    assert event["event_id"] == ids.event_id(SOURCE, "42", "upsert", digest)


def test_shapes_give_identical_payloads() -> None:
    payloads = {
        shape: event_of(cdc_to_raw_event(m, SOURCE, BRAND))[1]["payload"]
        for shape, m in _shapes().items()
    }
    assert len(set(payloads.values())) == 1


def test_normaliser_reads_the_mapped_post() -> None:
    _, event = event_of(cdc_to_raw_event(_shapes()["envelope"], SOURCE, BRAND))
    decoded = codec("RawCmsEvent").decode(codec("RawCmsEvent").encode(event))
    [content] = normalise(decoded, topology())
    assert content["title"] == "Hello & welcome"
    assert content["body"].strip() == "Body of the post."
    assert content["status"] == "published"
    assert content["url"] == "https://blog.example.org/?p=42"
    assert content["published_at"] == datetime(2024, 3, 5, 10, 20, 30, tzinfo=UTC)
    assert content["content_id"] == ids.content_id(SOURCE, "42")


def test_snapshot_read_is_an_upsert() -> None:
    message = dumps(envelope("r", None, wp_row(), snapshot="true"))
    _, event = event_of(cdc_to_raw_event(message, SOURCE, BRAND))
    assert event["op"] == "upsert"


def test_update_to_draft_is_a_delete() -> None:
    message = dumps(envelope("u", wp_row(), wp_row(post_status="draft")))
    _, event = event_of(cdc_to_raw_event(message, SOURCE, BRAND))
    assert event["op"] == "delete"
    [content] = normalise(
        codec("RawCmsEvent").decode(codec("RawCmsEvent").encode(event)), topology()
    )
    assert content["status"] == "unpublished"


@pytest.mark.parametrize("status", ["future", "private", "trash", "pending", "auto-draft"])
def test_non_publish_statuses_are_deletes(status: str) -> None:
    message = dumps(envelope("u", None, wp_row(post_status=status)))
    assert event_of(cdc_to_raw_event(message, SOURCE, BRAND))[1]["op"] == "delete"


def test_delete_uses_before() -> None:
    message = dumps(envelope("d", wp_row(ID=77), None))
    key, event = event_of(cdc_to_raw_event(message, SOURCE, BRAND))
    assert key == f"{SOURCE}:77" and event["op"] == "delete" and event["source_id"] == "77"
    assert orjson.loads(event["payload"])["id"] == 77


def test_delete_and_update_with_same_image_have_distinct_event_ids() -> None:
    row = wp_row()
    upd = event_of(cdc_to_raw_event(dumps(envelope("u", None, row)), SOURCE, BRAND))[1]
    dele = event_of(cdc_to_raw_event(dumps(envelope("d", row, None)), SOURCE, BRAND))[1]
    assert upd["payload"] == dele["payload"]
    assert upd["event_id"] != dele["event_id"]


def test_delete_without_before_is_rejected() -> None:
    with pytest.raises(RejectedInput) as exc:
        cdc_to_raw_event(dumps(envelope("d", None, None)), SOURCE, BRAND)
    assert exc.value.code == "invalid_envelope" and "before" in exc.value.reason


def test_unwrapped_rows_read_op_and_deleted_fields() -> None:
    deleted = dumps({**wp_row(), "__deleted": "true", "__op": "d"})
    _, event = event_of(cdc_to_raw_event(deleted, SOURCE, BRAND))
    assert event["op"] == "delete"
    assert "__deleted" not in orjson.loads(event["payload"])
    created = dumps({**wp_row(), "__deleted": "false", "__op": "c"})
    assert event_of(cdc_to_raw_event(created, SOURCE, BRAND))[1]["op"] == "upsert"
    snap = dumps({**wp_row(), "__op": "r"})
    assert event_of(cdc_to_raw_event(snap, SOURCE, BRAND))[1]["op"] == "upsert"


def test_micro_timestamps_from_schema() -> None:
    row = wp_row(post_modified_gmt=MODIFIED_US)
    message = dumps(with_schema(envelope("u", None, row), "io.debezium.time.MicroTimestamp"))
    change = parse_change(message)
    assert isinstance(change, Change)
    assert change.column_types["post_modified_gmt"] == "io.debezium.time.MicroTimestamp"
    post = orjson.loads(event_of(cdc_to_raw_event(message, SOURCE, BRAND))[1]["payload"])
    assert post["modified_gmt"] == "2024-03-06T08:00:00"
    # the same µs value read as ms is out of range: the schema name matters
    with pytest.raises(OverflowError):
        epoch_to_iso(MODIFIED_US, "io.debezium.time.Timestamp")
    assert date_value(MODIFIED_US, "io.debezium.time.Timestamp") == str(MODIFIED_US)


def test_micro_and_nano_timestamps_without_schema_are_guessed() -> None:
    row = wp_row(post_date_gmt=DATE_MS * 1000, post_modified_gmt=MODIFIED_US * 1000)
    post = orjson.loads(event_of(cdc_to_raw_event(dumps(row), SOURCE, BRAND))[1]["payload"])
    assert post["date_gmt"] == "2024-03-05T10:20:30"
    assert post["modified_gmt"] == "2024-03-06T08:00:00"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-05 10:20:30", "2024-03-05T10:20:30"),
        ("2024-03-05T10:20:30Z", "2024-03-05T10:20:30"),
        ("2024-03-05T12:20:30+02:00", "2024-03-05T10:20:30"),
        ("0000-00-00 00:00:00", None),
        (None, None),
        ("not a date", "not a date"),
    ],
)
def test_string_dates(value: Any, expected: str | None) -> None:
    assert date_value(value) == expected


def test_string_dates_in_rows() -> None:
    row = wp_row(post_date_gmt="2024-03-05 10:20:30", post_modified_gmt="0000-00-00 00:00:00")
    post = row_to_post(row)
    assert post["date_gmt"] == "2024-03-05T10:20:30" and post["modified_gmt"] is None


@pytest.mark.parametrize("post_type", ["page", "revision", "attachment", "nav_menu_item"])
def test_other_post_types_are_skipped(post_type: str) -> None:
    result = cdc_to_raw_event(
        dumps(envelope("c", None, wp_row(post_type=post_type))), SOURCE, BRAND
    )
    assert isinstance(result, Skip) and result.code == "post_type"
    assert post_type in result.reason


def test_configured_post_types_are_published() -> None:
    message = dumps(envelope("c", None, wp_row(post_type="page")))
    result = cdc_to_raw_event(message, SOURCE, BRAND, post_types=("post", "page"))
    assert not isinstance(result, Skip)


def test_tombstones_are_skipped() -> None:
    result = cdc_to_raw_event(None, SOURCE, BRAND)
    assert isinstance(result, Skip) and result.code == "tombstone"
    wrapped = cdc_to_raw_event(b'{"schema": null, "payload": null}', SOURCE, BRAND)
    assert isinstance(wrapped, Skip) and wrapped.code == "tombstone"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "invalid_envelope"),
        (b'"text"', "invalid_envelope"),
        (b'{"schema": {}, "payload": [1]}', "invalid_envelope"),
        (orjson.dumps({"op": "c", "before": None, "after": [1]}), "invalid_envelope"),
        (orjson.dumps({"op": 5, "after": {}}), "invalid_envelope"),
        (orjson.dumps({"op": "x", "after": {}}), "unknown_op"),
        (orjson.dumps({"op": "t", "before": None, "after": None}), "unknown_op"),
        (orjson.dumps({"op": "c", "before": None, "after": None}), "invalid_envelope"),
        (
            orjson.dumps(
                {"op": "c", "after": {"ID": None, "post_type": "post", "post_status": "publish"}}
            ),
            "missing_id",
        ),
        (orjson.dumps({"hello": "world"}), "not_wp_posts"),
    ],
)
def test_invalid_messages_are_rejected_with_a_code(message: bytes, code: str) -> None:
    with pytest.raises(RejectedInput) as exc:
        cdc_to_raw_event(message, SOURCE, BRAND)
    assert exc.value.code == code, exc.value.reason
    assert exc.value.reason


def test_inputs_are_not_mutated() -> None:
    row = wp_row()
    before = copy.deepcopy(row)
    row_to_post(row)
    assert row == before
