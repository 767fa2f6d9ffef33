"""``python -m readapi [--access-log]``: serve the read endpoint with uvicorn.

Binds ``settings().api_host``/``api_port`` (FEEDPIPE_API_HOST / FEEDPIPE_API_PORT), one worker,
no reload, log level ``settings().log_level``; the access log is off unless ``--access-log``.
"""

from __future__ import annotations

import argparse

import uvicorn

from feedpipe.settings import settings
from readapi.app import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run uvicorn until interrupted (SIGINT/SIGTERM stop it gracefully)."""
    parser = argparse.ArgumentParser(prog="python -m readapi", description=__doc__)
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    s = settings()
    uvicorn.run(
        create_app(),
        host=s.api_host,
        port=s.api_port,
        workers=1,
        reload=False,
        access_log=args.access_log,
        log_level=s.log_level.lower(),
        lifespan="on",
    )


if __name__ == "__main__":
    main()
