"""HTML and plain-text cleaning shared by the normalisers.

HTML goes through two libraries: nh3 (Rust ``ammonia`` sanitiser) drops scripts, styles,
comments, processing instructions and every attribute, keeping only structural tags; then
inscriptis renders the result as layout-aware text (block elements on their own lines, list
bullets, table cells side by side, entities decoded). The text is then normalised here: runs
of horizontal whitespace (including no-break spaces) become one space, lines are stripped,
blank lines are dropped, and control characters other than newline are removed.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy
import nh3
from inscriptis import get_text
from inscriptis.model.config import ParserConfig

_LAYOUT_TAGS: set[str] = {
    "a",
    "abbr",
    "address",
    "article",
    "aside",
    "b",
    "blockquote",
    "br",
    "caption",
    "cite",
    "code",
    "dd",
    "del",
    "details",
    "dfn",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "i",
    "ins",
    "kbd",
    "li",
    "main",
    "mark",
    "nav",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "samp",
    "section",
    "small",
    "span",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "time",
    "tr",
    "u",
    "ul",
    "var",
}
"""Tags kept for inscriptis' layout; all others are removed with their text kept
(script and style are removed with their content, nh3's default ``clean_content_tags``)."""

_INSCRIPTIS = ParserConfig(display_links=False, display_images=False)
_HSPACE = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")
_TAG_OR_ENTITY = re.compile(
    r"<[A-Za-z!/?][^>]*>"  # a tag, comment or processing instruction
    r"|&(?:#\d{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"  # a character reference
)


def _drop_controls(text: str) -> str:
    """Remove Unicode control (Cc) characters except newline; tabs become spaces first."""
    text = text.replace("\t", " ").replace("\r\n", "\n").replace("\r", "\n")
    if text.isprintable():
        return text
    return "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")


def repair_mojibake(text: str) -> str:
    """``text`` with mojibake undone by ftfy's ``fix_encoding`` (e.g. ``'SchÃ¶n'`` ->
    ``'Schön'``: UTF-8 read as Windows-1252 or Latin-1, also when doubled). Only encoding
    errors are fixed: quotes, widths and ligatures are left as written. Clean text is returned
    unchanged."""
    if text.isascii():
        return text
    return ftfy.fix_encoding(text)


def collapse_whitespace(text: str) -> str:
    """Normalise plain text: mojibake repaired (:func:`repair_mojibake`), controls removed,
    horizontal whitespace runs -> one space, lines stripped, blank lines dropped (lines joined
    by ``\\n``)."""
    text = _HSPACE.sub(" ", _drop_controls(repair_mojibake(text)))
    return _NEWLINES.sub("\n", text).strip()


def single_line(text: str) -> str:
    """:func:`collapse_whitespace`, then newlines become spaces (titles, names, tags)."""
    return collapse_whitespace(text).replace("\n", " ")


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment or document.

    Sanitised with nh3 (structural tags only, no attributes, scripts/styles/comments dropped),
    rendered with inscriptis (block elements separated by newlines, entities decoded), then
    normalised by :func:`collapse_whitespace`. Returns ``""`` for empty or tag-only input.
    Never raises for any ``str`` input.
    """
    if not html or not html.strip():
        return ""
    cleaned = nh3.clean(html, tags=_LAYOUT_TAGS, attributes={}, link_rel=None)
    if not cleaned.strip():
        return ""
    return collapse_whitespace(get_text(cleaned, _INSCRIPTIS))


def looks_like_html(text: str) -> bool:
    """True when ``text`` contains something shaped like a tag or a character/entity reference."""
    return _TAG_OR_ENTITY.search(text) is not None


def text_of(value: str, content_type: str | None = None) -> str:
    """Plain text of a value whose declared type may be plain text or (X)HTML.

    Declared plain text (``text/plain``, ``text``) is only whitespace-normalised unless it
    visibly carries markup or entity references (feeds often mislabel escaped HTML as text),
    in which case it goes through :func:`html_to_text` like HTML does.
    """
    if not value:
        return ""
    plain = content_type is not None and ("plain" in content_type or content_type == "text")
    if plain and not looks_like_html(value):
        return collapse_whitespace(value)
    return html_to_text(value)


def derive_title(text: str, limit: int = 120) -> str:
    """A title taken from body text: its first line, cut at a word boundary to at most
    ``limit`` characters (an ellipsis ``…`` marks a cut). ``""`` for empty text."""
    first = collapse_whitespace(text).split("\n", 1)[0]
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0] if " " in first[:limit] else first[:limit]
    return cut.rstrip(" ,;:-") + "…"
