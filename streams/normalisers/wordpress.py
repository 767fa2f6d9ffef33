"""WordPress REST API posts (``/wp/v2/posts?_embed``) -> Content drafts.

Field use follows the WordPress REST API handbook, "Posts" reference
(developer.wordpress.org/rest-api/reference/posts/): ``title/excerpt/content.rendered`` are
HTML, ``date_gmt``/``modified_gmt`` are UTC without an offset, ``status`` is one of
publish|future|draft|pending|private (trash when trashed). ``_embedded`` is the ``?_embed``
expansion: ``author`` (users), ``wp:term`` (one list per taxonomy), ``wp:featuredmedia``.
"""

from __future__ import annotations

from typing import Any

from feedpipe.cms.wordpress import KIND, NOT_PUBLIC_STATUSES, check_post, is_public
from streams.normalisers.common import (
    Draft,
    as_dict,
    language_code,
    media,
    media_type,
    parse_dates,
    to_int,
)
from streams.normalisers.text import html_to_text, single_line


def _rendered(value: Any) -> str:
    """``{"rendered": html}`` (or a bare string) -> HTML string."""
    if isinstance(value, dict):
        value = value.get("rendered")
    return value if isinstance(value, str) else ""


def _embedded_list(embedded: dict[str, Any], key: str) -> list[Any]:
    value = embedded.get(key)
    return value if isinstance(value, list) else []


def normalise_post(post: Any, deleting: bool) -> Draft:
    """One post object -> :class:`Draft`.

    ``deleting``: the event is a delete; a WP delete response ``{"deleted": true,
    "previous": {...}}`` is unwrapped. ``status`` follows :func:`feedpipe.cms.wordpress.is_public`.

    Raises:
        RejectedInput: see :func:`feedpipe.cms.wordpress.check_post`.
    """
    post = check_post(post)
    pid = post["id"]
    warnings: list[str] = []

    title = single_line(html_to_text(_rendered(post.get("title"))))
    summary = html_to_text(_rendered(post.get("excerpt")))
    body = html_to_text(_rendered(post.get("content")))

    raw_status = post.get("status")
    status = "published" if is_public(raw_status) else "unpublished"
    known = isinstance(raw_status, str) and raw_status in NOT_PUBLIC_STATUSES
    if not is_public(raw_status) and not known:
        warnings.append(f"unknown post status {raw_status!r} read as unpublished")

    dates = parse_dates(post, ("date_gmt", "modified_gmt"), warnings)

    embedded = post.get("_embedded")
    if not isinstance(embedded, dict):
        embedded = {}
        warnings.append("no _embedded data: authors, categories, tags and media not resolved")

    authors = [
        single_line(str(a["name"]))
        for a in _embedded_list(embedded, "author")
        if isinstance(a, dict) and isinstance(a.get("name"), str)
    ]
    categories: list[str] = []
    tags: list[str] = []
    for group in _embedded_list(embedded, "wp:term"):
        for term in group if isinstance(group, list) else []:
            if not isinstance(term, dict) or not isinstance(term.get("name"), str):
                continue
            name = single_line(html_to_text(term["name"]))
            if term.get("taxonomy") == "category":
                categories.append(name)
            elif term.get("taxonomy") == "post_tag":
                tags.append(name)

    items: list[dict[str, Any]] = []
    for m in _embedded_list(embedded, "wp:featuredmedia"):
        if not isinstance(m, dict) or not isinstance(m.get("source_url"), str):
            continue  # e.g. {"code": "rest_forbidden"} for a private attachment
        details = as_dict(m.get("media_details"))
        caption = single_line(html_to_text(_rendered(m.get("caption"))))
        mime = m.get("mime_type") if isinstance(m.get("mime_type"), str) else None
        medium = m.get("media_type") if m.get("media_type") != "file" else None
        items.append(
            media(
                m["source_url"],
                media_type(medium if isinstance(medium, str) else None, mime),
                caption or None,
                to_int(details.get("width")),
                to_int(details.get("height")),
            )
        )

    link = post.get("link")
    return Draft(
        kind=KIND,
        source_id=str(pid),
        title=title,
        summary=summary,
        body=body,
        url=link if isinstance(link, str) and link else None,
        status="unpublished" if deleting else status,
        authors=authors,
        published_at=dates["date_gmt"],
        updated_at=dates["modified_gmt"],
        source_categories=categories,
        tags=tags,
        language_hint=language_code(post.get("lang")),
        media=items,
        warnings=warnings,
    )
