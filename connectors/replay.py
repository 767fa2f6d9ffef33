"""Replay the files of the shared data directory to Kafka (``topology.yaml`` ``sources:``).

Two layers:

- pure generator functions turning one file into :class:`Keyed` items (Kafka key + record dict
  in the shape of the target Avro schema) or :class:`Malformed` markers, testable without Kafka:
  :func:`mind_news_events`, :func:`wordpress_events`, :func:`drupal_events`,
  :func:`feed_document_events` (``feedpipe.RawCmsEvent``, topic ``cms.raw``) and
  :func:`mind_behavior_events` (``feedpipe.ReaderEvent``, topic ``reader.events``);
- :class:`ReplayConnector`, which resolves a source's files, encodes each record with
  :func:`feedpipe.wire.codec.codec` and publishes it; :func:`replay_all` replays several sources.

CMS payloads are published unchanged (the CMS's own bytes): a payload the connector cannot
split (invalid JSON, JSON:API error document) is still published, with ``source_id`` null, so
the normaliser dead-letters it with its reason. Only MIND behaviour rows are parsed here; a
malformed row becomes a ``feedpipe.DeadLetter`` on the reader topic's DLQ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from connectors.base import Connector, ConnectorMetrics, Stopwatch
from connectors.reader_encoder import ReaderEventEncoder
from feedpipe import ids
from feedpipe.errors import ConfigError
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings
from feedpipe.topology import SourceSpec, TopicSpec, Topology
from feedpipe.wire.codec import codec

CMS_TOPIC: Final = "cms.raw"
READER_TOPIC: Final = "reader.events"
CMS_SUBJECT: Final = "RawCmsEvent"
READER_SUBJECT: Final = "ReaderEvent"
DELETE_STATUSES: Final = frozenset({"draft", "private", "trash"})
MIND_TIME_FORMAT: Final = "%m/%d/%Y %I:%M:%S %p"  # "11/12/2019 2:14:46 PM" (MIND README)
MIND_COLUMNS: Final = 5
PROGRESS_EVERY: Final = 5000


@dataclass(frozen=True, slots=True)
class Keyed:
    """One record to publish: Kafka ``key`` (str, UTF-8 encoded on publish) and the record
    dict (shape of the target schema, timestamps as tz-aware UTC datetimes)."""

    key: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that cannot become a record; published as a DeadLetter, never dropped.

    Attributes:
        code: short reason code, e.g. ``bad_time``.
        reason: human-readable reason.
        raw: the raw input bytes (the file line without its newline).
        origin: ``<file>:<line number>`` (1-based).
        key: the Kafka key the record would have had (e.g. user_id), when known.
    """

    code: str
    reason: str
    raw: bytes
    origin: str
    key: str | None = None


Item = Keyed | Malformed


# -- CMS sources -> feedpipe.RawCmsEvent ----------------------------------------------------
def _cms_event(
    *,
    kind: str,
    source: str,
    brand: str,
    source_id: str | None,
    payload: bytes,
    content_type: str,
    origin: str,
    fallback_id: str,
    op: str = "upsert",
) -> dict[str, Any]:
    """A RawCmsEvent dict; event_id = ids.event_id(source, source_id or fallback, sha256 hex
    of payload)."""
    digest = hashlib.sha256(payload).hexdigest()
    now = datetime.now(UTC)
    return {
        "event_id": ids.event_id(source, source_id or fallback_id, digest),
        "kind": kind,
        "op": op,
        "source": source,
        "brand": brand,
        "source_id": source_id,
        "content_type": content_type,
        "payload": payload,
        "origin": origin,
        "emitted_at": now.replace(microsecond=now.microsecond // 1000 * 1000),  # Avro: ms
    }


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without ``\\n`` or ``\\r\\n``); no item for the empty text
    after a final newline."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines, start=1):
        yield n, line[:-1] if line.endswith(b"\r") else line


