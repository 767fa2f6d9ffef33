"""A webhook body -> raw CMS events, by the rules of :mod:`feedpipe.cms` (pure, no Kafka)."""

from __future__ import annotations

import orjson

from connectors.records import Keyed, keyed_cms_event
from feedpipe.cms import drupal, wordpress
from feedpipe.errors import ConfigError, RejectedInput


def body_events(kind: str, body: bytes, source: str, brand: str, origin: str) -> list[Keyed]:
    """The raw CMS events of a webhook body of ``kind``, keyed ``"<source>:<source_id>"``.

    ``wordpress.post``: a post object, a delete response ``{"deleted": true, "previous":
    {...}}`` or a non-empty list of posts (:func:`feedpipe.cms.wordpress.post_items`).
    ``drupal.node``: a JSON:API document with one ``node--article`` or a collection of them
    (:func:`feedpipe.cms.drupal.node_items`). A single object keeps the raw body as payload; op
    follows the CMS's status rule. The body is all or nothing: one bad item refuses it.

    Raises:
        RejectedInput: ``invalid_json``; for WordPress ``not_a_post``, ``wordpress_error``,
            ``missing_id``; for Drupal ``jsonapi_error`` (with each error's detail),
            ``not_an_article``, ``missing_id``.
        ConfigError: an unsupported kind.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RejectedInput("invalid_json", f"body is not JSON: {exc}") from None
    if kind == wordpress.KIND:
        items, content_type = wordpress.post_items(doc, body), wordpress.CONTENT_TYPE
    elif kind == drupal.KIND:
        items, content_type = drupal.node_items(doc, body), drupal.CONTENT_TYPE
    else:
        raise ConfigError(f"webhook source {source}: unsupported kind {kind!r}")
    for i, item in enumerate(items):
        if item.error is not None:
            where = f"item {i}: " if len(items) > 1 else ""
            raise RejectedInput(item.error.code, where + item.error.reason)
    return [
        keyed_cms_event(
            item,
            kind=kind,
            source=source,
            brand=brand,
            content_type=content_type,
            origin=origin,
            fallback_id=item.source_id or origin,
        )
        for item in items
    ]
