"""Schema evolution checks for ``schemas/*.avsc`` (the local registry of
:mod:`feedpipe.wire.codec`).

Two schema versions are compatible when data written with either one can be read with the other
through Avro schema resolution (Avro 1.11 specification, "Schema Resolution"), checked *by
fastavro's own resolution* rather than by a hand-written rule engine:

* **backward**: records written with the old schema are read with the new one as reader schema
  (new code reads what is already on the topics; a compacted topic keeps old records forever);
* **forward**: records written with the new schema are read with the old one (old code, still
  running during a rolling deploy, reads what new producers write).

For each direction :func:`check_pair` generates ``samples`` records from the writer schema with
``fastavro.utils.gen_data`` (seeded, so the check is deterministic; every union branch and enum
symbol is reached with probability 1 - 2**-samples for a two-branch union), encodes them with
``fastavro.schemaless_writer`` and decodes them with ``fastavro.schemaless_reader(writer,
reader)``. A :class:`fastavro.read.SchemaResolutionError` (or any read error) is an
incompatibility. That catches: a new field without a default (backward), a removed field that
has no default in the old schema (forward), a type change that is not an Avro promotion
(int->long->float->double, string<->bytes), and a renamed record (fastavro compares unqualified
names and aliases). Adding an optional field (a union with ``null`` first and ``"default":
null``, or any field with a default) passes both ways.

Registry rule (:func:`check_registry`): a schema id is immutable. The codec decodes a record with
the schema its id names, so changing the file behind an existing id in place makes every record
already written with that id unreadable (the bytes no longer match). A new version of a subject is
registered as a *new row* (new id, new file) after the old row in ``schemas/registry.json``; the
codec then writes the newest row of each subject and resolves older ids against it.

Errors: :class:`SchemaCheckError` when a snapshot cannot be read (missing file, bad JSON, a schema
fastavro refuses, an unknown git ref).
"""

from __future__ import annotations

import io
import random
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.utils import gen_data

from feedpipe.errors import FeedpipeError
from feedpipe.wire.codec import SCHEMA_DIR

REPO_ROOT = SCHEMA_DIR.parent
SAMPLES = 64
"""Records generated per direction by :func:`check_pair` (see the module docstring)."""


class SchemaCheckError(FeedpipeError):
    """A registry snapshot could not be loaded (the message names the file or ref)."""


@dataclass(frozen=True)
class Incompatibility:
    """One compatibility failure.

    Attributes:
        subject: Avro full name, e.g. ``feedpipe.ReaderEvent``.
        direction: ``backward`` (old data, new reader), ``forward`` (new data, old reader),
            ``id_changed`` (the schema of an existing id changed in place) or ``removed``.
        reason: what fastavro said, or what the registry rule found.
    """

    subject: str
    direction: str
    reason: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.direction}: {self.reason}"


@dataclass
class Snapshot:
    """The schemas of one registry version (the working tree or a git ref).

    Attributes:
        by_id: schema id -> (subject, file name, parsed schema, parsing canonical form).
        latest: subject -> id of its newest row (the one the codec writes).
        named: fastavro named types of the snapshot (for schemas that reference others).
    """

    by_id: dict[int, tuple[str, str, Any, str]] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)
    named: dict[str, Any] = field(default_factory=dict)

    def parsed(self, subject: str) -> Any:
        """The newest parsed schema of ``subject``; KeyError if unknown."""
        return self.by_id[self.latest[subject]][2]


def load_snapshot(read: Callable[[str], bytes]) -> Snapshot:
    """Parse a registry given a reader of its files (``registry.json`` and each ``.avsc``).

    Args:
        read: file name (relative to ``schemas/``) -> bytes; raises OSError or
            :class:`SchemaCheckError` when missing.

    Raises:
        SchemaCheckError: unreadable file, bad JSON, or a schema fastavro does not parse.
    """
    snap = Snapshot()
    try:
        index = orjson.loads(read("registry.json"))
        rows = [(int(r["id"]), str(r["subject"]), str(r["file"])) for r in index["schemas"]]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SchemaCheckError(f"registry.json: {exc}") from exc
    for sid, subject, name in rows:
        try:
            raw = orjson.loads(read(name))
            parsed = fastavro.parse_schema(raw, named_schemas=snap.named)
            canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SchemaCheckError(f"{name}: {exc}") from exc
        except Exception as exc:  # fastavro raises several types for bad schemas
            raise SchemaCheckError(f"{name}: {exc}") from exc
        snap.by_id[sid] = (subject, name, parsed, canonical)
        snap.latest[subject] = sid
    return snap


def working_tree(schema_dir: Path = SCHEMA_DIR) -> Snapshot:
    """The registry in ``schema_dir`` (default: the checkout's ``schemas/``).

    Raises:
        SchemaCheckError: see :func:`load_snapshot`.
    """
    return load_snapshot(lambda name: (schema_dir / name).read_bytes())


