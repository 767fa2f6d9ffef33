"""Feed documents (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.0/1.1) -> Content drafts.

XML feeds are parsed with feedparser (encoding detection per RFC 3023 and the XML
declaration, lenient "bozo" parsing of ill-formed documents, HTML sanitising). The payload is
always handed to feedparser as a stream: given bytes or a string, feedparser would try to
open it as a file name or URL. JSON Feed is parsed with orjson following jsonfeed.org
version 1 and 1.1 (``items[]`` with ``id``, ``url``, ``title``, ``content_html`` /
``content_text``, ``summary``, ``date_published``, ``date_modified``, ``author`` (1.0) /
``authors`` (1.1), ``tags``, ``language`` (1.1), ``image``, ``banner_image``,
``attachments``).

Rules for items (one document gives many items):
- source_id: the entry id (RSS guid, Atom id, JSON Feed id), else its link, else
  ``sha256:<hex>`` of title + ``\\x1f`` + published date as written (of the summary/body text
  when both are empty).
- A later item repeating an earlier item's id in the same document (Scripting News does) gets
  ``<id>#dup-<16 hex of its title, dates and text>`` and a warning, so it is not lost to
  compaction under the earlier item's content_id.
- An item without a title but with text gets a title derived from its text (first line, at
  most 120 characters) and a warning. Items with no title, summary or content are skipped;
  every returned item then carries a warning giving how many items were skipped. When no item
  is usable the document is rejected.
- published_at: the entry's published date, else its updated date (Atom only requires
  ``updated``). Dates written ``YYYY/M/D[ H:MM[:SS]]`` (no zone; feedparser misreads them as
  year/day-month) are read here as UTC with a warning. An unparseable date gives None and a
  warning.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import feedparser
from charset_normalizer import from_bytes

from feedpipe.errors import RejectedInput
from streams.normalisers.common import (
    Draft,
    as_dict,
    dedup,
    language_code,
    load_json,
    media,
    media_type,
    parse_dates,
    to_int,
    to_millis,
)
from streams.normalisers.text import (
    collapse_whitespace,
    derive_title,
    html_to_text,
    single_line,
    text_of,
)

JSON_TYPES = ("application/feed+json", "application/json")
_SLASH_DATE = re.compile(
    r"^\s*(\d{4})/(\d{1,2})/(\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*$"
)


def is_json_feed(payload: bytes, content_type: str | None) -> bool:
    """JSON Feed when the payload starts with ``{`` (after BOM/whitespace), or the content type
    is a JSON one and the payload does not start with ``<``."""
    head = payload.lstrip(b"\xef\xbb\xbf").lstrip()[:1]
    if head == b"{":
        return True
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    return ctype in JSON_TYPES and head != b"<"


def normalise_feed(payload: bytes, content_type: str | None) -> list[Draft]:
    """One feed document -> drafts of its usable items (``status`` published).

    Raises:
        RejectedInput: ``empty_payload``; ``invalid_json`` / ``invalid_encoding`` /
            ``malformed_feed`` for JSON Feed; ``malformed_feed`` for an XML document with no
            entries (reason: feedparser's bozo exception, or ``no entries``);
            ``no_usable_items`` when every item lacks title, summary and content.
    """
    if not payload or not payload.strip():
        raise RejectedInput("empty_payload", "feed document is empty")
    if is_json_feed(payload, content_type):
        kind, entries, doc_warnings = _json_feed(payload)
    else:
        kind, entries, doc_warnings = _xml_feed(payload, content_type)
    drafts: list[Draft] = []
    for entry in entries:
        draft = entry()
        if draft is not None:
            drafts.append(draft)
    skipped = len(entries) - len(drafts)
    if not drafts:
        raise RejectedInput(
            "no_usable_items",
            f"none of the {len(entries)} items has a title, summary or content",
        )
    if skipped:
        doc_warnings.append(
            f"{skipped} of {len(entries)} items in this feed document were skipped: "
            "no title, summary or content"
        )
    seen: set[str] = set()
    for d in drafts:
        d.kind = kind
        if d.source_id in seen:
            shared = d.source_id
            d.source_id = f"{shared}#dup-{_item_digest(d)[:16]}"
            d.warnings.append(
                f"id {shared!r} is shared with an earlier item of this document; "
                f"source_id made unique: {d.source_id!r}"
            )
        seen.add(d.source_id)
        d.warnings = doc_warnings + d.warnings
    return drafts


def _item_digest(d: Draft) -> str:
    """sha256 hex of an item's title, dates and text (tells apart items sharing one id)."""
    parts = [d.title, str(d.published_at), str(d.updated_at), d.summary, d.body]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


# --- shared item assembly -------------------------------------------------------------------


def _item_draft(
    *,
    guid: Any,
    link: str | None,
    title: str,
    summary: str,
    body: str,
    raw_title: str,
    raw_published: str,
    published: datetime | None,
    updated: datetime | None,
    authors: list[str],
    tags: list[str],
    language: str | None,
    items: list[dict[str, Any]],
    warnings: list[str],
) -> Draft | None:
    if not (title or summary or body):
        return None
    if not title:
        title = derive_title(summary or body)
        warnings.append("item has no title; title taken from its text")
    if isinstance(guid, str | int) and not isinstance(guid, bool) and str(guid).strip():
        source_id = str(guid).strip()
    elif link:
        source_id = link
    else:
        key = f"{raw_title}\x1f{raw_published}" if (raw_title or raw_published) else summary + body
        source_id = "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    seen: set[str] = set()
    unique_media = []
    for m in items:
        if m["url"] not in seen:
            seen.add(m["url"])
            unique_media.append(m)
    return Draft(
        kind="",
        source_id=source_id,
        title=title,
        summary=summary,
        body=body,
        url=link or None,
        authors=authors,
        published_at=published or updated,
        updated_at=updated,
        source_categories=tags,
        tags=tags,
        language_hint=language,
        media=unique_media,
        warnings=warnings,
    )


# --- XML feeds (feedparser) -----------------------------------------------------------------


def _bozo_text(exc: Any) -> str:
    msg = exc.getMessage() if hasattr(exc, "getMessage") else str(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _xml_feed(
    payload: bytes, content_type: str | None
) -> tuple[str, list[Callable[[], Draft | None]], list[str]]:
    headers = None
    if content_type and "charset=" in content_type.lower():
        headers = {"content-type": content_type}
    payload, recoded = recode(payload, content_type)
    if recoded:
        headers = None  # the payload is UTF-8 now, and its XML declaration says so
    try:
        parsed = feedparser.parse(io.BytesIO(payload), response_headers=headers)
    except Exception as exc:  # feedparser is lenient by design; a crash is a property of the input
        raise RejectedInput("malformed_feed", f"feedparser failed: {exc!r}") from exc
    warnings: list[str] = []
    bozo = None
    if parsed.get("bozo") and "bozo_exception" in parsed:
        bozo = _bozo_text(parsed["bozo_exception"])
    entries = list(parsed.get("entries") or [])
    if not entries:
        raise RejectedInput("malformed_feed", bozo or "no entries")
    if recoded:
        warnings.append(recoded)
    if bozo:
        warnings.append(f"feed parsed leniently: {bozo}")
    version = str(parsed.get("version") or "")
    kind = "feed.atom" if version.startswith("atom") else "feed.rss"
    feed = parsed.get("feed") or {}
    language = language_code(feed.get("language"))
    return kind, [partial(_xml_entry, e, language) for e in entries], warnings


_XML_DECL = re.compile(rb"^(\s*<\?xml[^>]*?encoding\s*=\s*)([\"'])[^\"']*\2", re.IGNORECASE)
_XML_DECL_ENCODING = re.compile(
    rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE
)
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE,
         codecs.BOM_UTF32_BE)


def declared_charset(payload: bytes, content_type: str | None) -> str:
    """The charset a document claims: the content type's ``charset=``, else the XML
    declaration's ``encoding``, else UTF-8 (the XML default, W3C XML 1.0 section 4.3.3)."""
    if content_type and "charset=" in content_type.lower():
        value = content_type.lower().split("charset=", 1)[1].split(";", 1)[0]
        return value.strip().strip("\"'") or "utf-8"
    m = _XML_DECL_ENCODING.match(payload[:512])
    return m.group(1).decode("ascii", "replace").strip() if m else "utf-8"


def recode(payload: bytes, content_type: str | None) -> tuple[bytes, str | None]:
    """Re-encode a feed as UTF-8 when its declared charset cannot decode it.

    A document that decodes strictly in its declared charset (:func:`declared_charset`), or
    that starts with a byte-order mark, is returned unchanged with ``None``. Otherwise (a
    KOI8-R feed labelled UTF-8, an unknown charset name, bytes of another code page) the
    charset is detected with charset-normalizer; the payload is decoded with it, re-encoded as
    UTF-8 and its XML declaration rewritten to say so. Returns ``(payload, warning)``; the
    warning names both charsets. When nothing plausible is detected the payload is returned
    unchanged (feedparser then applies its own fallbacks).
    """
    if payload.startswith(_BOMS):
        return payload, None
    declared = declared_charset(payload, content_type)
    try:
        payload.decode(declared)
        return payload, None
    except (LookupError, UnicodeDecodeError):
        pass
    best = from_bytes(payload).best()
    if best is None or best.encoding is None:
        return payload, None
    text = str(best)
    out = text.encode("utf-8")
    if _XML_DECL.match(out[:512]):
        out = _XML_DECL.sub(rb"\1\2utf-8\2", out, count=1)
    return out, (
        f"document declared as {declared!r} does not decode as such; "
        f"decoded as {best.encoding!r} (detected by charset-normalizer)"
    )


def _detail_type(entry: Any, key: str) -> str | None:
    detail = entry.get(key)
    return detail.get("type") if isinstance(detail, dict) else None


def _struct_date(entry: Any, name: str, warnings: list[str]) -> datetime | None:
    # dict.get: FeedParserDict.get("updated") falls back to "published" (deprecated alias)
    raw = dict.get(entry, name)
    parsed = dict.get(entry, f"{name}_parsed")
    if isinstance(raw, str) and (m := _SLASH_DATE.match(raw)):
        y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        try:
            dt = datetime(y, mo, d, h, mi, s, tzinfo=UTC)
        except ValueError:
            warnings.append(f"{name}: unparseable date {raw!r}")
            return None
        warnings.append(f"{name}: date {raw!r} has no time zone; read as UTC")
        return to_millis(dt)
    if parsed:
        try:
            y, mo, d, h, mi, s = (int(v) for v in parsed[:6])
            return to_millis(datetime(y, mo, d, h, mi, min(s, 59), tzinfo=UTC))
        except (ValueError, TypeError, OverflowError):
            warnings.append(f"{name}: date out of range {raw!r}")
            return None
    if raw:
        warnings.append(f"{name}: unparseable date {raw!r}")
    return None


def _xml_entry(entry: Any, feed_language: str | None) -> Draft | None:
    warnings: list[str] = []
    raw_title = entry.get("title") if isinstance(entry.get("title"), str) else ""
    title = single_line(text_of(raw_title, _detail_type(entry, "title_detail")))
    raw_summary = entry.get("summary") if isinstance(entry.get("summary"), str) else ""
    summary = text_of(raw_summary, _detail_type(entry, "summary_detail"))
    body = ""
    for part in entry.get("content") or []:
        if isinstance(part, dict) and isinstance(part.get("value"), str):
            body = text_of(part["value"], part.get("type"))
            if body:
                break
    authors: list[str] = []
    for a in entry.get("authors") or []:
        name = a.get("name") or a.get("email") if isinstance(a, dict) else None
        if isinstance(name, str):
            authors.append(single_line(name))
    if not authors and isinstance(entry.get("author"), str):
        authors.append(single_line(entry["author"]))
    tags = []
    for t in entry.get("tags") or []:
        term = (t.get("term") or t.get("label")) if isinstance(t, dict) else None
        if isinstance(term, str):
            tags.append(single_line(text_of(term, "text/plain")))
    items: list[dict[str, Any]] = []
    for m in entry.get("media_content") or []:
        if isinstance(m, dict) and isinstance(m.get("url"), str) and m["url"]:
            items.append(
                media(
                    m["url"],
                    media_type(m.get("medium"), m.get("type")),
                    None,
                    to_int(m.get("width")),
                    to_int(m.get("height")),
                )
            )
    for m in entry.get("enclosures") or []:
        if isinstance(m, dict) and isinstance(m.get("href"), str) and m["href"]:
            items.append(media(m["href"], media_type(None, m.get("type"))))
    for m in entry.get("media_thumbnail") or []:
        if isinstance(m, dict) and isinstance(m.get("url"), str) and m["url"]:
            items.append(
                media(m["url"], "image", None, to_int(m.get("width")), to_int(m.get("height")))
            )
    title_lang = as_dict(entry.get("title_detail")).get("language")
    link = entry.get("link") if isinstance(entry.get("link"), str) else None
    raw_published = dict.get(entry, "published") or dict.get(entry, "updated") or ""
    return _item_draft(
        guid=entry.get("id"),
        link=link,
        title=title,
        summary=summary,
        body=body,
        raw_title=raw_title,
        raw_published=raw_published if isinstance(raw_published, str) else "",
        published=_struct_date(entry, "published", warnings),
        updated=_struct_date(entry, "updated", warnings),
        authors=dedup(authors),
        tags=dedup(tags),
        language=feed_language or language_code(title_lang),
        items=items,
        warnings=warnings,
    )


# --- JSON Feed --------------------------------------------------------------------------------


def _json_feed(payload: bytes) -> tuple[str, list[Callable[[], Draft | None]], list[str]]:
    doc = load_json(payload)
    if not isinstance(doc, dict):
        raise RejectedInput(
            "malformed_feed", f"JSON Feed must be an object, got {type(doc).__name__}"
        )
    items = doc.get("items")
    if not isinstance(items, list):
        raise RejectedInput("malformed_feed", "not a JSON Feed: no 'items' list")
    if not items:
        raise RejectedInput("malformed_feed", "no entries")
    warnings: list[str] = []
    version = doc.get("version")
    if not (isinstance(version, str) and "jsonfeed.org/version/" in version):
        warnings.append(f"JSON Feed 'version' missing or unknown: {version!r}")
    feed_authors = _json_authors(doc)
    language = doc.get("language")
    return "feed.json", [partial(_json_item, i, feed_authors, language) for i in items], warnings


def _json_authors(obj: dict[str, Any]) -> list[str]:
    authors = obj.get("authors")
    if not isinstance(authors, list):
        authors = [obj.get("author")]
    return [single_line(n) for a in authors if isinstance(n := as_dict(a).get("name"), str)]


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _json_item(item: Any, feed_authors: list[str], feed_language: Any) -> Draft | None:
    if not isinstance(item, dict):
        return None
    warnings: list[str] = []
    raw_title = _str(item, "title")
    body = html_to_text(_str(item, "content_html"))
    body = body or collapse_whitespace(_str(item, "content_text"))
    dates = parse_dates(item, ("date_published", "date_modified"), warnings)
    items: list[dict[str, Any]] = []
    for key in ("image", "banner_image"):
        if _str(item, key):
            items.append(media(item[key], "image"))
    for att in item.get("attachments") or []:
        if isinstance(att, dict) and _str(att, "url"):
            caption = single_line(_str(att, "title")) or None
            items.append(media(att["url"], media_type(None, _str(att, "mime_type")), caption))
    tags: list[Any] = item["tags"] if isinstance(item.get("tags"), list) else []
    link = _str(item, "url") or _str(item, "external_url") or None
    raw_published = _str(item, "date_published")
    return _item_draft(
        guid=item.get("id"),
        link=link,
        title=single_line(text_of(raw_title, "text/plain")),
        summary=text_of(_str(item, "summary"), "text/plain"),
        body=body,
        raw_title=raw_title,
        raw_published=raw_published,
        published=dates["date_published"],
        updated=dates["date_modified"],
        authors=dedup(_json_authors(item) or feed_authors),
        tags=dedup([single_line(t) for t in tags if isinstance(t, str)]),
        language=language_code(item.get("language") or feed_language),
        items=items,
        warnings=warnings,
    )
