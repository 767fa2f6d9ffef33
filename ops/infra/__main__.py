"""``python -m ops.infra jars|up|down|status``: the local stack without the feedpipe CLI.

``jars`` fetches the pinned Kafka broker jars into ``<state_dir>/kafka/lib`` (used by
``make setup``); ``up``/``down``/``status`` drive :class:`ops.infra.LocalStack` with the
environment settings (FEEDPIPE_*). Exit status 1 with the message on :class:`InfraError`.
"""

from __future__ import annotations

import argparse
import sys

from feedpipe.settings import settings
from ops.infra import InfraError, LocalStack, ensure_jars, pinned_version


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; returns the process exit status (0 ok, 1 InfraError)."""
    parser = argparse.ArgumentParser(prog="python -m ops.infra")
    parser.add_argument("command", choices=["jars", "up", "down", "status"])
    parser.add_argument("--wipe", action="store_true", help="with down: delete the state too")
    args = parser.parse_args(argv)
    s = settings()
    try:
        if args.command == "jars":
            lib = ensure_jars(s.state_dir)
            print(f"Kafka {pinned_version()} jars in {lib}")
        elif args.command == "up":
            bootstrap, redis_url = LocalStack(s).start()
            print(f"kafka {bootstrap}\nredis {redis_url}")
        elif args.command == "down":
            stack = LocalStack(s)
            stack.wipe() if args.wipe else stack.stop()
        else:
            print(LocalStack(s).status())
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
