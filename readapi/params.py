"""Request parameters of the read endpoint: ids, ``limit``, ``brand``, boolean flags and feed
cursors.

Every parser raises :class:`BadRequest` (answered with 400 ``{"error": message}``) before any
Redis call. The OpenAPI document (:mod:`readapi.openapi`) states the same formats and imports
the patterns from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from starlette.requests import Request

from feedpipe.store.keys import safe_id

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 99_999
"""Deepest cursor position (five digits; feeds hold ``ranking.feed_size`` items)."""
LEVELS = ("personalised", "trending", "latest")
"""The feed's degradation ladder, highest level first (:mod:`readapi.fallback`)."""
CURSOR_PATTERN = r"^(personalised|trending|latest)\.[0-9]{1,5}\.[0-9]{1,5}$"
FLAG_VALUES = ("", "true", "false", "1", "0")
"""Accepted values of a boolean query flag (empty means false)."""
TRUE_VALUES = frozenset({"1", "true"})
FALSE_VALUES = frozenset({"0", "false"})

_CURSOR = re.compile(CURSOR_PATTERN)


class BadRequest(Exception):
    """A request parameter is invalid; answered with 400 ``{"error": message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def api_id(value: str) -> str:
    """An id from a request (path value or ``brand``): :func:`feedpipe.store.keys.safe_id`
    (1-128 of ``[A-Za-z0-9_.-]``) and no ``..``: a dot-segment, which clients, proxies and CDNs
    may rewrite (RFC 3986, 5.2.4), so the cached URL and the Redis key could name different
    things. Checked before any Redis call.

    Raises:
        ValueError: the value is not such an id.
    """
    safe_id(value)
    if ".." in value:
        raise ValueError(f"invalid id {value[:40]!r}: '..' is not allowed")
    return value


def path_id(request: Request, name: str) -> str:
    """The path parameter ``name`` checked by :func:`api_id`; raises :class:`BadRequest`."""
    try:
        return api_id(str(request.path_params[name]))
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from exc


def limit_param(qp: Mapping[str, str]) -> int:
    """``limit`` (1..:data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`).

    Raises:
        BadRequest: not an integer in that range (400).
    """
    raw = qp.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"limit: expected an integer 1..{MAX_LIMIT}, got {raw[:20]!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: expected an integer 1..{MAX_LIMIT}, got {value}")
    return value


def brand_param(qp: Mapping[str, str]) -> str | None:
    """``brand`` checked by :func:`api_id`; ``None`` when absent or empty.

    Raises:
        BadRequest: not a valid id (400).
    """
    raw = qp.get("brand")
    if raw is None or raw == "":
        return None
    try:
        return api_id(raw)
    except ValueError as exc:
        raise BadRequest(f"brand: {exc}") from exc


def flag_param(qp: Mapping[str, str], name: str) -> bool:
    """A boolean flag: one of :data:`FLAG_VALUES`; absent or empty is false.

    Raises:
        BadRequest: any other value (400).
    """
    raw = qp.get(name)
    if raw is None or raw == "":
        return False
    if raw in TRUE_VALUES:
        return True
    if raw in FALSE_VALUES:
        return False
    raise BadRequest(f"{name}: expected true, false, 1 or 0, got {raw[:20]!r}")


def encode_cursor(level: str, offset: int, rank: int) -> str:
    """Cursor ``"{level}.{offset}.{rank}"`` (clients treat it as opaque).

    ``offset`` is the position in the level's candidate list where the next page starts,
    ``rank`` the number of items already served (so ranks continue across pages). Readable
    rather than encoded on purpose: any string matching :data:`CURSOR_PATTERN` is a valid
    request (a crafted offset past the end gives an empty page), so the OpenAPI document can
    state the exact format.
    """
    return f"{level}.{offset}.{rank}"


def decode_cursor(raw: str) -> tuple[str, int, int]:
    """Inverse of :func:`encode_cursor`; raises :class:`BadRequest` for anything else."""
    if not _CURSOR.fullmatch(raw):  # fullmatch: '$' would let a trailing newline through
        raise BadRequest("cursor: not a cursor returned by this API")
    level, off, rank = raw.split(".")
    return level, int(off), int(rank)


def cursor_param(qp: Mapping[str, str]) -> tuple[str | None, int, int]:
    """(level, offset, rank) of ``cursor``; ``(None, 0, 0)`` when absent or empty."""
    raw = qp.get("cursor")
    if raw is None or raw == "":
        return None, 0, 0
    return decode_cursor(raw)


class FeedQuery(NamedTuple):
    """The query of a feed request (:func:`feed_params`)."""

    limit: int
    brand: str | None
    explain: bool
    level: str | None
    """Ladder level the cursor is pinned to; ``None`` for a first page."""
    offset: int
    served: int
    """Items already served on earlier pages (ranks continue after it)."""


def feed_params(qp: Mapping[str, str]) -> FeedQuery:
    """(limit, brand, explain, cursor level, offset, rank) of a feed request's query;
    raises :class:`BadRequest`."""
    return FeedQuery(limit_param(qp), brand_param(qp), flag_param(qp, "explain"), *cursor_param(qp))
