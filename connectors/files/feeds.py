"""Feed documents (RSS 2.0, RSS 1.0/RDF, Atom, JSON Feed): one ``feed.document`` raw CMS event
per file, payload unchanged (parsing is the normaliser's job)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from connectors.records import Keyed
from feedpipe.cms.events import cms_event

KIND: Final = "feed.document"
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
        cms_event(
            kind=KIND,
            source=source,
            brand=brand,
            source_id=None,
            payload=raw,
            content_type=guess_feed_content_type(path, raw),
            origin=str(path),
            fallback_id=path.name,
        ),
    )
