"""A Debezium change of a WordPress ``wp_posts`` row -> a ``wordpress.post`` raw CMS event
(see :mod:`connectors.cdc`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from connectors.cdc.debezium import Change, Skip, date_value, parse_change
from feedpipe import ids
from feedpipe.cms import wordpress
from feedpipe.cms.events import DELETE, cms_event, event_key, resource_id
from feedpipe.errors import RejectedInput

WP_POST_COLUMNS: Final = ("ID", "post_type", "post_status")  # required to map a row


def row_to_post(
    row: Mapping[str, Any], column_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A ``wp_posts`` row -> WordPress REST-like post object.

    | wp_posts column | post field |
    |---|---|
    | ID | id |
    | post_author | author |
    | post_date_gmt | date_gmt |
    | post_modified_gmt | modified_gmt |
    | post_status | status |
    | post_type | type |
    | post_name | slug |
    | guid | link |
    | post_title / post_content / post_excerpt | title / content / excerpt ``{"rendered": ...}`` |

    The text columns hold the stored (unfiltered) HTML, not the output of WordPress's
    ``the_content`` filters (shortcodes are not expanded).
    """
    types = column_types or {}
    post: dict[str, Any] = {
        "id": row.get("ID"),
        "date_gmt": date_value(row.get("post_date_gmt"), types.get("post_date_gmt")),
        "modified_gmt": date_value(row.get("post_modified_gmt"), types.get("post_modified_gmt")),
        "status": row.get("post_status"),
        "type": row.get("post_type"),
        "link": row.get("guid"),
        "title": {"rendered": row.get("post_title") or ""},
        "content": {"rendered": row.get("post_content") or ""},
        "excerpt": {"rendered": row.get("post_excerpt") or ""},
    }
    if "post_name" in row:
        post["slug"] = row["post_name"]
    if "post_author" in row:
        post["author"] = row["post_author"]
    return post


def change_to_raw_event(
    change: Change,
    source: str,
    brand: str,
    *,
    post_types: Iterable[str] = ("post",),
    origin: str | None = None,
) -> tuple[str, dict[str, Any]] | Skip:
    """Map a parsed change of a ``wp_posts`` row onto (Kafka key, RawCmsEvent dict).

    op is ``delete`` for a ``d`` change, else :func:`feedpipe.cms.wordpress.post_op` of the
    mapped post (any status but ``publish`` is a delete). event_id = ``ids.event_id(source, ID,
    op, sha256 hex of payload)`` (op included: a delete carries the same row image as the
    update before it).

    Raises:
        RejectedInput: ``not_wp_posts`` (the row lacks ID / post_type / post_status: another
            table; or a post_type that is not a string), ``missing_id`` (ID null or empty).
    """
    row = change.row
    assert row is not None  # parse_change guarantees it
    missing = [c for c in WP_POST_COLUMNS if c not in row]
    if missing:
        table = f"table {change.table}" if change.table else "row"
        raise RejectedInput(
            "not_wp_posts",
            f"{table} is not a wp_posts row: missing columns {missing} (has {sorted(row)[:12]})",
        )
    sid = resource_id(row["ID"])
    if sid is None:
        raise RejectedInput("missing_id", "wp_posts row has no usable ID")
    post_type = row.get("post_type")
    if not isinstance(post_type, str):
        raise RejectedInput("not_wp_posts", f"post_type is {post_type!r:.60}, not a string")
    if post_type not in set(post_types):
        return Skip("post_type", f"post_type {post_type!r} is not one of {sorted(post_types)}")
    post = row_to_post(row, change.column_types)
    op = DELETE if change.op == "d" else wordpress.post_op(post)
    payload = orjson.dumps(post)
    event = cms_event(
        kind=wordpress.KIND,
        source=source,
        brand=brand,
        source_id=sid,
        payload=payload,
        content_type=wordpress.CONTENT_TYPE,
        origin=origin or f"cdc:{change.table or 'wp_posts'}",
        fallback_id=sid,
        op=op,
    )
    event["event_id"] = ids.event_id(source, sid, op, hashlib.sha256(payload).hexdigest())
    return event_key(source, sid, sid), event


def cdc_to_raw_event(
    message: bytes | None,
    source: str,
    brand: str,
    *,
    post_types: Iterable[str] = ("post",),
    origin: str | None = None,
) -> tuple[str, dict[str, Any]] | Skip:
    """One Debezium message value of a ``wp_posts`` topic -> (Kafka key, RawCmsEvent dict).

    Args:
        message: the Kafka message value (None for a tombstone).
        source / brand: the configured source name and brand.
        post_types: ``post_type`` values to publish (others are skipped).
        origin: ``RawCmsEvent.origin`` (default ``cdc:<db.table>``).

    Returns:
        ``("<source>:<ID>", event)`` with ``kind`` ``wordpress.post``, or :class:`Skip`
        (``tombstone``, ``post_type``).

    Raises:
        RejectedInput: see :func:`parse_change` and :func:`change_to_raw_event`.
    """
    if message is None:
        return Skip("tombstone", "null value (tombstone after a delete)")
    change = parse_change(message)
    if isinstance(change, Skip):
        return change
    return change_to_raw_event(change, source, brand, post_types=post_types, origin=origin)
