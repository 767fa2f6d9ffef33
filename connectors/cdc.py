"""CDC: Debezium change events of a WordPress ``wp_posts`` table -> ``feedpipe.RawCmsEvent``.

Accepted message values (Kafka Connect ``JsonConverter``; Debezium docs, "MySQL connector",
"Data change events"):

1. with schema (``value.converter.schemas.enable=true``): ``{"schema": {...}, "payload":
   {"before", "after", "source", "op", "ts_ms"}}``;
2. without schema: ``{"before", "after", "source", "op", "ts_ms"}``;
3. unwrapped rows (``io.debezium.transforms.ExtractNewRecordState``), with or without the
   schema wrapper: the row itself; ``__op`` (``add.fields=op``) and ``__deleted``
   (``delete.handling.mode=rewrite``) are read when present, else the row is an upsert;
4. ``None`` (a tombstone, emitted after each delete for log compaction): skipped.

op ``c`` (create), ``u`` (update), ``r`` (snapshot read) -> the row in ``after``; ``d`` ->
the row in ``before``; ``t`` (truncate) and ``m`` (message) cannot be mapped onto one item and
are rejected. The row is mapped onto a WordPress REST-like post (see :func:`row_to_post`) and
published as kind ``wordpress.post``, so :mod:`streams.normalisers.wordpress` handles it;
``post_status`` ``publish`` -> op ``upsert``, any other status or a ``d`` -> op ``delete``
(unpublish). Rows whose ``post_type`` is not in ``post_types`` (default ``post``: pages,
revisions, attachments, menu items live in the same table) are skipped with a counted reason.

Datetime columns (``post_date_gmt``, ``post_modified_gmt``) arrive as epoch integers or
strings depending on ``time.precision.mode``: ``io.debezium.time.Timestamp`` /
``org.apache.kafka.connect.data.Timestamp`` (ms), ``io.debezium.time.MicroTimestamp`` (µs),
``io.debezium.time.NanoTimestamp`` (ns) -- read from the schema field's ``name`` when there is
a schema, else guessed from the magnitude (see :func:`epoch_to_iso`) -- or strings
(``ZonedTimestamp`` ISO 8601, MySQL ``YYYY-MM-DD HH:MM:SS``). WordPress's zero date
``0000-00-00 00:00:00`` (unscheduled drafts) and null give no date.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connectors.base import Connector, ConnectorMetrics, Stopwatch
from connectors.replay import CMS_SUBJECT, CMS_TOPIC, _cms_event
from feedpipe import ids
from feedpipe.errors import RejectedInput
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings
from feedpipe.wire.codec import codec

log = logging.getLogger(__name__)

DEFAULT_CDC_TOPIC: Final = "cdc.wordpress.wp_posts"
DLQ_TOPIC: Final = "cms.raw.dlq"
UPSERT_OPS: Final = frozenset({"c", "u", "r"})
WP_POST_COLUMNS: Final = ("ID", "post_type", "post_status")  # required to map a row
DATE_COLUMNS: Final = ("post_date_gmt", "post_modified_gmt")
MS_TIMESTAMPS: Final = frozenset(
    {"io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"}
)
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


def row_to_post(
    row: Mapping[str, Any], column_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A ``wp_posts`` row -> WordPress REST-like post object.

    | wp_posts column | post field |
    |---|---|
    | ID | id |
    | post_author | author |
    | post_date_gmt | date_gmt |
    | post_modified_gmt | modified_gmt |
    | post_status | status |
    | post_type | type |
    | post_name | slug |
    | guid | link |
    | post_title / post_content / post_excerpt | title / content / excerpt ``{"rendered": ...}`` |

    The text columns hold the stored (unfiltered) HTML, not the output of WordPress's
    ``the_content`` filters (shortcodes are not expanded).
    """
    types = column_types or {}
    post: dict[str, Any] = {
        "id": row.get("ID"),
        "date_gmt": date_value(row.get("post_date_gmt"), types.get("post_date_gmt")),
        "modified_gmt": date_value(row.get("post_modified_gmt"), types.get("post_modified_gmt")),
        "status": row.get("post_status"),
        "type": row.get("post_type"),
        "link": row.get("guid"),
        "title": {"rendered": row.get("post_title") or ""},
        "content": {"rendered": row.get("post_content") or ""},
        "excerpt": {"rendered": row.get("post_excerpt") or ""},
    }
    if "post_name" in row:
        post["slug"] = row["post_name"]
    if "post_author" in row:
        post["author"] = row["post_author"]
    return post


