"""Drupal JSON:API source: node collections (``{url}[/{language}]/jsonapi/node/{bundle}`` for
each configured ``node--{bundle}`` resource type) and JSON:API Views displays
(``{url}[/{language}]/jsonapi/views/{view}/{display}``), each sorted by ``changed`` and each
with its own cursor (one cursor file per source: ``{"endpoints": {path: cursor}}``; a cursor
file holding one bare cursor is read as the cursor of ``jsonapi/node/article``).

Request (Drupal core JSON:API module, "Filtering", "Sorting", "Pagination" and "Includes" docs
on drupal.org; document shape per jsonapi.org/format/1.0/)::

    {url}/jsonapi/node/article?sort=changed
        &filter[changed][value]=<cursor, unix seconds>&filter[changed][operator]=>=
        &include=field_tags,uid&page[limit]=N

then ``links.next.href`` while the walk stays inside one ``changed`` second (see below).
One ``drupal.node`` raw event per item, shaped as :func:`connectors.files.cms.drupal_events`
(payload ``{"data": item, "included": [resources the item references]}``, ``source_id`` the
item's UUID, op ``delete`` for an unpublished node: the rule of :mod:`feedpipe.cms.drupal`).

Cursor: :class:`connectors.cursor.KeysetCursor` (newest ``changed`` published + the ids and
payload digests published at that second), persisted after each page was acknowledged by
Kafka. The filter is ``>=`` so items sharing the cursor's second are asked again and skipped
when already published; after a page that moved the cursor the connector re-asks from the new
cursor instead of following ``links.next`` (offset links drift when an article is edited during
the walk, which would leave a gap); it follows ``links.next`` only while every item of a page
shares the cursor's second. The Umami demo data (all 8 articles saved in the same second) is
exactly that case.

Views: the JSON:API Views module applies the view's own filters, sort and pager, so a view is
asked without ``filter``/``sort`` and walked through ``links.next`` every poll; the cursor then
skips what was already published. Configure the view to sort by ``changed``, ascending.

Errors: a JSON:API error document (HTTP 4xx, or ``errors`` in a 200 answer) is a
:class:`connectors.http.errors.RequestRejected` with code ``jsonapi_error`` whose message
carries each error's ``status title: detail``; it is counted in
``metrics.rejected["jsonapi_error"]`` and fails the poll (the source's back-off and failing
report apply). Anonymous JSON:API requests only list published nodes: unpublish detection
needs ``auth``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import orjson

from connectors.config import LiveSourceSpec
from connectors.cursor import KeysetCursor, parse_utc
from connectors.http.errors import InvalidResponse, RequestRejected, error_detail, jsonapi_errors
from connectors.polling import KeysetPollingConnector
from connectors.records import Keyed, keyed_cms_event
from feedpipe.cms import drupal


def item_events(
    doc: Mapping[str, Any], source: str, brand: str, origin: str
) -> Iterator[tuple[Keyed, Any]]:
    """``(event, item)`` per item of a JSON:API collection document (``data`` a list): each
    item's single-resource document (:func:`feedpipe.cms.drupal.split_collection`) as payload,
    the rest as :func:`feedpipe.cms.drupal.node_item` (an item without an id gets
    ``source_id`` None, so the normaliser dead-letters it; key ``<source>:<origin>#<n>``)."""
    for n, single in enumerate(drupal.split_collection(doc)):
        event = keyed_cms_event(
            drupal.node_item(single, orjson.dumps(single)),
            kind=drupal.KIND,
            source=source,
            brand=brand,
            content_type=drupal.CONTENT_TYPE,
            origin=origin,
            fallback_id=f"{origin}#{n}",
        )
        yield event, single["data"]


def _changed(item: Any) -> datetime | None:
    """``attributes.changed`` of a resource as UTC, None when absent or unparsable."""
    attrs = item.get("attributes") if isinstance(item, dict) else None
    return parse_utc(attrs.get("changed")) if isinstance(attrs, dict) else None


def next_href(doc: Mapping[str, Any]) -> str | None:
    """``links.next.href`` (or a bare ``links.next`` string) of a document, else None."""
    links = doc.get("links")
    nxt = links.get("next") if isinstance(links, dict) else None
    href = nxt.get("href") if isinstance(nxt, dict) else nxt
    return href if isinstance(href, str) and href else None


DEFAULT_PATH = "jsonapi/node/article"


def endpoint_paths(spec: LiveSourceSpec) -> list[str]:
    """Paths below the site root a source polls, in order: ``[{language}/]jsonapi/node/{bundle}``
    per resource type, then ``[{language}/]jsonapi/views/{view}/{display}`` per view."""
    prefix = f"{spec.language}/" if spec.language else ""
    paths = [f"{prefix}jsonapi/node/{t.removeprefix('node--')}" for t in spec.resource_types]
    return paths + [f"{prefix}jsonapi/views/{v}" for v in spec.views]


def is_view(path: str) -> bool:
    """True for a JSON:API Views path."""
    return "/jsonapi/views/" in f"/{path}"


class DrupalConnector(KeysetPollingConnector):
    """Polls a Drupal site's node resource types and views (see the module docstring);
    ``spec.url`` is the site root, e.g. ``https://newsroom.example``."""

    cursors: dict[str, KeysetCursor]
    path: str = DEFAULT_PATH

    @property
    def endpoint(self) -> str:
        """Absolute URL of the endpoint being polled (the first one before a poll)."""
        return self.spec.url.rstrip("/") + "/" + self.path

    def load_state(self, cursor: dict[str, Any] | None) -> None:
        """Restore one :class:`KeysetCursor` per endpoint path (ValueError when corrupt)."""
        paths = endpoint_paths(self.spec)
        saved: Any = (cursor or {}).get("endpoints") if cursor and "endpoints" in cursor else None
        if saved is None:
            saved = {DEFAULT_PATH: cursor} if cursor else {}
        if not isinstance(saved, dict):
            raise ValueError(f"cursor 'endpoints' must be an object, got {saved!r}")
        self.cursors = {p: KeysetCursor.from_json(saved.get(p)) for p in paths}
        self.path = paths[0]
        self.cursor = self.cursors[self.path]
        self.metrics.cursor = self.cursor.describe()

    def commit(self, cursor: dict[str, Any], describe: str) -> None:
        """Persist every endpoint's cursor, ``cursor`` being the new one of :attr:`path`."""
        state = {p: c.to_json() for p, c in self.cursors.items()}
        state[self.path] = cursor
        super().commit({"endpoints": state}, f"{self.path}: {describe}")

    def params(self, cursor: KeysetCursor) -> dict[str, str | int]:
        """Query of the first page at or after ``cursor.ts`` (a view: includes only)."""
        params: dict[str, str | int] = {}
        if self.spec.include:
            params["include"] = ",".join(self.spec.include)
        if is_view(self.path):
            return params
        params.update({"sort": "changed", "page[limit]": self.spec.page_size})
        if cursor.ts is not None:
            params["filter[changed][value]"] = int(cursor.ts.timestamp())
            params["filter[changed][operator]"] = ">="
        return params

    def _get(self, url: str, params: dict[str, str | int] | None) -> tuple[str, dict[str, Any]]:
        """(request URL, collection document); JSON:API errors -> ``jsonapi_error``."""
        try:
            resp, doc = self.fetch(url, params=params, expect_json=True)
        except RequestRejected as exc:
            code = "jsonapi_error" if jsonapi_errors(exc.body) is not None else exc.code
            raise self.reject(
                RequestRejected(
                    code,
                    f"HTTP {exc.status}: {exc.detail or 'no detail'}",
                    url=exc.url,
                    status=exc.status,
                    detail=exc.detail,
                    body=exc.body,
                )
            ) from exc
        origin = str(resp.request.url)
        if jsonapi_errors(resp.content) is not None:
            detail = error_detail(resp.content)
            raise self.reject(
                RequestRejected(
                    "jsonapi_error",
                    f"error document with HTTP {resp.status_code}: {detail}",
                    url=origin,
                    status=resp.status_code,
                    detail=detail,
                    body=resp.content,
                )
            )
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise self.reject(
                InvalidResponse(
                    "not_a_collection",
                    "not a JSON:API collection (no 'data' list): "
                    + error_detail(resp.content)[:200],
                    url=origin,
                    status=resp.status_code,
                )
            )
        return origin, doc

    def poll_once(self) -> int:
        """Publish every node changed since its endpoint's cursor, endpoint by endpoint (see
        the module docstring).

        Raises:
            connectors.http.errors.TransientError: still failing after retries.
            connectors.http.errors.RequestRejected: ``jsonapi_error`` (message = the errors'
                details)
                or another 4xx.
            connectors.http.errors.InvalidResponse: ``not_a_collection``.
            feedpipe.kafka.producer.DeliveryError: Kafka did not acknowledge.
        """
        self.setup()
        published = 0
        for path in endpoint_paths(self.spec):
            if self.stopping:
                break
            self.path, self.cursor = path, self.cursors[path]
            published += self._poll_endpoint()
        return published

    def _poll_endpoint(self) -> int:
        """:meth:`poll_once` for the endpoint :attr:`path`."""
        published = 0
        url: str = self.endpoint
        params: dict[str, str | int] | None = self.params(self.cursor)
        while not self.stopping:
            cursor = self.cursor
            origin, doc = self._get(url, params)
            published += self.publish_page(
                (event, _changed(item))
                for event, item in item_events(doc, self.name, self.spec.brand, origin)
            )
            new = self.cursor
            self.cursors[self.path] = new
            nxt = next_href(doc)
            if nxt is None or not doc["data"]:
                break
            if new.ts != cursor.ts and not is_view(self.path):
                url, params = self.endpoint, self.params(new)
            else:
                url, params = nxt, None
        return published