def at_ref(ref: str, repo: Path = REPO_ROOT, folder: str = "schemas") -> Snapshot:
    """The registry as committed at git ``ref`` (``git show <ref>:schemas/<file>``).

    Raises:
        SchemaCheckError: git fails (unknown ref, file absent at that ref) or a schema is bad.
    """

    def read(name: str) -> bytes:
        proc = subprocess.run(
            ["git", "show", f"{ref}:{folder}/{name}"],
            cwd=repo,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip()
            raise SchemaCheckError(f"git show {ref}:{folder}/{name}: {msg}")
        return proc.stdout

    return load_snapshot(read)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the global ``random`` that ``fastavro.utils.gen_data`` uses; restore it after."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _reads(
    writer: Any, reader: Any, named: Mapping[str, Any], samples: int, seed: int
) -> str | None:
    """None when ``samples`` records of ``writer`` all resolve against ``reader``, else why not."""
    with _seeded(seed):
        records = [gen_data(writer, dict(named)) for _ in range(samples)]
    for rec in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, rec)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # SchemaResolutionError, or a read error of bad resolution
            return f"{type(exc).__name__}: {exc}"
    return None


def check_pair(
    subject: str,
    old: Any,
    new: Any,
    *,
    old_named: Mapping[str, Any] | None = None,
    new_named: Mapping[str, Any] | None = None,
    samples: int = SAMPLES,
    seed: int = 0,
) -> list[Incompatibility]:
    """Backward and forward compatibility of two parsed schemas of ``subject``.

    Args:
        subject: name used in the reported incompatibilities.
        old / new: ``fastavro.parse_schema`` results.
        old_named / new_named: named types each schema references (``Snapshot.named``).
        samples: records generated per direction; seed: their random seed.

    Returns:
        The incompatibilities found (empty: compatible both ways).
    """
    out = []
    why = _reads(old, new, old_named or {}, samples, seed)
    if why:
        out.append(Incompatibility(subject, "backward", f"old records, new reader: {why}"))
    why = _reads(new, old, new_named or {}, samples, seed)
    if why:
        out.append(Incompatibility(subject, "forward", f"new records, old reader: {why}"))
    return out


def check_registry(old: Snapshot, new: Snapshot, samples: int = SAMPLES) -> list[Incompatibility]:
    """Compare two registry snapshots (old = e.g. a git ref, new = the working tree).

    Checks: every subject of ``old`` still exists in ``new``; the newest schemas of each subject
    are compatible both ways (:func:`check_pair`); every id of ``old`` still names a schema of
    the same subject with the same parsing canonical form (ids are immutable).
    """
    out: list[Incompatibility] = []
    for subject in old.latest:
        if subject not in new.latest:
            out.append(Incompatibility(subject, "removed", "subject no longer in registry.json"))
            continue
        out += check_pair(
            subject,
            old.parsed(subject),
            new.parsed(subject),
            old_named=old.named,
            new_named=new.named,
            samples=samples,
        )
    for sid, (subject, name, _, canonical) in old.by_id.items():
        now = new.by_id.get(sid)
        if now is None:
            out.append(Incompatibility(subject, "removed", f"id {sid} ({name}) was removed"))
        elif now[0] != subject or now[3] != canonical:
            out.append(
                Incompatibility(
                    subject,
                    "id_changed",
                    f"id {sid} ({name}) changed in place; records already written with id {sid} "
                    "would no longer decode: register the new version as a new row (new id)",
                )
            )
    return out


def minimal_record(parsed: Any, named: Mapping[str, Any]) -> dict[str, Any]:
    """A valid record of a parsed record schema with the smallest values: null for unions
    holding null, "" / b"" / 0 / False, empty arrays and maps, the first enum symbol,
    2024-01-01T00:00Z for timestamps; named types are looked up in ``named``.

    Raises:
        ValueError: the result does not validate (a schema construct this builder lacks).
    """
    prim: dict[str, Any] = {
        "string": "",
        "bytes": b"",
        "int": 0,
        "long": 0,
        "float": 0.0,
        "double": 0.0,
        "boolean": False,
        "null": None,
    }

    def value(t: Any) -> Any:
        if isinstance(t, list):
            return None if "null" in t else value(t[0])
        if isinstance(t, str):
            return prim[t] if t in prim else value(named[t])
        if str(t.get("logicalType", "")).startswith("timestamp"):
            return datetime(2024, 1, 1, tzinfo=UTC)
        kind = t["type"]
        if kind in ("record", "error"):
            return {f["name"]: value(f["type"]) for f in t["fields"]}
        if kind == "array":
            return []
        if kind == "map":
            return {}
        if kind == "enum":
            return t["symbols"][0]
        if kind == "fixed":
            return b"\0" * int(t["size"])
        return value(kind)

    rec = value(parsed)
    if not isinstance(rec, dict) or not fastavro.validation.validate(
        rec, parsed, raise_errors=False
    ):
        raise ValueError(f"cannot build a minimal record of {parsed.get('name')}")
    return rec
