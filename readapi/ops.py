"""Operator views served by the read endpoint (placeholder until the ops page lands).

:func:`routes` returns the Starlette routes the read endpoint mounts for operators; the ops page
and its snapshot reader live here so the feed routes in :mod:`readapi.app` stay separate.
"""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    """The operator routes to mount on the read endpoint (none yet)."""
    return []
