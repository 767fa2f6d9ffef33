"""The read endpoint: a Starlette app serving feeds, content, profiles and trending from Redis only.

Run it with ``python -m readapi`` (binds ``settings().api_host``/``api_port``); build it in code
with :func:`readapi.app.create_app`.
"""

from readapi.app import create_app

__all__ = ["create_app"]
