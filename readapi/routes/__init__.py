"""Route handlers of the read endpoint, one module per group of resources:
:mod:`~readapi.routes.feeds` (feeds and the page-cache fast path),
:mod:`~readapi.routes.resources` (content, profiles, trending),
:mod:`~readapi.routes.experiments` (A/B results) and :mod:`~readapi.routes.health` (liveness,
readiness, metrics, the OpenAPI document). :func:`readapi.app.create_app` lists the routes.
"""

from __future__ import annotations

from starlette.requests import Request

from readapi.store import Store


def store_of(request: Request) -> Store:
    """The app's :class:`readapi.store.Store` (created in the lifespan)."""
    store: Store = request.app.state.store
    return store
