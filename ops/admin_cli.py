"""The ``feedpipe topics``, ``feedpipe apikey`` and ``feedpipe schemas`` command groups
(typer sub-apps, mounted by :mod:`ops.cli`): topics of topology.yaml on the broker, API keys of
the read endpoint and the collector, and the Avro schemas' evolution check.
"""

from __future__ import annotations

from typing import Annotated

import typer

from feedpipe.settings import settings
from feedpipe.topology import topology
from ops import stack
from ops.console import console

topics_cli = typer.Typer(help="Topics of topology.yaml on the broker", no_args_is_help=True)
apikey_cli = typer.Typer(help="API keys of the read endpoint", no_args_is_help=True)
schemas_cli = typer.Typer(help="Avro schemas of schemas/ (evolution checks)", no_args_is_help=True)


@topics_cli.command("plan")
def topics_plan() -> None:
    """Show what `topics apply` would change (nothing is changed)."""
    from feedpipe.kafka.topics import plan

    stack.print_changes(plan(topology(), stack.admin()))


@schemas_cli.command("check")
def schemas_check(
    against: Annotated[
        str | None, typer.Option(help="git ref to compare with [FEEDPIPE_SCHEMA_BASE_REF, HEAD]")
    ] = None,
) -> None:
    """Check schemas/ against a git ref: backward and forward compatible, ids unchanged.

    Exit 0 when compatible, 1 with one line per incompatibility (feedpipe.wire.compat).
    """
    from feedpipe.wire.compat import SchemaCheckError, at_ref, check_registry, working_tree

    ref = against or settings().schema_base_ref
    try:
        problems = check_registry(at_ref(ref), working_tree())
    except SchemaCheckError as exc:
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    for p in problems:
        console.print(f"  {p}", markup=False)
    console.print(f"schemas vs {ref}: {'compatible' if not problems else 'INCOMPATIBLE'}")
    raise typer.Exit(1 if problems else 0)


@topics_cli.command("apply")
def topics_apply() -> None:
    """Create missing topics, add partitions, fix configs (never deletes)."""
    from feedpipe.kafka.topics import apply

    stack.print_changes(apply(topology(), stack.admin()))


@apikey_cli.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="label, e.g. frontend")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help="feeds:read, profiles:read, events:write or admin (repeat)"),
    ],
    rate: Annotated[float, typer.Option(help="sustained requests/s")] = 100.0,
    burst: Annotated[int, typer.Option(help="bucket size, requests")] = 200,
) -> None:
    """Create a key; print its token once (only its SHA-256 is written to the keys file)."""
    from feedpipe.apikeys import KeyFileError, create_key

    try:
        key, token = create_key(stack.keys_path(), name, scope, rate, burst)
    except KeyFileError as exc:
        console.print(f"[red]{exc}[/]")
        raise SystemExit(2) from exc
    console.print(f"created {key.key_id} ({', '.join(key.scopes)}; {key.rate_per_s:g}/s, "
                  f"burst {key.burst}) in {stack.keys_path()}")
    console.print("token (shown once, send as X-API-Key):")
    print(token)


@apikey_cli.command("list")
def apikey_list() -> None:
    """List stored keys (ids, names, scopes, limits; never tokens)."""
    from feedpipe.apikeys import load_keys

    for k in load_keys(stack.keys_path()):
        console.print(f"{k.key_id}  {k.name:<16} {','.join(k.scopes):<36} "
                      f"{k.rate_per_s:g}/s burst {k.burst}  {k.created_at}")


@apikey_cli.command("revoke")
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="key id, e.g. k_3f9a1c2b")]) -> None:
    """Remove a key (the running API drops it within ~1 s)."""
    from feedpipe.apikeys import revoke_key

    if not revoke_key(stack.keys_path(), key_id):
        console.print(f"no key {key_id}")
        raise SystemExit(1)
    console.print(f"revoked {key_id}")
