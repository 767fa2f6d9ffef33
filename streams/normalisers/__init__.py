"""Pure normalisers: a decoded ``feedpipe.RawCmsEvent`` -> ``feedpipe.Content`` records.

No Kafka, no Redis, no network. Dispatch on ``raw["kind"]``:

| kind | payload | module |
|---|---|---|
| wordpress.post | one WordPress REST post object with ``_embed`` (JSON) | :mod:`.wordpress` |
| drupal.node | one JSON:API document with a single ``node--article`` (JSON) | :mod:`.drupal` |
| feed.document | an RSS / RDF / Atom / JSON Feed document (bytes, any encoding) | :mod:`.feeds` |
| mind.news | one MIND ``news.tsv`` row (UTF-8 TSV) | :mod:`.mind` |

Expected bad input raises :class:`feedpipe.errors.RejectedInput` (codes: ``unknown_kind``,
``unknown_op``, ``empty_payload``, ``invalid_encoding``, ``invalid_json``, ``not_a_post``,
``wordpress_error``, ``missing_id``, ``missing_title``, ``jsonapi_error``, ``not_an_article``,
``malformed_feed``, ``no_usable_items``, ``bad_tsv_row``). Anything else is a bug and propagates.
"""

from __future__ import annotations

from typing import Any

from feedpipe.errors import RejectedInput
from feedpipe.topology import Topology
from streams.normalisers.common import BODY_MAX_CHARS, Draft, content_hash, finish, load_json
from streams.normalisers.drupal import normalise_node
from streams.normalisers.mind import normalise_row
from streams.normalisers.syndication import normalise_feed
from streams.normalisers.text import html_to_text
from streams.normalisers.wordpress import normalise_post

__all__ = [
    "BODY_MAX_CHARS",
    "KINDS",
    "content_hash",
    "html_to_text",
    "normalise",
]

KINDS = ("wordpress.post", "drupal.node", "feed.document", "mind.news")
_SINGLE_KINDS = ("wordpress.post", "drupal.node", "mind.news")


def normalise(raw: dict[str, Any], topo: Topology) -> list[dict[str, Any]]:
    """Normalise one raw CMS event into Content records.

    Args:
        raw: decoded ``feedpipe.RawCmsEvent`` (``payload`` bytes; ``kind``, ``op``, ``source``,
            ``brand``, ``source_id``, ``content_type``, ``event_id`` used).
        topo: topology whose brand taxonomies map ``source_categories`` to ``categories``.

    Returns:
        Content dicts with every field of ``schemas/content.avsc`` (timestamps
        tz-aware UTC, whole milliseconds), ready for ``codec('Content').encode``: one per
        WordPress post, Drupal node or MIND row, one per usable item of a feed document.
        ``op == 'delete'`` gives ``status = 'unpublished'``; a delete with an empty payload
        and a ``source_id`` gives a minimal unpublished record (empty title).

    Raises:
        RejectedInput: invalid input (codes listed in the module docstring).
    """
    kind = raw.get("kind")
    op = raw.get("op") or "upsert"
    if op not in ("upsert", "delete"):
        raise RejectedInput("unknown_op", f"op must be upsert or delete, got {op!r}")
    deleting = op == "delete"
    payload = raw.get("payload")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise RejectedInput("empty_payload", f"payload is {type(payload).__name__}, not bytes")
    payload = bytes(payload)

    if kind not in KINDS:
        raise RejectedInput("unknown_kind", f"no normaliser for kind {kind!r}")
    if deleting and not payload.strip() and raw.get("source_id") and kind in _SINGLE_KINDS:
        draft = Draft(
            kind=str(kind),
            source_id=str(raw["source_id"]),
            title="",
            status="unpublished",
            warnings=["delete event without payload"],
        )
        return [finish(draft, raw, topo)]

    if kind == "wordpress.post":
        drafts = [normalise_post(load_json(payload), deleting)]
    elif kind == "drupal.node":
        drafts = [normalise_node(load_json(payload), deleting)]
    elif kind == "mind.news":
        drafts = [normalise_row(payload, deleting)]
    else:
        drafts = normalise_feed(payload, raw.get("content_type"))
    return [finish(d, raw, topo) for d in drafts]
