"""Pieces shared by the connectors' raw ASGI handlers (the webhook receiver, the event
collector): a request body read with a size limit, and a JSON response."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.types import Receive, Send

_JSON = (b"content-type", b"application/json")


class BodyError(Exception):
    """The body could not be read: HTTP ``status`` with an error ``code`` and ``reason``."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, counted as it streams.

    Raises:
        BodyError: 413 ``body_too_large`` past ``limit`` bytes; 400 ``client_disconnect`` when
            the client went away mid-body.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyError(400, "client_disconnect", "client disconnected mid-body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyError(413, "body_too_large", f"body exceeds limit {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond_json(
    send: Send, status: int, body: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Send ``body`` as JSON (orjson) with ``status``, its length and the ``extra`` headers."""
    data = orjson.dumps(body)
    headers = [_JSON, (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
