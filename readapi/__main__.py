"""``python -m readapi [--no-access-log]``: serve the read endpoint with uvicorn.

Binds ``settings().api_host``/``api_port`` (FEEDPIPE_API_HOST / FEEDPIPE_API_PORT), with
``--workers N`` (FEEDPIPE_API_WORKERS, default 1) uvicorn processes sharing the socket (each with
its own caches, trending snapshot and 1/N of every key's rate limit), no reload, uvloop +
httptools when installed (they are pinned dependencies). Logs are JSON lines
on stderr: the ``readapi`` loggers (one ``readapi.access`` line per request unless
``FEEDPIPE_API_ACCESS_LOG=false`` or ``--no-access-log``; circuit changes, key reloads) at
``settings().log_level``; uvicorn's own access log stays off (ours has the request id, key id
and ladder level).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

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
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="API processes on the port [FEEDPIPE_API_WORKERS, 1]",
    )
    args = parser.parse_args(argv)
    # uvicorn's worker processes (--workers > 1) read their settings from the environment
    if args.workers is not None:
        os.environ["FEEDPIPE_API_WORKERS"] = str(args.workers)
    if args.no_access_log:
        os.environ["FEEDPIPE_API_ACCESS_LOG"] = "false"
    settings.cache_clear()
    s = settings()
    configure_logging(s.log_level, s.api_access_log)
    app: Any = create_app() if s.api_workers <= 1 else "readapi.__main__:worker_app"
    uvicorn.run(
        app,
        factory=s.api_workers > 1,
        host=s.api_host,
        port=s.api_port,
        workers=s.api_workers,
        reload=False,
        access_log=False,
        proxy_headers=False,  # no client address is used; saves a middleware per request
        log_level=s.log_level.lower(),
        lifespan="on",
    )


def worker_app() -> Any:
    """App factory run in each of uvicorn's worker processes (``--workers`` > 1): logging as
    configured by :func:`main` (from the environment), then :func:`readapi.app.create_app`."""
    s = settings()
    configure_logging(s.log_level, s.api_access_log)
    return create_app()


if __name__ == "__main__":
    main()