def mind_news_events(path: Path, source: str, brand: str) -> Iterator[Keyed]:
    """One ``mind.news`` RawCmsEvent per line of a MIND ``news.tsv``.

    ``payload`` is the raw line (no newline), ``content_type`` ``text/tab-separated-values``,
    ``source_id`` the first column (the news id; None for a line whose first column is empty,
    which the normaliser rejects), key ``"<source>:<source_id>"``.

    Raises:
        OSError: the file cannot be read.
    """
    origin = str(path)
    for n, line in _lines(path.read_bytes()):
        first = line.split(b"\t", 1)[0].decode("utf-8", "replace").strip()
        source_id = first or None
        fallback = f"{path.name}:{n}"
        yield Keyed(
            f"{source}:{source_id or fallback}",
            _cms_event(
                kind="mind.news",
                source=source,
                brand=brand,
                source_id=source_id,
                payload=line,
                content_type="text/tab-separated-values",
                origin=origin,
                fallback_id=fallback,
            ),
        )


def wordpress_events(path: Path, source: str, brand: str) -> Iterator[Keyed]:
    """``wordpress.post`` RawCmsEvents from a ``/wp-json/wp/v2/posts`` response file.

    The file holds a JSON list of posts or one post object: one event per post, payload
    ``orjson.dumps(post)``, ``source_id`` ``str(post["id"])``, key ``"<source>:<id>"``, op
    ``delete`` when ``status`` is draft/private/trash, else ``upsert``. Anything else (invalid
    JSON, an error object without ``id``, a list item that is not a post) is published as one
    event with ``source_id`` None (raw bytes for an unparsable file) so the normaliser
    dead-letters it with its reason.

    Raises:
        OSError: the file cannot be read.
    """
    raw = path.read_bytes()
    origin = str(path)

    def unsplit(payload: bytes, suffix: str = "") -> Keyed:
        fallback = f"{path.name}{suffix}"
        return Keyed(
            f"{source}:{fallback}",
            _cms_event(
                kind="wordpress.post",
                source=source,
                brand=brand,
                source_id=None,
                payload=payload,
                content_type="application/json",
                origin=origin,
                fallback_id=fallback,
            ),
        )

    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        yield unsplit(raw)
        return
    if isinstance(doc, dict):
        posts: list[Any] = [doc]
    elif isinstance(doc, list) and doc:
        posts = doc
    else:  # a scalar or an empty list: nothing to split, let the normaliser say why
        yield unsplit(raw)
        return
    for i, post in enumerate(posts):
        if not isinstance(post, dict) or post.get("id") in (None, ""):
            yield unsplit(orjson.dumps(post) if len(posts) > 1 else raw, f"#{i}")
            continue
        source_id = str(post["id"])
        status = post.get("status")
        op = "delete" if isinstance(status, str) and status.lower() in DELETE_STATUSES else "upsert"
        yield Keyed(
            f"{source}:{source_id}",
            _cms_event(
                kind="wordpress.post",
                source=source,
                brand=brand,
                source_id=source_id,
                payload=orjson.dumps(post),
                content_type="application/json",
                origin=origin,
                fallback_id=path.name,
                op=op,
            ),
        )


