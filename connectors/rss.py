"""Feed source: RSS 2.0, RSS 1.0 (RDF), Atom or JSON Feed at ``spec.url``, polled with a
conditional GET.

Each poll sends ``If-None-Match`` / ``If-Modified-Since`` from the persisted ``ETag`` /
``Last-Modified`` (RFC 9110 sections 13.1.2 and 13.1.3). 304 Not Modified publishes nothing.
A 200 answer is published as one ``feed.document`` raw event, as
:func:`connectors.files.feeds.feed_document_events` does (payload = the document's bytes unchanged,
``source_id`` None, key ``<source>:<url>``), but only when its sha256 differs from the last
published document's (servers without validators, or with ETags that change on every request,
then publish nothing new either).

Parsing, encoding detection, item identity (GUID, else link) and "updated item" detection are
the pipeline's normaliser's job (feedparser, :mod:`streams.normalisers.syndication`): the connector
only detects that the document changed. A malformed document is still published, so the
normaliser dead-letters it with its reason rather than the connector dropping it.
``content_type`` is the server's ``Content-Type`` (with its ``charset``, which the normaliser
uses) when it names a feed, XML or JSON type; else the type sniffed by
:func:`connectors.files.feeds.guess_feed_content_type` (keeping a ``charset`` parameter).

Cursor: ``{"etag", "last_modified", "sha256"}``, saved after the event was acknowledged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from connectors.files.feeds import KIND, guess_feed_content_type
from connectors.http.errors import RequestRejected
from connectors.polling import PollingConnector
from connectors.records import Keyed
from feedpipe.cms.events import cms_event

_FEED_HINTS: Final = ("xml", "rss", "atom", "rdf", "json")


def feed_content_type(url: str, header: str | None, body: bytes) -> str:
    """The ``content_type`` of a fetched feed (see the module docstring)."""
    media = (header or "").split(";", 1)[0].strip().lower()
    if media and any(h in media for h in _FEED_HINTS):
        return str(header).strip()
    guessed = guess_feed_content_type(Path(urlsplit(url).path), body)
    charset = [p.strip() for p in (header or "").split(";")[1:] if "charset=" in p.lower()]
    return f"{guessed}; {charset[0]}" if charset else guessed


class FeedConnector(PollingConnector):
    """Polls one feed URL (see the module docstring); brand per feed from ``spec.brand``."""

    def load_state(self, cursor: dict[str, Any] | None) -> None:
        """Restore ETag, Last-Modified and the last published sha256."""
        c = cursor or {}
        self.etag: str | None = c.get("etag")
        self.last_modified: str | None = c.get("last_modified")
        self.sha256: str | None = c.get("sha256")
        self.metrics.cursor = self._describe()

    def _describe(self) -> str:
        sha = self.sha256[:12] if self.sha256 else None
        return f"etag={self.etag} last_modified={self.last_modified} sha256={sha}"

    def _cursor(self) -> dict[str, Any]:
        return {"etag": self.etag, "last_modified": self.last_modified, "sha256": self.sha256}

    def poll_once(self) -> int:
        """Conditional GET; publish the document when it changed. Returns 0 or 1.

        Raises:
            connectors.http.errors.TransientError: still failing after retries.
            connectors.http.errors.RequestRejected: a 4xx (counted in ``metrics.rejected``).
            feedpipe.kafka.producer.DeliveryError: Kafka did not acknowledge.
        """
        self.setup()
        url = self.spec.url
        headers: dict[str, str] = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        try:
            resp, _ = self.fetch(url, headers=headers)
        except RequestRejected as exc:
            raise self.reject(exc) from exc
        if resp.status_code == 304:
            self.metrics.not_modified += 1
            return 0
        body = resp.content
        self.metrics.fetched += 1
        digest = hashlib.sha256(body).hexdigest()
        etag, last_modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        if digest == self.sha256:
            self.metrics.not_modified += 1
            self.etag, self.last_modified = etag, last_modified
            self.save_cursor(self._cursor())
            self.metrics.cursor = self._describe()
            return 0
        self.publish(
            Keyed(
                f"{self.name}:{url}",
                cms_event(
                    kind=KIND,
                    source=self.name,
                    brand=self.spec.brand,
                    source_id=None,
                    payload=body,
                    content_type=feed_content_type(
                        str(resp.url), resp.headers.get("Content-Type"), body
                    ),
                    origin=url,
                    fallback_id=url,
                ),
            )
        )
        cursor = {"etag": etag, "last_modified": last_modified, "sha256": digest}
        self.commit(cursor, f"etag={etag} last_modified={last_modified} sha256={digest[:12]}")
        self.etag, self.last_modified, self.sha256 = etag, last_modified, digest  # after the ack
        return 1
