"""Schema evolution (feedpipe.wire.compat): optional fields are accepted and round-trip between old
and new code through the real codec; breaking changes are refused; the working tree's schemas
are checked against a git ref (``FEEDPIPE_SCHEMA_BASE_REF``, default HEAD), so an in-place or
breaking edit of a ``schemas/*.avsc`` fails this test."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from feedpipe.settings import settings
from feedpipe.wire.codec import SCHEMA_DIR, AvroCodec, Registry
from feedpipe.wire.compat import (
    Snapshot,
    at_ref,
    check_pair,
    check_registry,
    load_snapshot,
    minimal_record,
    working_tree,
)

TREE = working_tree()
SUBJECTS = sorted(TREE.latest)
NEW_ID = 100


def _raw(subject: str) -> dict[str, Any]:
    """The .avsc JSON of ``subject`` (as in the file, unparsed)."""
    _, name, _, _ = TREE.by_id[TREE.latest[subject]]
    doc: dict[str, Any] = orjson.loads((SCHEMA_DIR / name).read_bytes())
    return doc


def _required(doc: dict[str, Any]) -> dict[str, Any]:
    """The first field without a default."""
    return next(f for f in doc["fields"] if "default" not in f)


def _check(subject: str, new_doc: dict[str, Any]) -> set[str]:
    """Directions in which ``new_doc`` breaks ``subject`` (compared with the working tree)."""
    named = dict(TREE.named)
    import fastavro

    new = fastavro.parse_schema(new_doc, named_schemas=named)
    found = check_pair(subject, TREE.parsed(subject), new, old_named=TREE.named, new_named=named)
    return {i.direction for i in found}


def _with_optional_field(doc: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(doc)
    new["fields"].append(
        {"name": "added_later", "type": ["null", "string"], "default": None, "doc": "test"}
    )
    return new


@pytest.mark.parametrize("subject", SUBJECTS)
def test_optional_field_is_compatible_both_ways(subject: str) -> None:
    assert _check(subject, _with_optional_field(_raw(subject))) == set()


@pytest.mark.parametrize("subject", SUBJECTS)
def test_new_required_field_breaks_backward(subject: str) -> None:
    new = copy.deepcopy(_raw(subject))
    new["fields"].append({"name": "added_later", "type": "string"})
    assert "backward" in _check(subject, new)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_removed_field_without_default_breaks_forward(subject: str) -> None:
    new = copy.deepcopy(_raw(subject))
    gone = _required(new)
    new["fields"] = [f for f in new["fields"] if f is not gone]
    assert "forward" in _check(subject, new)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_type_change_breaks_both_ways(subject: str) -> None:
    new = copy.deepcopy(_raw(subject))
    f = _required(new)
    f["type"] = "string" if f["type"] == "boolean" else "boolean"
    assert _check(subject, new) == {"backward", "forward"}


@pytest.mark.parametrize("subject", SUBJECTS)
def test_renamed_record_breaks_both_ways(subject: str) -> None:
    new = copy.deepcopy(_raw(subject))
    new["name"] = new["name"] + "V2"
    assert _check(subject, new) == {"backward", "forward"}


def test_type_promotion_is_accepted() -> None:
    # Avro promotes int -> long (backward); long data read as int is refused (forward)
    old = {"type": "record", "name": "P", "fields": [{"name": "n", "type": "int"}]}
    new = {"type": "record", "name": "P", "fields": [{"name": "n", "type": "long"}]}
    import fastavro

    found = check_pair("P", fastavro.parse_schema(old), fastavro.parse_schema(new))
    assert {i.direction for i in found} == {"forward"}


def _registry_dir(tmp: Path, subject: str, new_doc: dict[str, Any], new_last: bool) -> Path:
    """A copy of schemas/ with ``new_doc`` registered as id NEW_ID: after the old row
    (``new_last``: new code, writes the new version) or before it (old code that knows the
    new id but still reads and writes the old version)."""
    d = tmp / ("new" if new_last else "old")
    shutil.copytree(SCHEMA_DIR, d)
    (d / "added.avsc").write_bytes(orjson.dumps(new_doc))
    index = orjson.loads((d / "registry.json").read_bytes())
    row = {"id": NEW_ID, "subject": subject, "file": "added.avsc"}
    rows = index["schemas"]
    at = max(i for i, r in enumerate(rows) if r["subject"] == subject)  # its newest row
    rows.insert(at + 1 if new_last else at, row)
    (d / "registry.json").write_bytes(orjson.dumps(index))
    return d


@pytest.mark.parametrize("subject", SUBJECTS)
def test_optional_field_round_trips_through_the_codec(tmp_path: Path, subject: str) -> None:
    new_doc = _with_optional_field(_raw(subject))
    old_codec = AvroCodec(subject, Registry(_registry_dir(tmp_path, subject, new_doc, False)))
    new_codec = AvroCodec(subject, Registry(_registry_dir(tmp_path, subject, new_doc, True)))
    assert new_codec.schema_id == NEW_ID and old_codec.schema_id != NEW_ID
    rec = minimal_record(TREE.parsed(subject), TREE.named)
    # old data, new code: the added field takes its default
    assert new_codec.decode(old_codec.encode(rec)) == {**rec, "added_later": None}
    # new data, old code: the added field is skipped
    assert old_codec.decode(new_codec.encode({**rec, "added_later": "x"})) == rec


def _edited(snap_dir: Path, subject: str, edit: Any) -> Snapshot:
    doc = _raw(subject)
    edit(doc)
    _, name, _, _ = TREE.by_id[TREE.latest[subject]]
    d = snap_dir / "edited"
    shutil.copytree(SCHEMA_DIR, d)
    (d / name).write_bytes(orjson.dumps(doc))
    return load_snapshot(lambda n: (d / n).read_bytes())


def test_in_place_edit_of_a_registered_id_is_refused(tmp_path: Path) -> None:
    # even a compatible change must get a new id: old records carry the old id
    edited = _edited(tmp_path, "feedpipe.ReaderEvent", lambda d: d.update(_with_optional_field(d)))
    found = check_registry(TREE, edited)
    assert [i.direction for i in found] == ["id_changed"]
    assert "new row" in found[0].reason


def test_doc_only_edit_is_accepted(tmp_path: Path) -> None:
    edited = _edited(tmp_path, "feedpipe.ReaderEvent", lambda d: d.update(doc="reworded"))
    assert check_registry(TREE, edited) == []


def test_breaking_edit_is_refused_by_the_registry_check(tmp_path: Path) -> None:
    def drop_required(d: dict[str, Any]) -> None:
        gone = _required(d)
        d["fields"] = [f for f in d["fields"] if f is not gone]

    found = check_registry(TREE, _edited(tmp_path, "feedpipe.Content", drop_required))
    assert {i.direction for i in found} >= {"forward", "id_changed"}


def test_working_tree_is_compatible_with_the_base_ref() -> None:
    ref = settings().schema_base_ref
    problems = check_registry(at_ref(ref), TREE)
    assert problems == [], "\n".join(map(str, problems))


def test_cli_schemas_check() -> None:
    from typer.testing import CliRunner

    from ops.cli import cli

    ok = CliRunner().invoke(cli, ["schemas", "check", "--against", "HEAD"])
    assert ok.exit_code == 0 and "compatible" in ok.output
    bad = CliRunner().invoke(cli, ["schemas", "check", "--against", "no-such-ref-xyz"])
    assert bad.exit_code == 1 and "no-such-ref-xyz" in bad.output
