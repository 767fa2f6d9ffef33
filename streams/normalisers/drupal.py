"""Drupal JSON:API ``node--article`` documents -> Content drafts.

Document shape per the JSON:API 1.0 spec (jsonapi.org/format/1.0/: top-level ``data`` /
``errors`` / ``included``, resource identifiers ``{type, id}`` in ``relationships.*.data``)
and Drupal core's JSON:API module (attributes ``title``, ``body{value, processed, summary}``,
``created``/``changed`` as RFC 3339 with offset, ``langcode``, ``status`` bool,
``path.alias``; relationships ``uid`` -> ``user--user``, ``field_tags`` ->
``taxonomy_term--tags``, ``field_media`` -> ``media--*``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from feedpipe.cms.drupal import KIND, check_node, is_published
from feedpipe.jsonapi import identifiers, resource_key
from streams.normalisers.common import (
    Draft,
    as_dict,
    language_code,
    media,
    parse_dates,
    to_int,
)
from streams.normalisers.text import html_to_text, single_line

_MEDIA_KIND = {"image": "image", "video": "video", "remote_video": "video", "audio": "audio"}


def _href(links: Any) -> str | None:
    if isinstance(links, dict):
        self_link = links.get("self")
        href = self_link.get("href") if isinstance(self_link, dict) else self_link
        if isinstance(href, str) and href:
            return href
    return None


def _origin_of(href: str | None) -> str | None:
    """``scheme://host[:port]`` of an absolute URL, else None."""
    if not href:
        return None
    parts = urlsplit(href)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def normalise_node(doc: Any, deleting: bool) -> Draft:
    """One JSON:API single-resource document -> :class:`Draft`.

    url: the site origin (taken from the resource's or document's ``links.self.href``) joined
    with ``path.alias`` when both exist, else ``links.self.href`` (the JSON:API URL), else None.
    source_categories and tags: names of the ``field_tags`` terms found in ``included``.
    authors: ``uid`` user's ``display_name`` (or ``name``) when included. media:
    ``field_media`` resources; when the media and its file are included, the file URL with
    width/height from the relationship meta; otherwise the relationship's ``related`` link
    (to-one relationships; ``urn:uuid:<id>`` otherwise) with type ``other``, since only the
    id is known.

    status follows :func:`feedpipe.cms.drupal.is_published`.

    Raises:
        RejectedInput: see :func:`feedpipe.cms.drupal.check_node`.
    """
    data = check_node(doc)
    rid = data["id"]
    attrs = as_dict(data.get("attributes"))
    rels = as_dict(data.get("relationships"))
    included = {
        resource_key(r): r for r in doc.get("included") or [] if isinstance(r, dict) and "id" in r
    }
    warnings: list[str] = []

    title = single_line(html_to_text(attrs["title"])) if isinstance(attrs.get("title"), str) else ""
    body_field = as_dict(attrs.get("body"))
    body_html = body_field.get("processed") or body_field.get("value") or ""
    body = html_to_text(body_html) if isinstance(body_html, str) else ""
    summary_raw = body_field.get("summary")
    summary = html_to_text(summary_raw) if isinstance(summary_raw, str) else ""

    dates = parse_dates(attrs, ("created", "changed"), warnings)

    status = "published" if is_published(attrs.get("status")) else "unpublished"

    self_href = _href(data.get("links")) or _href(doc.get("links"))
    path = as_dict(attrs.get("path"))
    alias = path.get("alias")
    origin = _origin_of(self_href)
    if isinstance(alias, str) and alias.startswith("/") and origin:
        url: str | None = origin + alias
    else:
        url = self_href

    def names(rel_name: str, attr_names: tuple[str, ...]) -> list[str]:
        out = []
        for ident in identifiers(rels.get(rel_name)):
            res = included.get(resource_key(ident))
            res_attrs = res.get("attributes") if isinstance(res, dict) else None
            if not isinstance(res_attrs, dict):
                continue
            for a in attr_names:
                if isinstance(res_attrs.get(a), str) and res_attrs[a].strip():
                    out.append(single_line(res_attrs[a]))
                    break
        return out

    authors = names("uid", ("display_name", "name"))
    tags = names("field_tags", ("name",))

    media_rel = rels.get("field_media")
    media_ids = identifiers(media_rel)
    to_one = media_rel if len(media_ids) == 1 else None
    items = [_media_item(ident, to_one, included, origin) for ident in media_ids]

    langcode = attrs.get("langcode")
    return Draft(
        kind=KIND,
        source_id=rid,
        title=title,
        summary=summary,
        body=body,
        url=url,
        status="unpublished" if deleting else status,
        authors=authors,
        published_at=dates["created"],
        updated_at=dates["changed"],
        source_categories=tags,
        tags=tags,
        language_hint=None if langcode in ("und", "zxx") else language_code(langcode),
        media=items,
        warnings=warnings,
    )


def _media_item(
    ident: dict[str, Any],
    rel: Any,
    included: dict[tuple[str, str], dict[str, Any]],
    origin: str | None,
) -> dict[str, Any]:
    bundle = str(ident.get("type", "")).removeprefix("media--")
    kind = _MEDIA_KIND.get(bundle, "other")
    res = included.get(resource_key(ident))
    if isinstance(res, dict):
        res_rels = as_dict(res.get("relationships"))
        res_attrs = as_dict(res.get("attributes"))
        for rel_name, file_rel in res_rels.items():
            if not str(rel_name).startswith("field_media"):
                continue
            for file_ident in identifiers(file_rel):
                file_res = included.get(resource_key(file_ident))
                uri = as_dict(as_dict(file_res).get("attributes")).get("uri")
                file_url = uri.get("url") if isinstance(uri, dict) else None
                if not isinstance(file_url, str) or not file_url:
                    continue
                if file_url.startswith("/") and origin:
                    file_url = origin + file_url
                meta = as_dict(file_ident.get("meta"))
                caption = meta.get("alt") or meta.get("title") or res_attrs.get("name")
                return media(
                    file_url,
                    kind,
                    single_line(caption) if isinstance(caption, str) else None,
                    to_int(meta.get("width")),
                    to_int(meta.get("height")),
                )
    related = as_dict(as_dict(rel).get("links")).get("related")
    href = related.get("href") if isinstance(related, dict) else related
    url = href if isinstance(href, str) and href else f"urn:uuid:{ident['id']}"
    return media(url, "other")
