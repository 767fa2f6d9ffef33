"""Errors of a request to a source, and the explanation an error body carries.

:class:`TransientError` is retried by :class:`connectors.http.client.HttpClient` (timeouts,
connection errors, invalid bodies, 429, 5xx); :class:`RequestRejected` (other 4xx, error
documents) and :class:`InvalidResponse` are not.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from feedpipe.errors import FeedpipeError
from feedpipe.jsonapi import errors_reason

DETAIL_MAX_CHARS: Final = 500
BODY_KEPT_BYTES: Final = 64 * 1024


# -- errors ------------------------------------------------------------------------------------
class HttpError(FeedpipeError):
    """A request to a source failed.

    Attributes:
        code: short reason code used in metrics (e.g. ``timeout``, ``http_503``,
            ``jsonapi_error``).
        url: the request URL.
        status: HTTP status, when a response arrived.
        detail: the server's explanation (from the body), when any.
        body: the response body (first :data:`BODY_KEPT_BYTES` bytes), b"" without one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        url: str,
        status: int | None = None,
        detail: str = "",
        body: bytes = b"",
    ) -> None:
        super().__init__(f"{code}: {message} ({url})")
        self.code = code
        self.url = url
        self.status = status
        self.detail = detail
        self.body = body[:BODY_KEPT_BYTES]


class TransientError(HttpError):
    """Worth retrying: timeout, connection error, invalid/truncated body, 429 or 5xx.

    Attributes:
        retry_after: the server's ``Retry-After`` in seconds (None without one).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        url: str,
        status: int | None = None,
        detail: str = "",
        body: bytes = b"",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, message, url=url, status=status, detail=detail, body=body)
        self.retry_after = retry_after


class RequestRejected(HttpError):
    """The source refused the request (4xx other than 429) or answered with an error document
    (e.g. a JSON:API ``errors`` document); not retried. ``detail`` quotes the document."""


class InvalidResponse(HttpError):
    """A well-formed answer that is not what the endpoint promises (e.g. a JSON:API document
    with neither ``data`` nor ``errors``); not retried."""


class Interrupted(HttpError):
    """The request was abandoned because the connector is stopping."""


# -- error bodies ------------------------------------------------------------------------------
def error_detail(body: bytes) -> str:
    """The explanation an error body carries, for error messages.

    JSON:API (jsonapi.org/format/1.0/#error-objects): ``"<status> <title>: <detail>"`` per
    error joined by ``"; "``; WordPress REST (``{"code", "message", "data": {"status"}}``):
    ``"<code>: <message>"``; anything else: the body's text, whitespace collapsed, cut at
    :data:`DETAIL_MAX_CHARS` characters ("" for an empty body).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, list) and errors:
            return errors_reason(errors)[:DETAIL_MAX_CHARS]
        if "code" in doc and "message" in doc:
            return f"{doc.get('code')}: {doc.get('message')}"[:DETAIL_MAX_CHARS]
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:DETAIL_MAX_CHARS]


def jsonapi_errors(body: bytes) -> list[Any] | None:
    """The ``errors`` list of a JSON:API error document, or None when ``body`` is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    return errors if isinstance(errors, list) else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` (RFC 9110 section 10.2.3) in seconds from ``now``: delta-seconds or an
    HTTP-date (a date in the past gives 0.0). None when absent or unparsable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