def change_to_raw_event(
    change: Change,
    source: str,
    brand: str,
    *,
    post_types: Iterable[str] = ("post",),
    origin: str | None = None,
) -> tuple[str, dict[str, Any]] | Skip:
    """Map a parsed change of a ``wp_posts`` row onto (Kafka key, RawCmsEvent dict).

    event_id = ``ids.event_id(source, ID, op, sha256 hex of payload)`` (op included: a delete
    carries the same row image as the update before it).

    Raises:
        RejectedInput: ``not_wp_posts`` (the row lacks ID / post_type / post_status: another
            table; or a post_type that is not a string), ``missing_id`` (ID null or empty).
    """
    row = change.row
    assert row is not None  # parse_change guarantees it
    missing = [c for c in WP_POST_COLUMNS if c not in row]
    if missing:
        table = f"table {change.table}" if change.table else "row"
        raise RejectedInput(
            "not_wp_posts",
            f"{table} is not a wp_posts row: missing columns {missing} (has {sorted(row)[:12]})",
        )
    pid = row["ID"]
    if pid is None or isinstance(pid, bool) or str(pid) == "":
        raise RejectedInput("missing_id", "wp_posts row has no usable ID")
    post_type = row.get("post_type")
    if not isinstance(post_type, str):
        raise RejectedInput("not_wp_posts", f"post_type is {post_type!r:.60}, not a string")
    if post_type not in set(post_types):
        return Skip("post_type", f"post_type {post_type!r} is not one of {sorted(post_types)}")
    post = row_to_post(row, change.column_types)
    op = "upsert" if change.op in UPSERT_OPS and row.get("post_status") == "publish" else "delete"
    sid = str(pid)
    payload = orjson.dumps(post)
    event = _cms_event(
        kind="wordpress.post",
        source=source,
        brand=brand,
        source_id=sid,
        payload=payload,
        content_type="application/json",
        origin=origin or f"cdc:{change.table or 'wp_posts'}",
        fallback_id=sid,
        op=op,
    )
    event["event_id"] = ids.event_id(source, sid, op, hashlib.sha256(payload).hexdigest())
    return f"{source}:{sid}", event


def cdc_to_raw_event(
    message: bytes | None,
    source: str,
    brand: str,
    *,
    post_types: Iterable[str] = ("post",),
    origin: str | None = None,
) -> tuple[str, dict[str, Any]] | Skip:
    """One Debezium message value of a ``wp_posts`` topic -> (Kafka key, RawCmsEvent dict).

    Args:
        message: the Kafka message value (None for a tombstone).
        source / brand: the configured source name and brand.
        post_types: ``post_type`` values to publish (others are skipped).
        origin: ``RawCmsEvent.origin`` (default ``cdc:<db.table>``).

    Returns:
        ``("<source>:<ID>", event)`` with ``kind`` ``wordpress.post``, or :class:`Skip`
        (``tombstone``, ``post_type``).

    Raises:
        RejectedInput: see :func:`parse_change` and :func:`change_to_raw_event`.
    """
    if message is None:
        return Skip("tombstone", "null value (tombstone after a delete)")
    change = parse_change(message)
    if isinstance(change, Skip):
        return change
    return change_to_raw_event(change, source, brand, post_types=post_types, origin=origin)