def _relationship_refs(item: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(type, id) of every resource an item's JSON:API ``relationships`` point to."""
    refs: set[tuple[str, str]] = set()
    rels = item.get("relationships")
    if not isinstance(rels, dict):
        return refs
    for rel in rels.values():
        data = rel.get("data") if isinstance(rel, dict) else None
        for ref in data if isinstance(data, list) else [data]:
            if isinstance(ref, dict) and "type" in ref and "id" in ref:
                refs.add((str(ref["type"]), str(ref["id"])))
    return refs


def drupal_events(path: Path, source: str, brand: str) -> Iterator[Keyed]:
    """``drupal.node`` RawCmsEvents from a Drupal JSON:API document (``application/vnd.api+json``).

    - ``data`` is a non-empty list (collection): one event per item, payload
      ``orjson.dumps({"data": item, "included": [...]})`` where ``included`` keeps the
      document's included resources the item's relationships reference; ``source_id`` = item id.
    - ``data`` is an object (detail): one event, payload = the file's bytes, ``source_id`` = its id.
    - anything else (error documents, the empty index, invalid JSON, items without id): one
      event with the raw bytes and ``source_id`` None; the normaliser rejects it with a reason.

    op is ``delete`` for a node whose ``attributes.status`` is false (unpublished), else
    ``upsert``. Key ``"<source>:<source_id>"`` (``"<source>:<file name>"`` without one).

    Raises:
        OSError: the file cannot be read.
    """
    raw = path.read_bytes()
    origin = str(path)
    ctype = "application/vnd.api+json"

    def event(payload: bytes, source_id: str | None, op: str = "upsert") -> Keyed:
        return Keyed(
            f"{source}:{source_id or path.name}",
            _cms_event(
                kind="drupal.node",
                source=source,
                brand=brand,
                source_id=source_id,
                payload=payload,
                content_type=ctype,
                origin=origin,
                fallback_id=path.name,
                op=op,
            ),
        )

    def op_of(item: Mapping[str, Any]) -> str:
        attrs = item.get("attributes")
        return "delete" if isinstance(attrs, dict) and attrs.get("status") is False else "upsert"

    def id_of(item: Any) -> str | None:
        if isinstance(item, dict) and isinstance(item.get("id"), str | int) and item["id"] != "":
            return str(item["id"])
        return None

    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        yield event(raw, None)
        return
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, list) and data:
        included = doc.get("included")
        by_ref = {
            (str(r.get("type")), str(r.get("id"))): r
            for r in (included if isinstance(included, list) else [])
            if isinstance(r, dict)
        }
        for item in data:
            item_id = id_of(item)
            refs = _relationship_refs(item) if isinstance(item, dict) else set()
            inc = [res for ref, res in by_ref.items() if ref in refs]
            payload = orjson.dumps({"data": item, "included": inc})
            yield event(payload, item_id, op_of(item) if isinstance(item, dict) else "upsert")
    elif isinstance(data, dict) and id_of(data) is not None:
        yield event(raw, id_of(data), op_of(data))
    else:
        yield event(raw, None)


_FEED_TYPES: Final = {
    ".json": "application/feed+json",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".rdf": "application/rdf+xml",
}


def guess_feed_content_type(path: Path, data: bytes) -> str:
    """MIME type of a feed document: by extension (.json, .rss, .atom, .rdf), else by sniffing
    the first 2 KiB (``<rss`` -> RSS, ``<feed`` -> Atom, ``<rdf:RDF`` -> RDF, ``{`` -> JSON
    Feed, other XML -> application/xml), else ``application/octet-stream``."""
    by_ext = _FEED_TYPES.get(path.suffix.lower())
    if by_ext:
        return by_ext
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    low = head.lower()
    if low.startswith(b"{"):
        return "application/feed+json"
    if b"<rss" in low:
        return "application/rss+xml"
    if b"<rdf:rdf" in low:
        return "application/rdf+xml"
    if b"<feed" in low:
        return "application/atom+xml"
    if low.startswith(b"<") or path.suffix.lower() == ".xml":
        return "application/xml"
    return "application/octet-stream"


def feed_document_events(path: Path, source: str, brand: str) -> Iterator[Keyed]:
    """One ``feed.document`` RawCmsEvent per file: payload = the file's bytes, ``source_id``
    None (items carry their own ids), content type from :func:`guess_feed_content_type`, key
    ``"<source>:<file name>"``.

    Raises:
        OSError: the file cannot be read.
    """
    raw = path.read_bytes()
    yield Keyed(
        f"{source}:{path.name}",
        _cms_event(
            kind="feed.document",
            source=source,
            brand=brand,
            source_id=None,
            payload=raw,
            content_type=guess_feed_content_type(path, raw),
            origin=str(path),
            fallback_id=path.name,
        ),
    )


