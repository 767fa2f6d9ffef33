"""CMS answers saved as files: a WordPress ``/wp-json/wp/v2/posts`` response and a Drupal
JSON:API document -> raw CMS events, one per post / node.

Splitting and the upsert/delete rule are :mod:`feedpipe.cms.wordpress` and
:mod:`feedpipe.cms.drupal`, the same as for the pollers, the webhook receiver and the
normaliser. A file that cannot be split (invalid JSON, an error document, an empty list) is
still published, as one event with the file's bytes and ``source_id`` None, so the normaliser
dead-letters it with its reason; nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from connectors.records import Keyed, keyed_cms_event
from feedpipe.cms import drupal, wordpress
from feedpipe.cms.events import UPSERT, CmsItem
from feedpipe.errors import RejectedInput


def _file_events(
    path: Path,
    source: str,
    brand: str,
    *,
    kind: str,
    content_type: str,
    split: Callable[[Any, bytes], list[CmsItem]],
) -> Iterator[Keyed]:
    """Events of the items ``split`` finds in the file (key fallback ``<file name>#<i>``), or
    one unsplit event with the raw bytes (key fallback ``<file name>``)."""
    raw = path.read_bytes()
    origin = str(path)
    try:
        items = split(orjson.loads(raw), raw)
    except (orjson.JSONDecodeError, RejectedInput):
        items = None
    if items is None:
        unsplit = CmsItem(source_id=None, payload=raw, op=UPSERT)
        yield keyed_cms_event(
            unsplit,
            kind=kind,
            source=source,
            brand=brand,
            content_type=content_type,
            origin=origin,
            fallback_id=path.name,
        )
        return
    for i, item in enumerate(items):
        yield keyed_cms_event(
            item,
            kind=kind,
            source=source,
            brand=brand,
            content_type=content_type,
            origin=origin,
            fallback_id=path.name if len(items) == 1 else f"{path.name}#{i}",
        )


def wordpress_events(path: Path, source: str, brand: str) -> Iterator[Keyed]:
    """``wordpress.post`` raw events from a ``/wp-json/wp/v2/posts`` response file.

    The file holds a JSON list of posts or one post object
    (:func:`feedpipe.cms.wordpress.post_items`): one event per post, key ``"<source>:<id>"``,
    op ``delete`` for a post that is not public. A member that is not a post gets
    ``source_id`` None (key ``"<source>:<file name>#<i>"``); an unsplittable file is one event
    with the file's bytes (key ``"<source>:<file name>"``).

    Raises:
        OSError: the file cannot be read.
    """
    return _file_events(
        path,
        source,
        brand,
        kind=wordpress.KIND,
        content_type=wordpress.CONTENT_TYPE,
        split=wordpress.post_items,
    )


def drupal_events(path: Path, source: str, brand: str) -> Iterator[Keyed]:
    """``drupal.node`` raw events from a Drupal JSON:API document (``application/vnd.api+json``).

    A collection gives one event per item (payload ``{"data": item, "included": [what it
    references]}``, :func:`feedpipe.cms.drupal.split_collection`), a detail document one event
    with the file's bytes; op ``delete`` for an unpublished node. Anything else (error
    documents, the empty index, invalid JSON) is one event with the file's bytes and
    ``source_id`` None. Key ``"<source>:<source_id>"`` (``"<source>:<file name>[#<i>]"``
    without one).

    Raises:
        OSError: the file cannot be read.
    """
    return _file_events(
        path,
        source,
        brand,
        kind=drupal.KIND,
        content_type=drupal.CONTENT_TYPE,
        split=drupal.node_items,
    )