@dataclass
class CdcMetrics(ConnectorMetrics):
    """:class:`ConnectorMetrics` plus ``skipped`` (messages not published, by reason) and the
    committed ``offsets`` (``"topic[partition]"`` -> next offset; ``cursor`` shows them as
    text)."""

    skipped: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (see :meth:`ConnectorMetrics.as_dict`) with skipped and offsets."""
        return {**super().as_dict(), "skipped": dict(self.skipped), "offsets": dict(self.offsets)}


class CdcConnector(Connector):
    """Consumes a Debezium ``wp_posts`` topic and publishes ``wordpress.post`` RawCmsEvents.

    At-least-once: offsets are committed (synchronously) only after every event produced from
    the consumed messages was acknowledged by Kafka (:meth:`Connector.flush`), after each batch
    and when partitions are revoked. A crash between the acknowledgement and the commit
    re-publishes the batch; event ids are deterministic and the pipeline deduplicates by content
    id and hash. The consumer group's committed offsets are the cursor.

    Args:
        name: source name (``RawCmsEvent.source``, part of content_id).
        brand: brand of the content.
        topic: the Debezium topic (``<topic.prefix>.<db>.wp_posts``), default
            ``cdc.wordpress.wp_posts``.
        group_id: consumer group (default ``feedpipe-cdc-<name>``).
        post_types: ``post_type`` values to publish.
        raw_topic / dlq: target topic and its dead-letter topic.
        batch_size: messages per ``consume`` call (and per flush + commit).
        poll_timeout_s: seconds one ``consume`` call waits.
        idle_exit_s: return from :meth:`run` after this many seconds without messages, counted
            from the partition assignment (None: run until :meth:`stop`).
        consumer_config: extra librdkafka consumer properties.
        producer / bootstrap: see :class:`Connector`.
        flush_timeout_s: seconds to wait for acknowledgements per batch.
    """

    def __init__(
        self,
        name: str,
        brand: str,
        *,
        topic: str = DEFAULT_CDC_TOPIC,
        group_id: str | None = None,
        post_types: Iterable[str] = ("post",),
        raw_topic: str = CMS_TOPIC,
        dlq: str = DLQ_TOPIC,
        batch_size: int = 500,
        poll_timeout_s: float = 1.0,
        idle_exit_s: float | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        producer: IdempotentProducer | None = None,
        bootstrap: str | None = None,
        flush_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(name, producer=producer, bootstrap=bootstrap)
        self.metrics: CdcMetrics = CdcMetrics()
        self.brand = brand
        self.topic = topic
        self.group_id = group_id or f"feedpipe-cdc-{name}"
        self.post_types = tuple(post_types)
        self.raw_topic = raw_topic
        self.dlq = dlq
        self.batch_size = max(1, batch_size)
        self.poll_timeout_s = poll_timeout_s
        self.idle_exit_s = idle_exit_s
        self.consumer_config = dict(consumer_config or {})
        self.flush_timeout_s = flush_timeout_s
        self._consumer: Consumer | None = None
        self._encode = codec(CMS_SUBJECT).encode

    def _open_consumer(self) -> Consumer:
        conf: dict[str, Any] = {
            **settings().kafka_config(self._bootstrap),  # bootstrap + TLS/SASL
            "group.id": self.group_id,
            "client.id": f"feedpipe-{self.name}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **self.consumer_config,
        }
        return Consumer(conf)

    def handle(self, msg: Message) -> None:
        """Map one consumed message and queue what it becomes (event, dead letter or a
        counted skip)."""
        self.metrics.fetched += 1
        origin = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        value = msg.value()
        try:
            result = cdc_to_raw_event(
                value, self.name, self.brand, post_types=self.post_types, origin=origin
            )
        except RejectedInput as exc:
            self.dead_letter(
                self.dlq,
                source_topic=msg.topic() or self.topic,
                code=exc.code,
                reason=exc.reason,
                value=value or b"",
                key=msg.key(),
                origin=origin,
                stage="cdc",
            )
            return
        if isinstance(result, Skip):
            self.metrics.skipped[result.code] = self.metrics.skipped.get(result.code, 0) + 1
            return
        key, event = result
        self.produce(self.raw_topic, key.encode(), self._encode(event))

    def _commit(self, consumer: Consumer) -> None:
        """Flush (every produced event acked), then commit the consumed positions."""
        self.flush(self.flush_timeout_s)
        positions = [
            tp
            for tp in consumer.position(consumer.assignment())
            if tp.offset is not None and tp.offset >= 0
        ]
        if not positions:
            return
        try:
            consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._NO_OFFSET:
                return
            raise
        for tp in positions:
            self.metrics.offsets[f"{tp.topic}[{tp.partition}]"] = tp.offset
        self.metrics.cursor = ", ".join(f"{k}@{v}" for k, v in sorted(self.metrics.offsets.items()))

    def run(self) -> CdcMetrics:
        """Consume, map, publish, flush and commit until :meth:`stop` (or ``idle_exit_s``).

        Raises:
            feedpipe.kafka.producer.DeliveryError: events were not acknowledged (offsets of the
                batch are then not committed).
            confluent_kafka.KafkaException: a consumer error other than end of partition.
        """
        self.setup()
        clock = Stopwatch()
        consumer = self._open_consumer()
        self._consumer = consumer

        failed = False

        assigned = False

        def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
            nonlocal assigned
            assigned = True
            idle.restart()  # idle time counts from the assignment, not the group join

        def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
            if not failed:  # never commit past events that were not acknowledged
                self._commit(c)

        idle = Stopwatch()
        consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        try:
            while not self.stopping:
                msgs = consumer.consume(self.batch_size, self.poll_timeout_s)
                handled = 0
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        if err.fatal() or not err.retriable():
                            raise KafkaException(err)
                        log.warning("cdc %s: consumer error %s", self.name, err)
                        continue
                    self.handle(msg)
                    handled += 1
                if handled:
                    self._commit(consumer)
                    idle.restart()
                elif self.idle_exit_s is not None and assigned and idle.elapsed >= self.idle_exit_s:
                    break
            self._commit(consumer)
        except BaseException:
            failed = True
            raise
        finally:
            self._consumer = None
            consumer.close()
            self.metrics.elapsed_s = clock.elapsed
        return self.metrics
