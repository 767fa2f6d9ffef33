"""WordPress REST API source: ``{url}/wp/v2/posts?_embed`` ordered by ``modified``.

Each poll asks ``/wp/v2/posts?_embed&orderby=modified&order=asc&modified_after=<cursor>
&per_page=N&page=P&status=...`` (WordPress REST handbook, "Posts" reference:
``modified_after`` since WordPress 5.7; ``X-WP-Total`` / ``X-WP-TotalPages`` response headers,
"Pagination" page) and publishes one ``wordpress.post`` raw event per post, in the same shape
as :func:`connectors.files.cms.wordpress_events` (payload = the post object as JSON, key
``<source>:<id>``; op ``delete`` for any status but ``publish``, the rule of
:mod:`feedpipe.cms.wordpress`).

Without ``auth`` only ``status=publish`` is requested (other statuses need an authenticated
user with ``edit_posts``, else WordPress answers 400 ``rest_invalid_param``); an unpublished
post then simply stops appearing, so unpublish detection needs an application password.

Cursor, and why it is not "modified_after + page number": ``modified_after`` is exclusive and
has one-second resolution, and offset paging over a result set ordered by ``modified`` drifts
when a post is edited during the walk (it jumps to the end, every later post moves one place
up, and one is never seen: a gap). So the connector pages by key instead: the cursor is
:class:`connectors.cursor.KeysetCursor` (``modified_gmt`` of the newest published post + the ids
(and payload digests) published at exactly that second), persisted after each page was
acknowledged by Kafka. The next request always asks ``modified_after = cursor - 1 s`` (that is
``>=`` the cursor's second), page 1, and skips what was already published; only while every
post of a page was already published (more than ``per_page`` posts saved in the same second)
does it step to ``page + 1`` of the same query. A restart in the middle resumes right after the
last acknowledged page; a post edited again within the same second has another digest and is
published again (the pipeline's content-hash dedup drops true duplicates).

The cursor is sent as UTC (``...Z``); WordPress converts it to the site's time zone before
comparing with ``post_modified``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import orjson

from connectors.cursor import KeysetCursor, parse_utc
from connectors.http.errors import InvalidResponse, RequestRejected
from connectors.polling import KeysetPollingConnector
from connectors.records import Keyed, keyed_cms_event
from feedpipe.cms import wordpress

AUTH_STATUSES: Final = "publish,future,draft,pending,private,trash"
"""Statuses asked for with ``auth``: the ones a post moves between after it was created, so a
post that leaves ``publish`` arrives as a delete event (``auto-draft`` and ``inherit`` are
WordPress-internal and never were public)."""


def post_event(post: Any, source: str, brand: str, origin: str, fallback: str) -> Keyed:
    """One ``wordpress.post`` raw event for a member of a ``/wp/v2/posts`` answer: payload
    ``orjson.dumps(post)``, the rest as :func:`feedpipe.cms.wordpress.post_item` (``source_id``
    None for a member without id, which the normaliser then dead-letters)."""
    return keyed_cms_event(
        wordpress.post_item(post, orjson.dumps(post)),
        kind=wordpress.KIND,
        source=source,
        brand=brand,
        content_type=wordpress.CONTENT_TYPE,
        origin=origin,
        fallback_id=fallback,
    )


class WordPressConnector(KeysetPollingConnector):
    """Polls a WordPress site's posts (see the module docstring); ``spec.url`` is the REST
    root, e.g. ``https://newsroom.example/wp-json``."""

    @property
    def endpoint(self) -> str:
        """``{url}/wp/v2/posts``."""
        return self.spec.url.rstrip("/") + "/wp/v2/posts"

    def params(self, cursor: KeysetCursor, page: int) -> dict[str, str | int]:
        """Query parameters for ``page`` of the posts at or after ``cursor.ts``."""
        params: dict[str, str | int] = {
            "_embed": "1",
            "orderby": "modified",
            "order": "asc",
            "per_page": self.spec.page_size,
            "page": page,
            "status": AUTH_STATUSES if self.auth is not None else wordpress.PUBLIC_STATUS,
        }
        if cursor.ts is not None:
            after = cursor.ts - timedelta(seconds=1)  # modified_after is exclusive
            params["modified_after"] = after.strftime("%Y-%m-%dT%H:%M:%SZ")
        return params

    def poll_once(self) -> int:
        """Publish every post modified since the cursor (see the module docstring).

        Raises:
            connectors.http.errors.TransientError: still failing after retries.
            connectors.http.errors.RequestRejected: a 4xx (``detail`` = WordPress' code: message).
            connectors.http.errors.InvalidResponse: the body is not a JSON list of posts.
            feedpipe.kafka.producer.DeliveryError: Kafka did not acknowledge.
        """
        self.setup()
        published = 0
        page = 1
        while not self.stopping:
            cursor = self.cursor
            try:
                resp, doc = self.fetch(
                    self.endpoint, params=self.params(cursor, page), expect_json=True
                )
            except RequestRejected as exc:
                raise self.reject(exc) from exc
            origin = str(resp.request.url)
            if not isinstance(doc, list):
                raise self.reject(
                    InvalidResponse(
                        "not_a_post_list",
                        f"expected a JSON list of posts, got {type(doc).__name__}",
                        url=origin,
                        status=resp.status_code,
                    )
                )
            total_pages = _int_header(resp.headers.get("X-WP-TotalPages"))
            published += self.publish_page(
                (
                    post_event(post, self.name, self.spec.brand, origin, f"page{page}#{i}"),
                    parse_utc(post.get("modified_gmt")) if isinstance(post, dict) else None,
                )
                for i, post in enumerate(doc)
            )
            new = self.cursor
            more = total_pages is not None and page < total_pages and bool(doc)
            if not more:
                break
            # Re-ask from the new cursor (page 1) unless the cursor did not move (every post of
            # this page was already published, or they share the cursor's second): then step on.
            page = 1 if new.ts != cursor.ts else page + 1
        return published


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
