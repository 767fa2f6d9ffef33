"""CMS simulator: a real local HTTP server (127.0.0.1, ephemeral port) serving the shared data as
a WordPress REST API, a Drupal JSON:API and feed URLs, with injectable faults. No mocks: the
connectors talk HTTP to it through their real httpx client. Used by the connector tests and by
the fault-injection suite (ops/faults.py, scenario ``connector-kill``).

Routes (state is plain attributes of :class:`FixtureServer`, mutable between polls):

- ``GET /wp-json/wp/v2/posts``: :attr:`FixtureServer.wp_posts` (real posts read from
  ``wordpress/frontity/*.json``), ``status`` (comma list; anything but ``publish`` needs Basic
  auth :attr:`wp_credentials`, else 400 ``rest_invalid_param`` as WordPress answers),
  ``modified_after`` (exclusive, ``...Z`` or naive UTC), ``orderby=modified&order=asc``,
  ``per_page`` / ``page`` with ``X-WP-Total`` / ``X-WP-TotalPages`` headers (a page past the
  end is 400 ``rest_post_invalid_page_number``).
- ``GET /jsonapi/node/article``: :attr:`drupal_items` (real ``node--article`` resources),
  ``filter[changed][value]`` (unix seconds) with ``filter[changed][operator]`` (``>=``, ``>``),
  ``sort=changed``, ``page[limit]`` / ``page[offset]`` and an absolute ``links.next``. Any
  other JSON:API path (``/es/jsonapi/node/page``, ``/jsonapi/views/<view>/<display>``) is
  served the same way from :attr:`drupal_routes` (path -> resources).
- ``GET /feeds/<name>``: :attr:`feeds` (body, ETag, Last-Modified, Content-Type) with
  ``If-None-Match`` / ``If-Modified-Since`` -> 304.

Faults (:meth:`FixtureServer.fault`) are consumed in order for a path, each applying to the
request numbers it names (1-based, per path) or to requests whose query matches a predicate:
an HTTP status with body and headers, a delay longer than the client's timeout, a truncated
body (with a matching Content-Length, so only the JSON is broken), or a file served as is.
Every request is recorded in :attr:`FixtureServer.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

Query = dict[str, str]


@dataclass
class Fault:
    """One injected fault.

    Attributes:
        kind: ``status`` (answer ``status`` with ``body``/``headers``), ``sleep`` (wait
            ``sleep_s`` then answer normally: the client has timed out by then), ``truncate``
            (the normal answer cut to half its bytes), ``file`` (``body`` read from ``path``).
        on: request numbers (1-based, per path) it applies to; empty = use ``when``.
        when: predicate on the request's query; applies ``times`` times.
    """

    kind: str
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0
    path: Path | None = None
    on: tuple[int, ...] = ()
    when: Callable[[Query], bool] | None = None
    times: int = 1


@dataclass
class Recorded:
    """A request as the server saw it."""

    path: str
    query: Query
    headers: dict[str, str]
    n: int  # request number for this path (1-based)


@dataclass
class FeedDoc:
    """A feed URL's current answer."""

    body: bytes
    content_type: str
    etag: str | None = None
    last_modified: datetime | None = None
    honour_conditional: bool = True


