"""Debezium change messages (Kafka Connect ``JsonConverter``, with or without schema, full
envelopes or unwrapped rows) and their datetime column values; see :mod:`connectors.cdc`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from feedpipe.errors import RejectedInput

UPSERT_OPS: Final = frozenset({"c", "u", "r"})
US_TIMESTAMP: Final = "io.debezium.time.MicroTimestamp"
NS_TIMESTAMP: Final = "io.debezium.time.NanoTimestamp"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Skip:
    """A message deliberately not published (counted under ``code``): ``tombstone``,
    ``post_type`` (not a configured post type)."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Change:
    """One parsed Debezium message.

    Attributes:
        shape: ``envelope+schema`` | ``envelope`` | ``row+schema`` | ``row``.
        op: Debezium op (c, u, r, d, t, m).
        before / after: row images (None when absent).
        source: the envelope's ``source`` block (empty for rows).
        ts_ms: the envelope's ``ts_ms`` (None when absent).
        column_types: column -> schema logical ``name`` (e.g. ``io.debezium.time.Timestamp``),
            empty without a schema.
    """

    shape: str
    op: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: dict[str, Any] = field(default_factory=dict)
    ts_ms: int | None = None
    column_types: dict[str, str] = field(default_factory=dict)

    @property
    def row(self) -> dict[str, Any] | None:
        """The row image the change is about: ``before`` for a delete, else ``after``."""
        return self.before if self.op == "d" else self.after

    @property
    def table(self) -> str | None:
        """``db.table`` (or ``table``) from the source block, when known."""
        table = self.source.get("table")
        if not isinstance(table, str):
            return None
        db = self.source.get("db")
        return f"{db}.{table}" if isinstance(db, str) and db else table


def _column_types(struct: Any) -> dict[str, str]:
    """column -> logical name of a Connect ``struct`` schema's fields that carry a name."""
    out: dict[str, str] = {}
    if isinstance(struct, dict) and isinstance(struct.get("fields"), list):
        for f in struct["fields"]:
            if isinstance(f, dict) and isinstance(f.get("field"), str) and f.get("name"):
                out[f["field"]] = str(f["name"])
    return out


def _is_envelope(doc: Mapping[str, Any]) -> bool:
    return "op" in doc and ("after" in doc or "before" in doc)


def _row_or_none(value: Any, what: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise RejectedInput("invalid_envelope", f"'{what}' is a JSON {type(value).__name__}, not a row")


def parse_change(message: bytes) -> Change | Skip:
    """Parse one non-null Debezium message value (any accepted shape, any table).

    Returns:
        The :class:`Change`, or :class:`Skip` ``tombstone`` for a schema wrapper whose
        ``payload`` is null.

    Raises:
        RejectedInput: ``invalid_json``, ``invalid_envelope`` (not an object, a non-object
            ``before``/``after``/``payload``, a non-string op, a row image missing for its op),
            ``unknown_op``.
    """
    try:
        doc = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise RejectedInput("invalid_json", f"CDC message is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RejectedInput(
            "invalid_envelope", f"CDC message is a JSON {type(doc).__name__}, not an object"
        )
    schema: Any = None
    wrapped = "schema" in doc and "payload" in doc
    if wrapped:
        schema, doc = doc["schema"], doc["payload"]
        if doc is None:
            return Skip("tombstone", "schema wrapper with a null payload")
        if not isinstance(doc, dict):
            raise RejectedInput(
                "invalid_envelope", f"'payload' is a JSON {type(doc).__name__}, not an object"
            )
    if _is_envelope(doc):
        op = doc["op"]
        if not isinstance(op, str):
            raise RejectedInput("invalid_envelope", f"'op' is {op!r}, not a string")
        types: dict[str, str] = {}
        if isinstance(schema, dict):
            for f in schema.get("fields") or []:
                if isinstance(f, dict) and f.get("field") in ("before", "after"):
                    types.update(_column_types(f))
        source = doc.get("source")
        ts = doc.get("ts_ms")
        change = Change(
            shape="envelope+schema" if wrapped else "envelope",
            op=op,
            before=_row_or_none(doc.get("before"), "before"),
            after=_row_or_none(doc.get("after"), "after"),
            source=source if isinstance(source, dict) else {},
            ts_ms=ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
            column_types=types,
        )
    else:
        row = {k: v for k, v in doc.items() if not k.startswith("__")}
        op = doc.get("__op")
        deleted = doc.get("__deleted")
        if deleted is True or (isinstance(deleted, str) and deleted.lower() == "true"):
            op = "d"
        elif op is None:
            op = "u"  # no op recorded: an upsert
        if not isinstance(op, str):
            raise RejectedInput("invalid_envelope", f"'__op' is {op!r}, not a string")
        src = {"table": doc["__table"]} if isinstance(doc.get("__table"), str) else {}
        change = Change(
            shape="row+schema" if wrapped else "row",
            op=op,
            before=row if op == "d" else None,
            after=None if op == "d" else row,
            source=src,
            column_types=_column_types(schema),
        )
    if change.op not in UPSERT_OPS and change.op != "d":
        if change.op in ("t", "m"):
            what = "truncate" if change.op == "t" else "logical decoding message"
            raise RejectedInput("unknown_op", f"op {change.op!r} ({what}) has no single item")
        raise RejectedInput("unknown_op", f"unknown Debezium op {change.op!r}")
    if change.row is None:
        image = "before" if change.op == "d" else "after"
        raise RejectedInput("invalid_envelope", f"op {change.op!r} without a '{image}' row image")
    return change


def epoch_to_iso(value: int, logical: str | None) -> str:
    """Epoch integer -> ``YYYY-MM-DDTHH:MM:SS`` UTC (WordPress REST ``date_gmt`` format).

    The unit comes from ``logical`` (ms for ``io.debezium.time.Timestamp`` and Connect
    ``Timestamp``, µs for ``MicroTimestamp``, ns for ``NanoTimestamp``); without one it is
    guessed: |v| >= 1e17 ns, >= 1e14 µs, else ms (1e14 ms is the year 5138, 1e14 µs is 1973,
    so posts dated before 1973 without a schema would be misread).
    """
    if logical == NS_TIMESTAMP or (logical is None and abs(value) >= 10**17):
        micros = value // 1000
    elif logical == US_TIMESTAMP or (logical is None and abs(value) >= 10**14):
        micros = value
    else:
        micros = value * 1000
    return (EPOCH + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S")


def date_value(value: Any, logical: str | None = None) -> str | None:
    """A datetime column -> WordPress ``date_gmt`` string, or None for null / the zero date.

    Strings are parsed with :meth:`datetime.fromisoformat` (``T`` or space, optional offset,
    converted to UTC); an unparsable string is passed through unchanged so the normaliser
    records a warning instead of the date being lost silently (likewise an epoch integer outside
    years 1-9999, passed on as its decimal text).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return epoch_to_iso(value, logical)
        except OverflowError:
            return str(value)  # out of range: the normaliser warns about it
    if isinstance(value, str):
        text = value.strip()
        if not text or text.startswith("0000-00-00"):
            return None
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return value
        if dt.tzinfo is not None:
            dt = dt.astimezone(UTC).replace(tzinfo=None)
        return dt.strftime("%Y-%m-%dT%H:%M:%S")
    return str(value)
