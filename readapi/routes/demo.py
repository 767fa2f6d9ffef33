"""The reader demo: ``GET /demo`` (a self-contained HTML page, no external assets) and
``GET /demo/config`` (what the page needs to start), both open like ``/ops``.

The page lets a newsroom pick a brand and a reader, shows that reader's feed
(``/v1/feeds/{user}?explain=true``, with each item's explanation), and on a click posts
``impression`` and ``click`` events to the event collector (connectors/collector/, CORS), then
polls the feed until its order changes and marks the items that moved. The API key (scopes
``feeds:read`` and ``events:write``) comes from the URL fragment ``#key=...`` (never sent to a
server; ``feedpipe up`` prints such a link) or from the key field, and is kept in the tab's
``sessionStorage``.

``/demo/config``: ``{"collector_url", "brands", "default_brand", "example_users",
"latest_cursor"}``: the collector URL the browser posts to (FEEDPIPE_COLLECTOR_URL, else the
collector's bind address), the brands of topology.yaml, up to :data:`EXAMPLE_USERS` recently
active readers (from the click path's ``active`` sets; empty when Redis fails), and the cursor
of the first page of the ``latest`` level: a young profile ranks few stories, and the page
lists the brand's newest ones after them, marked as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from feedpipe.settings import settings
from feedpipe.store.keys import keys
from feedpipe.topology import topology
from readapi.caching import NO_STORE, no_store_json
from readapi.params import encode_cursor
from readapi.routes import store_of
from readapi.store import REDIS_ERRORS

OPEN_PATHS: Final = ("/demo",)
"""Path prefixes the gateway serves without an API key (the page and its config)."""
PAGE: Final = Path(__file__).resolve().parent.parent / "static" / "demo.html"
EXAMPLE_USERS: Final = 8


async def get_page(request: Request) -> Response:
    """GET /demo: the demo page (HTML with inline CSS and JS)."""
    return Response(
        PAGE.read_bytes(),
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": NO_STORE},
    )


async def get_config(request: Request) -> Response:
    """GET /demo/config: collector URL, brands, default brand, example readers."""
    topo = topology()
    parts = topo.topics[topo.ingest.reader_events].partitions
    users: list[str] = []
    try:
        client = store_of(request).client
        async with client.pipeline(transaction=False) as pipe:
            for p in range(parts):
                pipe.zrevrange(keys().active(p), 0, EXAMPLE_USERS - 1)
            for batch in await pipe.execute():
                users += [u.decode() if isinstance(u, bytes) else str(u) for u in batch]
    except REDIS_ERRORS:
        users = []
    return no_store_json(
        {
            "collector_url": settings().collector_public_url(),
            "brands": sorted(topo.brands),
            "default_brand": request.app.state.default_brand,
            "example_users": sorted(set(users))[:EXAMPLE_USERS],
            "latest_cursor": encode_cursor("latest", 0, 0),
        }
    )