def wp_time(text: str) -> datetime:
    """WordPress ``*_gmt`` (naive UTC) or ISO with Z/offset -> aware UTC."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class FixtureServer:
    """The server (see the module docstring). Use as a context manager; :attr:`base` is
    ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self.wp_posts: list[dict[str, Any]] = []
        self.wp_credentials: tuple[str, str] | None = None
        self.drupal_items: list[dict[str, Any]] = []
        self.drupal_routes: dict[str, list[dict[str, Any]]] = {}
        self.feeds: dict[str, FeedDoc] = {}
        self.requests: list[Recorded] = []
        self._faults: dict[str, list[Fault]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fixture = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FixtureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- setup helpers ---------------------------------------------------------------------
    def fault(self, path: str, fault: Fault) -> None:
        """Add ``fault`` for ``path`` (e.g. ``/wp-json/wp/v2/posts``)."""
        with self._lock:
            self._faults.setdefault(path, []).append(fault)

    def set_feed(
        self,
        name: str,
        body: bytes,
        content_type: str,
        *,
        last_modified: datetime | None = None,
        etag: str | None = None,
        honour_conditional: bool = True,
    ) -> str:
        """Serve ``body`` at ``/feeds/<name>`` (ETag default: quoted sha256 prefix); returns
        the URL."""
        self.feeds[name] = FeedDoc(
            body,
            content_type,
            etag or '"' + hashlib.sha256(body).hexdigest()[:16] + '"',
            last_modified or datetime(2024, 1, 1, tzinfo=UTC),
            honour_conditional,
        )
        return f"{self.base}/feeds/{name}"

    def requests_to(self, path: str) -> list[Recorded]:
        """Recorded requests for ``path``."""
        return [r for r in self.requests if r.path == path]

    # -- internals -------------------------------------------------------------------------
    def _record(self, path: str, query: Query, headers: dict[str, str]) -> tuple[int, Fault | None]:
        with self._lock:
            n = self._counts[path] = self._counts.get(path, 0) + 1
            self.requests.append(Recorded(path, query, headers, n))
            for f in self._faults.get(path, []):
                if f.on:
                    if n in f.on:
                        return n, f
                elif f.times > 0 and (f.when is None or f.when(query)):
                    f.times -= 1
                    return n, f
        return n, None


class _Handler(BaseHTTPRequestHandler):
    server_version = "feedpipe-fixture/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def fx(self) -> FixtureServer:
        return self.server.fixture  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            hdrs = {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout fault)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        _, fault = self.fx._record(parts.path, query, headers)
        if fault is not None and fault.kind == "status":
            return self._send(fault.status, fault.body, fault.headers)
        if fault is not None and fault.kind == "file":
            assert fault.path is not None
            return self._send(
                fault.status,
                fault.path.read_bytes(),
                fault.headers or {"Content-Type": "application/vnd.api+json"},
            )
        if fault is not None and fault.kind == "sleep":
            time.sleep(fault.sleep_s)
        status, body, hdrs = self._route(parts.path, query, headers)
        if fault is not None and fault.kind == "truncate":
            body = body[: len(body) // 2]
        self._send(status, body, hdrs)

    def _route(
        self, path: str, query: Query, headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        if path == "/wp-json/wp/v2/posts":
            return self._wp_posts(query, headers)
        if path == "/jsonapi/node/article":
            return self._drupal(query, path, self.fx.drupal_items)
        if path in self.fx.drupal_routes:
            return self._drupal(query, path, self.fx.drupal_routes[path])
        if path.startswith("/feeds/") and path[len("/feeds/") :] in self.fx.feeds:
            return self._feed(self.fx.feeds[path[len("/feeds/") :]], headers)
        return 404, orjson.dumps({"code": "rest_no_route", "message": "No route"}), {}

    # WordPress -----------------------------------------------------------------------------
    def _wp_error(self, status: int, code: str, message: str) -> tuple[int, bytes, dict[str, str]]:
        return (
            status,
            orjson.dumps({"code": code, "message": message, "data": {"status": status}}),
            {},
        )

    def _wp_posts(self, q: Query, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        statuses = (q.get("status") or "publish").split(",")
        if any(s != "publish" for s in statuses):
            creds = self.fx.wp_credentials
            want = (
                "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
                if creds
                else None
            )
            if want is None or headers.get("authorization") != want:
                return self._wp_error(400, "rest_invalid_param", "Invalid parameter(s): status")
        posts = [p for p in self.fx.wp_posts if (p.get("status") or "publish") in statuses]
        if "modified_after" in q:
            after = wp_time(q["modified_after"])
            posts = [p for p in posts if wp_time(p["modified_gmt"]) > after]
        if q.get("orderby") == "modified":
            posts.sort(key=lambda p: wp_time(p["modified_gmt"]), reverse=q.get("order") == "desc")
        per_page = int(q.get("per_page", "10"))
        page = int(q.get("page", "1"))
        total = len(posts)
        pages = math.ceil(total / per_page)
        if page > max(pages, 1):
            return self._wp_error(
                400,
                "rest_post_invalid_page_number",
                "The page number requested is larger than the number of pages available.",
            )
        body = orjson.dumps(posts[(page - 1) * per_page : page * per_page])
        return 200, body, {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}

    # Drupal --------------------------------------------------------------------------------
    def _drupal(
        self, q: Query, path: str, resources: list[dict[str, Any]]
    ) -> tuple[int, bytes, dict[str, str]]:
        items = list(resources)
        if "filter[changed][value]" in q:
            value = int(q["filter[changed][value]"])
            op = q.get("filter[changed][operator]", "=")
            ops: dict[str, Callable[[int], bool]] = {
                ">=": lambda t: t >= value,
                ">": lambda t: t > value,
                "=": lambda t: t == value,
            }
            items = [
                i for i in items if ops[op](int(wp_time(i["attributes"]["changed"]).timestamp()))
            ]
        if q.get("sort") == "changed":
            items.sort(key=lambda i: wp_time(i["attributes"]["changed"]))
        limit = min(int(q.get("page[limit]", "50")), 50)
        offset = int(q.get("page[offset]", "0"))
        chunk = items[offset : offset + limit]
        base = f"{self.fx.base}{path}"
        links: dict[str, Any] = {"self": {"href": f"{base}?{urlencode(q)}"}}
        if offset + limit < len(items):
            nq = {**q, "page[offset]": str(offset + limit), "page[limit]": str(limit)}
            links["next"] = {"href": f"{base}?{urlencode(nq)}"}
        doc = {"jsonapi": {"version": "1.0"}, "data": chunk, "links": links}
        return 200, orjson.dumps(doc), {"Content-Type": "application/vnd.api+json"}

    # Feeds ---------------------------------------------------------------------------------
    def _feed(self, doc: FeedDoc, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        hdrs = {"Content-Type": doc.content_type}
        if doc.etag:
            hdrs["ETag"] = doc.etag
        if doc.last_modified:
            hdrs["Last-Modified"] = format_datetime(doc.last_modified, usegmt=True)
        if doc.honour_conditional:
            inm = headers.get("if-none-match")
            ims = headers.get("if-modified-since")
            if inm is not None:
                if doc.etag and inm == doc.etag:
                    return 304, b"", hdrs
            elif ims and doc.last_modified and parsedate_to_datetime(ims) >= doc.last_modified:
                return 304, b"", hdrs
        return 200, doc.body, hdrs
