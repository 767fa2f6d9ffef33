"""JSON responses of the read endpoint and their cache headers.

Every 200 carries a strong ``ETag`` (quoted hex BLAKE2b-96 of the body), a ``Cache-Control``
from :class:`CachePolicy` and ``Vary: X-API-Key, Authorization`` (so a CDN never serves one
key's answer to another key); an ``If-None-Match`` that matches the tag gives 304 without a
body. Errors and operational answers are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

VARY = "X-API-Key, Authorization"
VARY_B = VARY.encode()
CONTENT_MAX_AGE_S = 30
TRENDING_MAX_AGE_S = 10
STALE_IF_ERROR_S = 300
PRIVATE = "private, no-cache"
"""Cache-Control of personal and operator data (profiles, A/B results)."""
NO_STORE = "no-store"


@dataclass(frozen=True)
class CachePolicy:
    """``Cache-Control`` values per kind of answer."""

    personalised: str
    fallback: str
    snapshot: str
    content: str
    trending: str

    @classmethod
    def for_max_age(cls, max_age_s: int) -> CachePolicy:
        """Policies for a personalised-feed ``max-age`` of ``max_age_s`` (A): feeds
        ``public, max-age=A, s-maxage=2A, stale-while-revalidate=6A, stale-if-error=300``;
        fallback levels at most 2 s; snapshots 1 s; content 30 s; trending 10 s."""
        ma = max(0, max_age_s)
        short = min(ma, 2)
        return cls(
            personalised=(
                f"public, max-age={ma}, s-maxage={2 * ma}, stale-while-revalidate={6 * ma}, "
                f"stale-if-error={STALE_IF_ERROR_S}"
            ),
            fallback=(
                f"public, max-age={short}, s-maxage={short}, stale-if-error={STALE_IF_ERROR_S}"
            ),
            snapshot="public, max-age=1, s-maxage=1",
            content=(
                f"public, max-age={CONTENT_MAX_AGE_S}, s-maxage={CONTENT_MAX_AGE_S}, "
                f"stale-if-error={STALE_IF_ERROR_S}"
            ),
            trending=f"public, max-age={TRENDING_MAX_AGE_S}, stale-if-error={STALE_IF_ERROR_S}",
        )


def etag_of(body: bytes) -> str:
    """Strong entity tag: quoted hex BLAKE2b-96 of the body bytes."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def if_none_match(header: str | None, etag: str) -> bool:
    """True when an ``If-None-Match`` value matches ``etag`` (weak comparison, RFC 9110
    13.1.2: ``W/`` prefixes ignored, ``*`` matches)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    for tag in header.split(","):
        t = tag.strip()
        if t.startswith("W/"):
            t = t[2:]
        if t == etag:
            return True
    return False


def tagged_response(
    request: Request,
    body: bytes,
    etag: str,
    cache_control: str,
    extra: Mapping[str, str] | None = None,
) -> Response:
    """200 with the rendered JSON ``body``, its ``etag``, Cache-Control, Vary and ``extra``
    headers; 304 (same headers, no body) when the request's ``If-None-Match`` matches."""
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": VARY}
    if extra:
        headers.update(extra)
    if if_none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def cached_json(
    request: Request,
    doc: Any,
    cache_control: str,
    extra: Mapping[str, str] | None = None,
) -> Response:
    """:func:`tagged_response` of ``doc`` rendered as JSON."""
    body = orjson.dumps(doc)
    return tagged_response(request, body, etag_of(body), cache_control, extra)


def no_store_json(
    doc: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``doc`` as JSON with ``Cache-Control: no-store`` (errors, health, operator data)."""
    return Response(
        orjson.dumps(doc),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": NO_STORE, **(headers or {})},
    )


def json_error(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None,
    **fields: Any,
) -> Response:
    """``{"error": message, "request_id", **fields}`` with ``Cache-Control: no-store``."""
    rid = request.scope.get("state", {}).get("request_id")
    return no_store_json({"error": message, "request_id": rid, **fields}, status, headers)
