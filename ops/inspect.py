"""``feedpipe inspect``: what a capture becomes, without Kafka or Redis.

A file or URL (a feed, a WordPress ``/wp/v2/posts`` answer, a Drupal JSON:API document, a
Debezium change event of ``wp_posts``, a MIND ``news.tsv``) is split into raw CMS events by the
same readers the replay and the connectors use, each event goes through the wire codec, the
normaliser (:func:`streams.normalisers.normalise`) and the enrichment
(:func:`streams.metadata.enrich`) exactly as the normalise and enrich stages run them, and
every outcome is one JSON object:

- ``{"result": "enriched", "key": ..., "origin": ..., "record": <EnrichedContent>}``
- ``{"result": "rejected", "stage": "connector"|"normalise"|"enrich", "code": ...,
  "reason": ..., "key": ..., "origin": ...}`` (``code`` is the DLQ reason the pipeline
  would record)
- ``{"result": "skipped", "stage": "connector", "code": ..., "reason": ...}`` (a Debezium
  tombstone or a post type the source does not publish: not a DLQ record in the pipeline
  either).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from connectors.cdc.debezium import Skip
from connectors.cdc.wp_posts import cdc_to_raw_event
from connectors.files.cms import drupal_events, wordpress_events
from connectors.files.feeds import feed_document_events
from connectors.files.mind import mind_news_events
from connectors.records import Keyed
from feedpipe.errors import RejectedInput, SerializationError
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.metadata import enrich
from streams.normalisers import normalise

KINDS: Final = ("rss", "wordpress", "drupal", "debezium", "mind")
FETCH_TIMEOUT_S: Final = 20.0
Outcome = dict[str, Any]


def guess_kind(name: str, data: bytes) -> str:
    """The capture kind of a file named ``name`` holding ``data``.

    ``.tsv`` -> ``mind``; JSON with ``jsonapi`` or ``node--`` resource objects -> ``drupal``;
    a Debezium envelope (``payload``/``schema``, or ``op`` with ``before``/``after``) or a bare
    row -> ``debezium``; a WordPress post or list of posts (``guid``/``_links``/``rendered``)
    -> ``wordpress``; anything else (XML, JSON Feed) -> ``rss``.
    """
    if name.lower().endswith(".tsv"):
        return "mind"
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head not in (b"{", b"["):
        return "rss"
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "rss"
    if isinstance(doc, dict):
        if "jsonapi" in doc or '"node--' in data.decode("utf-8", "replace"):
            return "drupal"
        if "version" in doc and "jsonfeed" in str(doc.get("version")):
            return "rss"
        if ("schema" in doc and "payload" in doc) or {"before", "after", "op"} & set(doc):
            return "debezium"
        if "guid" in doc or "_links" in doc:
            return "wordpress"
        if "errors" in doc or "data" in doc:
            return "drupal"
        return "debezium"
    if doc and all(isinstance(p, dict) and ("guid" in p or "_links" in p) for p in doc):
        return "wordpress"
    return "rss"


def _debezium_events(path: Path, source: str, brand: str) -> Iterator[Keyed | Outcome]:
    """Raw events of a Debezium capture: one message per file, or one per line (JSON lines)."""
    data = path.read_bytes()
    try:
        orjson.loads(data)
        messages = [data]
    except orjson.JSONDecodeError:
        messages = [line for line in data.splitlines() if line.strip()]
    for n, message in enumerate(messages, 1):
        origin = f"{path}:{n}" if len(messages) > 1 else str(path)
        try:
            res = cdc_to_raw_event(message, source, brand, origin=origin)
        except RejectedInput as exc:
            yield _reject("connector", exc.code, exc.reason, None, origin)
            continue
        if isinstance(res, Skip):
            yield {"result": "skipped", "stage": "connector", "code": res.code,
                   "reason": res.reason, "origin": origin}
            continue
        yield Keyed(*res)


def _raw_events(path: Path, kind: str, source: str, brand: str) -> Iterator[Keyed | Outcome]:
    if kind == "rss":
        yield from feed_document_events(path, source, brand)
    elif kind == "wordpress":
        yield from wordpress_events(path, source, brand)
    elif kind == "drupal":
        yield from drupal_events(path, source, brand)
    elif kind == "mind":
        yield from mind_news_events(path, source, brand)
    else:
        yield from _debezium_events(path, source, brand)


def _reject(stage: str, code: str, reason: str, key: str | None, origin: str | None) -> Outcome:
    return {"result": "rejected", "stage": stage, "code": code, "reason": reason, "key": key,
            "origin": origin}


def inspect_file(path: Path, kind: str | None = None, *, source: str = "inspect",
                 brand: str = "feeds", now: datetime | None = None) -> Iterator[Outcome]:
    """Outcomes of one capture file (see the module docstring for their shapes).

    Args:
        path: the capture.
        kind: one of :data:`KINDS`; guessed by :func:`guess_kind` when None.
        source / brand: the source name (part of every content id) and the brand whose
            taxonomy maps categories and topics.
        now: enrichment time (default: the current UTC time).

    Raises:
        OSError: the file cannot be read.
        ValueError: ``kind`` is not one of :data:`KINDS`.
    """
    if kind is None:
        kind = guess_kind(path.name, path.read_bytes())
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    at = now or datetime.now(UTC)
    topo = topology()
    raw_codec, content_codec = codec("RawCmsEvent"), codec("Content")
    for event in _raw_events(path, kind, source, brand):
        if not isinstance(event, Keyed):
            yield event
            continue
        origin = event.record.get("origin")
        try:
            raw = raw_codec.decode(raw_codec.encode(event.record))
            items = normalise(raw, topo)
        except (RejectedInput, SerializationError) as exc:
            code, reason = (
                (exc.code, exc.reason) if isinstance(exc, RejectedInput)
                else ("undecodable", str(exc))
            )
            yield _reject("normalise", code, reason, event.key, origin)
            continue
        for item in items:
            try:
                record = enrich(content_codec.decode(content_codec.encode(item)), at)
            except RejectedInput as exc:
                yield _reject("enrich", exc.code, exc.reason, item["content_id"], origin)
                continue
            yield {"result": "enriched", "key": item["content_id"], "origin": origin,
                   "record": record}


def inspect_target(target: str, kind: str | None = None, **options: Any) -> Iterator[Outcome]:
    """:func:`inspect_file` of a path, or of an ``http(s)://`` URL fetched first (20 s timeout,
    redirects followed; the URL's last path segment names the temporary file, so
    :func:`guess_kind` sees its extension; outcomes name the URL as their ``origin``).

    Raises:
        OSError: the file cannot be read.
        httpx.HTTPError: the URL cannot be fetched or answers an error status.
        ValueError: see :func:`inspect_file`.
    """
    if not target.startswith(("http://", "https://")):
        yield from inspect_file(Path(target), kind, **options)
        return
    resp = httpx.get(target, timeout=FETCH_TIMEOUT_S, follow_redirects=True)
    resp.raise_for_status()
    name = httpx.URL(target).path.rstrip("/").rsplit("/", 1)[-1] or "capture"
    with tempfile.TemporaryDirectory(prefix="feedpipe-inspect-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(resp.content)
        for outcome in inspect_file(path, kind, **options):
            origin = outcome.get("origin")
            if isinstance(origin, str) and origin.startswith(str(path)):
                outcome["origin"] = target + origin[len(str(path)):]
            yield outcome


def to_json_line(outcome: Outcome) -> bytes:
    """One outcome as a JSON line (datetimes in ISO 8601, bytes as UTF-8 text)."""
    return orjson.dumps(outcome, default=_default) + b"\n"


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(type(value).__name__)
