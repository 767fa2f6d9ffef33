"""``python -m readapi [--no-access-log]``: serve the read endpoint with uvicorn.

Binds ``settings().api_host``/``api_port`` (FEEDPIPE_API_HOST / FEEDPIPE_API_PORT), one worker,
no reload, uvloop + httptools when installed (they are pinned dependencies). Logs are JSON lines
on stderr: the ``readapi`` loggers (one ``readapi.access`` line per request unless
``FEEDPIPE_API_ACCESS_LOG=false`` or ``--no-access-log``; circuit changes, key reloads) at
``settings().log_level``; uvicorn's own access log stays off (ours has the request id, key id
and ladder level).
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from feedpipe.settings import settings
from readapi.app import create_app
from readapi.gateway import JsonLogFormatter


def configure_logging(level: str, access_log: bool) -> None:
    """JSON lines on stderr for the ``readapi`` loggers; ``readapi.access`` off unless asked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("readapi")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("readapi.access").setLevel(logging.INFO if access_log else logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run uvicorn until interrupted (SIGINT/SIGTERM stop it gracefully)."""
    parser = argparse.ArgumentParser(prog="python -m readapi", description=__doc__)
    parser.add_argument(
        "--no-access-log", action="store_true", help="no per-request log line (overrides env)"
    )
    args = parser.parse_args(argv)
    s = settings()
    configure_logging(s.log_level, s.api_access_log and not args.no_access_log)
    uvicorn.run(
        create_app(),
        host=s.api_host,
        port=s.api_port,
        workers=1,
        reload=False,
        access_log=False,
        proxy_headers=False,  # no client address is used; saves a middleware per request
        log_level=s.log_level.lower(),
        lifespan="on",
    )


if __name__ == "__main__":
    main()
