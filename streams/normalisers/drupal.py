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

from feedpipe.errors import RejectedInput
from feedpipe.jsonapi import errors_reason
from streams.normalisers.common import (
    Draft,
    as_dict,
    language_code,
    media,
    parse_iso_utc,
    to_int,
)
from streams.normalisers.text import html_to_text, single_line

KIND = "drupal.node"
ARTICLE = "node--article"

_MEDIA_KIND = {"image": "image", "video": "video", "remote_video": "video", "audio": "audio"}


def _identifiers(rel: Any) -> list[dict[str, Any]]:
    """Resource identifiers of one relationship object (to-one or to-many)."""
    data = rel.get("data") if isinstance(rel, dict) else None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return []
    return [d for d in data if isinstance(d, dict) and isinstance(d.get("id"), str)]


def _key(ident: dict[str, Any]) -> tuple[str, str]:
    return (str(ident.get("type")), str(ident.get("id")))


def split_jsonapi_collection(doc: Any) -> list[dict[str, Any]]:
    """Split a JSON:API collection into single-resource documents.

    Args:
        doc: decoded JSON:API document.

    Returns:
        For a collection (``data`` a non-empty list): one ``{"jsonapi", "data": item,
        "included": [...], "links": {"self": item's self link}}`` per item, ``included``
        holding the included resources the item references, directly or through other
        included resources (e.g. media -> file), in document order. Anything else (a
        single-resource document, an error document, the index with ``data: []``, a non-object)
        is returned as ``[doc]`` unchanged so the normaliser accepts or rejects it.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list) or not doc["data"]:
        return [doc]
    inc = doc.get("included")  # anything but a list (e.g. a number) counts as none
    included = [r for r in inc if isinstance(r, dict)] if isinstance(inc, list) else []
    by_key = {_key(r): r for r in included}
    out: list[dict[str, Any]] = []
    for item in doc["data"]:
        wanted: set[tuple[str, str]] = set()
        todo = [item] if isinstance(item, dict) else []
        while todo:
            res = todo.pop()
            rels = res.get("relationships")
            for rel in rels.values() if isinstance(rels, dict) else []:
                for ident in _identifiers(rel):
                    k = _key(ident)
                    if k in by_key and k not in wanted:
                        wanted.add(k)
                        todo.append(by_key[k])
        single: dict[str, Any] = {
            "data": item,
            "included": [r for r in included if _key(r) in wanted],
        }
        if "jsonapi" in doc:
            single["jsonapi"] = doc["jsonapi"]
        links = item.get("links") if isinstance(item, dict) else None
        if isinstance(links, dict) and "self" in links:
            single["links"] = {"self": links["self"]}
        out.append(single)
    return out


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

    Raises:
        RejectedInput: ``not_an_article`` (not an object, a collection, the index, another
            type), ``jsonapi_error`` (``errors`` member), ``missing_id``.
    """
    if not isinstance(doc, dict):
        raise RejectedInput("not_an_article", f"payload is a JSON {type(doc).__name__}")
    if isinstance(doc.get("errors"), list):
        raise RejectedInput("jsonapi_error", errors_reason(doc["errors"]))
    data = doc.get("data")
    if isinstance(data, list):
        raise RejectedInput(
            "not_an_article",
            f"document holds a collection of {len(data)} resources"
            + ("; split it with split_jsonapi_collection" if data else " (e.g. the index)"),
        )
    if not isinstance(data, dict):
        raise RejectedInput(
            "not_an_article",
            "document has neither 'data' nor 'errors' (members: "
            + ", ".join(sorted(map(str, doc)))
            + ")",
        )
    if data.get("type") != ARTICLE:
        raise RejectedInput(
            "not_an_article", f"resource type is {data.get('type')!r}, not {ARTICLE}"
        )
    rid = data.get("id")
    if not isinstance(rid, str) or not rid:
        raise RejectedInput("missing_id", "node--article has no 'id'")
    attrs = as_dict(data.get("attributes"))
    rels = as_dict(data.get("relationships"))
    included = {_key(r): r for r in doc.get("included") or [] if isinstance(r, dict) and "id" in r}
    warnings: list[str] = []

    title = single_line(html_to_text(attrs["title"])) if isinstance(attrs.get("title"), str) else ""
    body_field = as_dict(attrs.get("body"))
    body_html = body_field.get("processed") or body_field.get("value") or ""
    body = html_to_text(body_html) if isinstance(body_html, str) else ""
    summary_raw = body_field.get("summary")
    summary = html_to_text(summary_raw) if isinstance(summary_raw, str) else ""

    dates = {}
    for name in ("created", "changed"):
        try:
            dates[name] = parse_iso_utc(attrs.get(name))
        except ValueError as exc:
            dates[name] = None
            warnings.append(f"{name}: {exc}")

    raw_status = attrs.get("status")
    status = "published" if raw_status is True or raw_status is None else "unpublished"

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
        for ident in _identifiers(rels.get(rel_name)):
            res = included.get(_key(ident))
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
    media_ids = _identifiers(media_rel)
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
    res = included.get(_key(ident))
    if isinstance(res, dict):
        res_rels = as_dict(res.get("relationships"))
        res_attrs = as_dict(res.get("attributes"))
        for rel_name, file_rel in res_rels.items():
            if not str(rel_name).startswith("field_media"):
                continue
            for file_ident in _identifiers(file_rel):
                file_res = included.get(_key(file_ident))
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