# -- MIND behaviours -> feedpipe.ReaderEvent ------------------------------------------------
class _BadRow(Exception):
    def __init__(self, code: str, reason: str, user_id: str | None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class _Row:
    impression_id: str
    user_id: str
    time: datetime
    history: list[str]
    impressions: list[tuple[str, bool]]


def parse_mind_time(text: str) -> datetime:
    """Parse a MIND time (``"11/12/2019 2:14:46 PM"``, US format, no zone) as UTC.

    MIND gives no time zone; treating it as UTC is this project's convention.

    Raises:
        ValueError: not in that format.
    """
    return datetime.strptime(text.strip(), MIND_TIME_FORMAT).replace(tzinfo=UTC)


def _parse_row(line: bytes) -> _Row:
    """Parse one behaviors.tsv row. Raises _BadRow(code, reason, user_id)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadRow("bad_encoding", f"row is not UTF-8: {exc}", None) from None
    cols = text.split("\t")
    if len(cols) != MIND_COLUMNS:
        raise _BadRow(
            "bad_columns", f"expected {MIND_COLUMNS} tab-separated columns, got {len(cols)}", None
        )
    impression_id, user_id, time_s, history_s, impressions_s = (c.strip() for c in cols)
    if not user_id:
        raise _BadRow("missing_user", "empty user_id", None)
    if not impression_id:
        raise _BadRow("missing_impression_id", "empty impression_id", user_id)
    try:
        when = parse_mind_time(time_s)
    except ValueError:
        raise _BadRow(
            "bad_time", f"time {time_s!r} is not 'M/D/YYYY h:mm:ss AM/PM'", user_id
        ) from None
    impressions: list[tuple[str, bool]] = []
    for entry in impressions_s.split():
        news_id, sep, label = entry.rpartition("-")
        if not sep or not news_id or label not in ("0", "1"):
            raise _BadRow(
                "bad_label", f"impression entry {entry!r} is not '<news id>-<0|1>'", user_id
            )
        impressions.append((news_id, label == "1"))
    return _Row(impression_id, user_id, when, history_s.split(), impressions)


def mind_behavior_events(
    path: Path, content_source: str = "mind", spacing_s: int = 60
) -> Iterator[Keyed | Malformed]:
    """ReaderEvents from a MIND ``behaviors.tsv``, keyed by user_id, in file order.

    Columns: impression_id, user_id, time (see :func:`parse_mind_time`), history (clicked news
    ids, oldest first), impressions (``"N123-1 N456-0"``, 1 = clicked).

    Per row, in this order:

    1. the first time a user appears in the file, their history as past clicks (type
       ``click``, origin ``history``) with ``occurred_at = anchor - (len(history) - i) *
       spacing_s`` seconds (i = 0-based index; ``spacing_s`` = topology
       ``profiles.history_click_spacing_s``), event_id ``ids.event_id("mind-history", user_id,
       news_id, i)``. ``anchor`` is the user's *earliest* impression time in the file (rows
       are a random sample, not in time order), so with ``spacing_s > 0`` every history click
       is strictly before all of the user's impressions. MIND repeats the same history on every
       row of a user, so later rows do not re-emit it;
    2. one ``impression`` per entry at position p (0-based), origin ``live``, event_id
       ``ids.event_id("mind", impression_id, news_id, p, "impression")``, and for a label 1 a
       ``click`` at the same ``occurred_at`` (event_id ending ``"click"``).

    ``content_id = ids.content_id(content_source, news_id)``, ``source_item_id = news_id``.
    A malformed row (column count, empty user/impression id, time, label, encoding) yields a
    :class:`Malformed` instead, and none of its events (the row is all or nothing).

    Raises:
        OSError: the file cannot be read.
    """
    parsed: list[tuple[int, bytes, _Row | _BadRow]] = []
    anchors: dict[str, datetime] = {}  # each user's earliest impression time
    for n, line in _lines(path.read_bytes()):
        try:
            row = _parse_row(line)
        except _BadRow as bad:
            parsed.append((n, line, bad))
            continue
        parsed.append((n, line, row))
        seen = anchors.get(row.user_id)
        if seen is None or row.time < seen:
            anchors[row.user_id] = row.time

    cids: dict[str, str] = {}

    def cid(news_id: str) -> str:
        c = cids.get(news_id)
        if c is None:
            c = cids[news_id] = ids.content_id(content_source, news_id)
        return c

    # ids.event_id(*parts) is sha256 hex of the parts joined by "\x1f"; inlined with the row's
    # constant prefix (same bytes, checked against ids.event_id in tests/unit/test_replay.py).
    sha256 = hashlib.sha256
    history_done: set[str] = set()
    for n, line, parsed_row in parsed:
        if isinstance(parsed_row, _BadRow):
            err = parsed_row
            yield Malformed(err.code, err.reason, line, f"{path}:{n}", err.user_id)
            continue
        row = parsed_row
        user = row.user_id
        if user not in history_done:
            history_done.add(user)
            anchor = anchors[user]
            count = len(row.history)
            hist_prefix = f"mind-history\x1f{user}\x1f"
            for i, news_id in enumerate(row.history):
                yield Keyed(
                    user,
                    {
                        "event_id": sha256(f"{hist_prefix}{news_id}\x1f{i}".encode()).hexdigest(),
                        "type": "click",
                        "user_id": user,
                        "content_id": cid(news_id),
                        "source_item_id": news_id,
                        "occurred_at": anchor - timedelta(seconds=(count - i) * spacing_s),
                        "impression_id": None,
                        "position": None,
                        "dwell_ms": None,
                        "origin": "history",
                    },
                )
        imp = row.impression_id
        when = row.time
        prefix = f"mind\x1f{imp}\x1f"
        for p, (news_id, clicked) in enumerate(row.impressions):
            content = cid(news_id)
            yield Keyed(
                user,
                {
                    "event_id": sha256(
                        f"{prefix}{news_id}\x1f{p}\x1fimpression".encode()
                    ).hexdigest(),
                    "type": "impression",
                    "user_id": user,
                    "content_id": content,
                    "source_item_id": news_id,
                    "occurred_at": when,
                    "impression_id": imp,
                    "position": p,
                    "dwell_ms": None,
                    "origin": "live",
                },
            )
            if clicked:
                yield Keyed(
                    user,
                    {
                        "event_id": sha256(
                            f"{prefix}{news_id}\x1f{p}\x1fclick".encode()
                        ).hexdigest(),
                        "type": "click",
                        "user_id": user,
                        "content_id": content,
                        "source_item_id": news_id,
                        "occurred_at": when,
                        "impression_id": imp,
                        "position": p,
                        "dwell_ms": None,
                        "origin": "live",
                    },
                )


# -- the connector --------------------------------------------------------------------------
CmsGenerator = Callable[[Path, str, str], Iterator[Keyed]]
CMS_GENERATORS: Final[dict[str, CmsGenerator]] = {
    "mind.news": mind_news_events,
    "wordpress.posts": wordpress_events,
    "drupal.jsonapi": drupal_events,
    "feed.document": feed_document_events,
}
BEHAVIOR_KINDS: Final = frozenset({"mind.behaviors"})


def target_topic(kind: str) -> str:
    """Topic a source kind publishes to: ``reader.events`` for ``mind.behaviors``, else
    ``cms.raw``. ConfigError for an unknown kind."""
    if kind in BEHAVIOR_KINDS:
        return READER_TOPIC
    if kind in CMS_GENERATORS:
        return CMS_TOPIC
    raise ConfigError(f"no replay generator for source kind {kind!r}")


def source_files(source: SourceSpec, data_dir: Path) -> list[Path]:
    """Files of ``source`` under ``data_dir``: ``path`` itself when it is a file, else its
    ``files`` (in the listed order) or the regular, non-hidden files matching ``glob``
    (sorted by name).

    Raises:
        FileNotFoundError: the path, a listed file, or every glob match is missing (a
            configured source that yields nothing is an error, not an empty replay).
        ConfigError: a directory source has neither ``files`` nor ``glob``.
    """
    base = data_dir / source.path
    if source.files is not None:
        paths = [base / f for f in source.files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"source {source.name}: missing files {missing}")
        return paths
    if source.glob is not None:
        if not base.is_dir():
            raise FileNotFoundError(f"source {source.name}: {base} is not a directory")
        paths = sorted(
            p for p in base.glob(source.glob) if p.is_file() and not p.name.startswith(".")
        )
        if not paths:
            raise FileNotFoundError(f"source {source.name}: no file matches {base}/{source.glob}")
        return paths
    if base.is_file():
        return [base]
    if base.exists():
        raise ConfigError(f"source {source.name}: {base} is a directory; give files or glob")
    raise FileNotFoundError(f"source {source.name}: {base} does not exist")


class ReplayConnector(Connector):
    """Publishes one configured source's files (see :func:`source_files`) once, then returns.

    Args:
        source: the source spec (``topology.yaml`` ``sources:`` entry).
        data_dir: the shared data directory (``settings().data_dir``).
        topics: declared topics (``topology().topics``); the target topic and, for rejected
            rows, its ``dlq`` must be declared.
        spacing_s: seconds between replayed MIND history clicks (default: topology's
            ``profiles.history_click_spacing_s``).
        progress: called with the number of input records processed so far, every
            ``progress_every`` records and once at the end.
        producer / bootstrap / name: see :class:`Connector` (name defaults to the source name).
        flush_timeout_s: seconds to wait for acknowledgements at the end of :meth:`run`.

    Raises:
        ConfigError: unknown kind, or target topic / DLQ not declared in ``topics``.
    """

    def __init__(
        self,
        source: SourceSpec,
        data_dir: Path,
        topics: Mapping[str, TopicSpec],
        *,
        spacing_s: int | None = None,
        progress: Callable[[int], None] | None = None,
        progress_every: int = PROGRESS_EVERY,
        producer: IdempotentProducer | None = None,
        bootstrap: str | None = None,
        flush_timeout_s: float = 120.0,
    ) -> None:
        super().__init__(source.name, producer=producer, bootstrap=bootstrap)
        self.source = source
        self.data_dir = Path(data_dir)
        self.topic = target_topic(source.kind)
        spec = topics.get(self.topic)
        if spec is None:
            raise ConfigError(f"source {source.name}: topic {self.topic} is not declared")
        if spec.dlq is not None and spec.dlq not in topics:
            raise ConfigError(f"source {source.name}: dlq {spec.dlq} is not declared")
        self.dlq = spec.dlq
        self.subject = READER_SUBJECT if source.kind in BEHAVIOR_KINDS else CMS_SUBJECT
        if spacing_s is None:
            from feedpipe.topology import topology

            spacing_s = topology().profiles.history_click_spacing_s
        self.spacing_s = spacing_s
        self.progress = progress
        self.progress_every = max(1, progress_every)
        self.flush_timeout_s = flush_timeout_s

    def files(self) -> list[Path]:
        """The files this source replays (see :func:`source_files`)."""
        return source_files(self.source, self.data_dir)

    def items(self) -> Iterator[Item]:
        """Every item of every file, in file order (pure: no Kafka)."""
        files = self.files()
        if self.source.kind in BEHAVIOR_KINDS:
            for path in files:
                yield from mind_behavior_events(
                    path, self.source.content_source or self.source.name, self.spacing_s
                )
            return
        gen = CMS_GENERATORS[self.source.kind]
        for path in files:
            yield from gen(path, self.source.name, self.source.brand)

    def run(self) -> ConnectorMetrics:
        """Encode and publish every item, flush, and return the metrics.

        Malformed rows are published to the target topic's DLQ as ``feedpipe.DeadLetter``
        (stage ``replay``) and counted under their reason code.

        Raises:
            feedpipe.kafka.producer.DeliveryError: records were not acknowledged.
            feedpipe.errors.SerializationError: a built record does not fit its schema (a bug).
            ConfigError: a malformed row but the target topic has no DLQ.
            FileNotFoundError / OSError: a configured file is missing or unreadable.
        """
        self.setup()
        clock = Stopwatch()
        metrics = self.metrics
        encode = (
            ReaderEventEncoder().encode
            if self.subject == READER_SUBJECT
            else codec(self.subject).encode
        )
        produce = self.producer.produce
        delivered = self._on_delivery  # failures attributed to this connector (see flush)
        topic = self.topic
        progress, every = self.progress, self.progress_every
        fetched = published = 0
        try:
            for item in self.items():
                if self.stopping:
                    break
                fetched += 1
                if type(item) is Keyed:
                    produce(topic, item.key.encode(), encode(item.record), on_delivery=delivered)
                    published += 1
                else:
                    assert isinstance(item, Malformed)
                    self._reject(item)
                if progress is not None and fetched % every == 0:
                    progress(fetched)
        finally:
            metrics.fetched += fetched
            metrics.published += published
        self.flush(self.flush_timeout_s)
        metrics.elapsed_s = clock.elapsed
        if progress is not None:
            progress(fetched)
        return metrics

    def _reject(self, bad: Malformed) -> None:
        if self.dlq is None:
            raise ConfigError(
                f"source {self.source.name}: {bad.origin} is malformed ({bad.reason}) and "
                f"topic {self.topic} has no dlq"
            )
        self.dead_letter(
            self.dlq,
            source_topic=self.topic,
            code=bad.code,
            reason=bad.reason,
            value=bad.raw,
            key=bad.key.encode() if bad.key is not None else None,
            origin=bad.origin,
        )


def replay_all(
    topo: Topology,
    data_dir: Path | None = None,
    sources: Iterable[str] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    bootstrap: str | None = None,
    producer: IdempotentProducer | None = None,
) -> dict[str, ConnectorMetrics]:
    """Replay ``sources`` (names; default all of ``topo.sources``): CMS sources first, then
    behaviours (so clicks mostly find their content), each flushed before the next.

    Args:
        topo: the topology (sources, topics, history spacing).
        data_dir: default ``settings().data_dir``.
        sources: source names to replay, or None for all.
        progress: called with the number of input records processed so far, counted across
            all the sources of this call (for one progress bar).
        bootstrap: Kafka bootstrap servers (default settings); ignored when ``producer`` given.
        producer: a producer to use (not closed here); default: one opened and closed here.

    Returns:
        Metrics per source name, in replay order.

    Raises:
        ConfigError: an unknown source name.
        feedpipe.kafka.producer.DeliveryError, FileNotFoundError: see :meth:`ReplayConnector.run`.
    """
    by_name = {s.name: s for s in topo.sources}
    names = list(by_name) if sources is None else list(sources)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown replay sources {unknown}; known: {sorted(by_name)}")
    chosen = [by_name[n] for n in names]
    chosen.sort(key=lambda s: s.kind in BEHAVIOR_KINDS)  # stable: CMS first, then behaviours
    root = data_dir if data_dir is not None else settings().data_dir
    own = producer is None
    prod = producer or IdempotentProducer(
        bootstrap or settings().kafka_bootstrap, client_id="feedpipe-replay"
    )
    results: dict[str, ConnectorMetrics] = {}
    done = 0
    try:
        for spec in chosen:
            cb: Callable[[int], None] | None = None
            if progress is not None:
                cb = _offset_progress(progress, done)
            conn = ReplayConnector(
                spec,
                root,
                topo.topics,
                spacing_s=topo.profiles.history_click_spacing_s,
                progress=cb,
                producer=prod,
            )
            results[spec.name] = conn.run()
            done += results[spec.name].fetched
    finally:
        if own:
            prod.close()
    return results


def _offset_progress(progress: Callable[[int], None], offset: int) -> Callable[[int], None]:
    def cb(n: int) -> None:
        progress(offset + n)

    return cb
