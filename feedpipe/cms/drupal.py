"""Drupal JSON:API node documents (``node--article`` or any other ``node--<bundle>``): status
rule, collection splitting and what makes a document one node.

Document shape per the JSON:API 1.0 spec (jsonapi.org/format/1.0/: top-level ``data`` /
``errors`` / ``included``, resource identifiers ``{type, id}`` in ``relationships.*.data``).

Status rule. Drupal's node ``status`` attribute is a boolean: true = published. A node whose
``status`` is anything but true is a **delete** (unpublish); a node without the attribute (a
sparse fieldset of an anonymous request, which only lists published nodes) is an upsert.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from feedpipe.cms.events import DELETE, UPSERT, CmsItem, Op, resource_id
from feedpipe.errors import RejectedInput
from feedpipe.jsonapi import errors_reason, identifiers, resource_key

KIND: Final = "drupal.node"
CONTENT_TYPE: Final = "application/vnd.api+json"
ARTICLE: Final = "node--article"
NODE_PREFIX: Final = "node--"


def is_node_type(value: Any) -> bool:
    """True for a node resource type name: ``node--<bundle>`` with a non-empty bundle."""
    return isinstance(value, str) and value.startswith(NODE_PREFIX) and len(value) > len(
        NODE_PREFIX
    )


def is_published(status: Any) -> bool:
    """True for ``status`` true, or no status at all."""
    return status is True or status is None


def node_op(resource: Any) -> Op:
    """``upsert`` for a published node (see the module docstring), else ``delete``; a resource
    without attributes (or not an object) is an upsert, for the normaliser to judge."""
    attrs = resource.get("attributes") if isinstance(resource, dict) else None
    if not isinstance(attrs, dict):
        return UPSERT
    return UPSERT if is_published(attrs.get("status")) else DELETE


def is_collection(doc: Any) -> bool:
    """True for a document whose ``data`` is a non-empty list."""
    return isinstance(doc, dict) and isinstance(doc.get("data"), list) and bool(doc["data"])


def split_collection(doc: Any) -> list[Any]:
    """Split a JSON:API collection into single-resource documents.

    Args:
        doc: decoded JSON:API document.

    Returns:
        For a collection (``data`` a non-empty list): one ``{"data": item, "included": [...]}``
        per item, ``included`` holding the document's included resources the item references,
        directly or through other included resources (e.g. media -> file), in document order.
        Anything else (a single-resource document, an error document, the index with
        ``data: []``, a non-object) is returned as ``[doc]`` unchanged, for
        :func:`check_node` to accept or refuse.
    """
    if not is_collection(doc):
        return [doc]
    inc = doc.get("included")  # anything but a list (e.g. a number) counts as none
    included = [r for r in inc if isinstance(r, dict)] if isinstance(inc, list) else []
    by_key = {resource_key(r): r for r in included}
    out: list[Any] = []
    for item in doc["data"]:
        wanted: set[tuple[str, str]] = set()
        todo = [item] if isinstance(item, dict) else []
        while todo:
            rels = todo.pop().get("relationships")
            for rel in rels.values() if isinstance(rels, dict) else []:
                for ident in identifiers(rel):
                    key = resource_key(ident)
                    if key in by_key and key not in wanted:
                        wanted.add(key)
                        todo.append(by_key[key])
        out.append({"data": item, "included": [r for r in included if resource_key(r) in wanted]})
    return out


def _is_single(doc: Any) -> bool:
    """True for a document whose ``data`` is one resource object and that has no ``errors``."""
    return (
        isinstance(doc, dict)
        and not isinstance(doc.get("errors"), list)
        and isinstance(doc.get("data"), dict)
    )


def _not_one_article(doc: Any) -> RejectedInput:
    """Why ``doc`` is not a single-resource document."""
    if not isinstance(doc, dict):
        return RejectedInput("not_an_article", f"payload is a JSON {type(doc).__name__}")
    if isinstance(doc.get("errors"), list):
        return RejectedInput("jsonapi_error", errors_reason(doc["errors"]))
    data = doc.get("data")
    if isinstance(data, list):
        return RejectedInput(
            "not_an_article",
            f"document holds a collection of {len(data)} resources"
            + ("; split it with split_collection" if data else " (e.g. the index)"),
        )
    return RejectedInput(
        "not_an_article",
        "document has neither 'data' nor 'errors' (members: "
        + ", ".join(sorted(map(str, doc)))
        + ")",
    )


def check_node(doc: Any) -> dict[str, Any]:
    """The ``data`` resource of a single-resource document holding one node (``node--article``
    or any other ``node--<bundle>``: :func:`is_node_type`).

    Raises:
        RejectedInput: ``jsonapi_error`` (an ``errors`` document; the reason lists each error's
            ``status title: detail``), ``not_an_article`` (not an object, a collection, the
            index, no ``data``, a resource that is not a node), ``missing_id``.
    """
    if not _is_single(doc):
        raise _not_one_article(doc)
    data: dict[str, Any] = doc["data"]
    if not is_node_type(data.get("type")):
        raise RejectedInput(
            "not_an_article", f"resource type is {data.get('type')!r}, not a node--<bundle>"
        )
    rid = data.get("id")
    if not isinstance(rid, str) or not rid:
        raise RejectedInput("missing_id", f"{data['type']} has no 'id'")
    return data


def node_items(doc: Any, raw: bytes) -> list[CmsItem]:
    """One :class:`CmsItem` per node of a decoded JSON:API document (``raw`` its bytes).

    A collection gives one item per resource, payload ``orjson.dumps`` of its single-resource
    document (:func:`split_collection`); a single-resource document gives one item with ``raw``
    as payload; see :func:`node_item`.

    Raises:
        RejectedInput: the document holds no resource: ``jsonapi_error`` (an error document)
            or ``not_an_article`` (the empty index, no ``data``, not an object).
    """
    if is_collection(doc):
        singles = [(single, orjson.dumps(single)) for single in split_collection(doc)]
    elif _is_single(doc):
        singles = [(doc, raw)]
    else:
        raise _not_one_article(doc)
    return [node_item(single, payload) for single, payload in singles]


def node_item(single: Any, payload: bytes) -> CmsItem:
    """The :class:`CmsItem` of one single-resource document, published as ``payload``:
    ``source_id`` the resource's ``id`` (None without a usable one), op per :func:`node_op`,
    ``error`` what :func:`check_node` raises."""
    resource = single.get("data") if isinstance(single, dict) else None
    error: RejectedInput | None = None
    try:
        check_node(single)
    except RejectedInput as exc:
        error = exc
    return CmsItem(
        source_id=resource_id(resource.get("id")) if isinstance(resource, dict) else None,
        payload=payload,
        op=node_op(resource),
        error=error,
    )
