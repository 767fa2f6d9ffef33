"""The ``feedpipe`` command line (typer).

feedpipe up [--no-replay]     start Kafka, Redis, topics, worker, read endpoint; replay the
                              shared data with progress; print URLs; Ctrl-C stops it all
feedpipe down [--wipe]        stop everything; --wipe also deletes the local state
feedpipe status               processes, topic end offsets, consumer lag, DLQ counts
feedpipe topics plan|apply    diff / create the topics of topology.yaml on the broker
feedpipe replay [-s SOURCE]   publish the shared data files (topology.yaml sources)
feedpipe worker | api         run the Faust worker / read endpoint in the foreground
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from feedpipe import services
from feedpipe.settings import ROOT, settings
from feedpipe.topology import topology

cli = typer.Typer(help="feedpipe: real-time personalisation pipeline", no_args_is_help=True)
topics_cli = typer.Typer(help="Topics of topology.yaml on the broker", no_args_is_help=True)
cli.add_typer(topics_cli, name="topics")
console = Console(soft_wrap=True)

PIPELINE_TOPICS = ["cms.raw", "content.normalised", "reader.events", "profiles.updated"]


def _admin() -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": settings().kafka_bootstrap})


def _print_changes(changes: list[Any]) -> None:
    for c in changes:
        console.print(f"  {c}")


@topics_cli.command("plan")
def topics_plan() -> None:
    """Show what `topics apply` would change (nothing is changed)."""
    from feedpipe.topics import plan

    _print_changes(plan(topology(), _admin()))


@topics_cli.command("apply")
def topics_apply() -> None:
    """Create missing topics, add partitions, fix configs (never deletes)."""
    from feedpipe.topics import apply

    _print_changes(apply(topology(), _admin()))


@cli.command()
def worker() -> None:
    """Run the Faust worker (all four agents) in the foreground."""
    s = settings()
    raise SystemExit(subprocess.call(services.worker_service(s).args, cwd=ROOT))


@cli.command()
def api() -> None:
    """Run the read endpoint in the foreground."""
    raise SystemExit(subprocess.call([sys.executable, "-m", "readapi"], cwd=ROOT))


def _replay(sources: list[str] | None) -> dict[str, int]:
    """Replay sources with a progress bar; return records published per source."""
    from connectors.replay import replay_all

    s = settings()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} records"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("replaying", total=None)

        def tick(n: int) -> None:
            progress.update(task, completed=n)

        metrics = replay_all(topology(), s.data_dir, sources, tick)
    out: dict[str, int] = {}
    for name, m in metrics.items():
        out[name] = m.published
        console.print(
            f"  {name:<18} published {m.published:>8,}  rejected {sum(m.rejected.values()):>4}"
        )
    return out


def _wait_drained(timeout_s: float = 600.0) -> float:
    """Show consumer lag until the pipeline has processed everything; return seconds waited."""
    from feedpipe.lag import group_lag

    s = settings()
    t0 = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[lag]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("processing", lag="")
        quiet = 0
        while time.monotonic() - t0 < timeout_s:
            lag = group_lag(s.kafka_bootstrap, s.app_id, PIPELINE_TOPICS)
            progress.update(task, lag="  ".join(f"{t}: {n:,}" for t, n in lag.items()))
            quiet = quiet + 1 if sum(lag.values()) == 0 else 0
            if quiet >= 3:
                break
            time.sleep(1.0)
    return time.monotonic() - t0


@cli.command()
def replay(
    source: Annotated[
        list[str] | None, typer.Option("--source", "-s", help="source name(s)")
    ] = None,
) -> None:
    """Publish the shared data files of topology.yaml `sources` to Kafka."""
    _replay(source)


@cli.command()
def connect(
    names: Annotated[list[str] | None, typer.Argument(help="source names (default: all)")] = None,
    once: Annotated[bool, typer.Option("--once", help="poll each source once and exit")] = False,
    config: Annotated[str | None, typer.Option(help="sources file [connectors.yaml]")] = None,
) -> None:
    """Run the live connectors of connectors.yaml: pollers (WordPress, Drupal, RSS/Atom/JSON
    Feed), the signed webhook receiver and Debezium CDC consumers. Ctrl-C stops them."""
    import threading
    from pathlib import Path

    from connectors.config import CONNECTORS_PATH, load_config
    from connectors.live import start_all, summary

    cfg = load_config(Path(config) if config else CONNECTORS_PATH)
    if not cfg.names():
        console.print("no sources declared in connectors.yaml")
        raise SystemExit(1)
    stop = threading.Event()

    def _stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    run = start_all(cfg, names, settings().kafka_bootstrap, stop, once=once)
    console.print(f"connecting {', '.join(names or cfg.names())} (Ctrl-C stops)")
    if once:
        run.join()
        stop.set()
    while any(t.is_alive() for t in run.threads):
        time.sleep(0.5)
    for name, m in summary(run.metrics).items():
        console.print(f"  {name:<20} {m}")
    for name, exc in run.errors.items():
        console.print(f"  {name:<20} FAILED: {exc}")
    if run.errors or any(m.get("failing") for m in summary(run.metrics).values()):
        raise SystemExit(2)


@cli.command()
def up(
    no_replay: Annotated[bool, typer.Option("--no-replay", help="start the stack only")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="leave it running and return")] = False,
) -> None:
    """Start everything locally and replay the real input; Ctrl-C stops it all."""

    def _terminate(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        _up(no_replay)
        if detach:
            console.print("left running; stop with `feedpipe down`")
            return
        console.print("running; press Ctrl-C to stop")
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("\nstopping ...")
        _down(wipe=False)


def _where_to_look() -> None:
    s = settings()
    base = f"http://{s.api_host}:{s.api_port}"
    console.print("\n[bold]where to look[/]")
    console.print(f"  read endpoint   {base}/healthz")
    console.print(f"  trending        {base}/v1/trending")
    console.print(f"  a feed          {base}/v1/feeds/U35841?explain=true")
    console.print(f"  a profile       {base}/v1/profiles/U35841")
    console.print(f"  worker metrics  http://127.0.0.1:{s.worker_web_port}/performance/")
    console.print(f"  logs            {s.state_dir / 'logs'}")
    console.print("  status          feedpipe status\n")


def _up(no_replay: bool) -> None:
    from feedpipe.infra import LocalStack
    from feedpipe.topics import apply

    s = settings()
    stack = LocalStack(s)
    console.print(f"[bold]feedpipe[/] state in {s.state_dir}")
    console.print("starting Kafka and Redis ...")
    bootstrap, redis_url = stack.start()
    console.print(f"  kafka {bootstrap}   redis {redis_url}")
    console.print("applying topics from topology.yaml ...")
    _print_changes(apply(topology(), _admin()))
    console.print("starting the Faust worker and the read endpoint ...")
    services.start(services.worker_service(s), s)
    services.start(services.api_service(s), s)
    _where_to_look()
    if no_replay:
        return
    cms = [x.name for x in topology().sources if x.kind != "mind.behaviors"]
    readers = [x.name for x in topology().sources if x.kind == "mind.behaviors"]
    t0 = time.monotonic()
    n_cms = sum(_replay(cms).values())
    _wait_drained()
    t1 = time.monotonic()
    console.print(
        f"content: {n_cms:,} CMS events normalised, enriched and materialised in {t1 - t0:.1f} s"
    )
    n_reader = sum(_replay(readers).values())
    _wait_drained()
    t2 = time.monotonic()
    console.print(
        f"readers: {n_reader:,} reader events through profiles and feeds in "
        f"{t2 - t1:.1f} s ({n_reader / (t2 - t1):,.0f} events/s end to end)"
    )
    _where_to_look()


def _down(wipe: bool) -> None:
    from feedpipe.infra import LocalStack

    s = settings()
    for svc in (services.api_service(s), services.worker_service(s)):
        if services.stop(svc, s):
            console.print(f"stopped {svc.name}")
    stack = LocalStack(s)
    stack.stop()
    console.print("stopped Kafka and Redis")
    if wipe:
        stack.wipe()
        console.print(f"wiped {s.state_dir}")


@cli.command()
def down(
    wipe: Annotated[bool, typer.Option("--wipe", help="also delete the local state")] = False,
) -> None:
    """Stop the worker, the read endpoint, Kafka and Redis (and wipe the state with --wipe)."""
    _down(wipe)


@cli.command()
def status() -> None:
    """Processes, consumer lag per topic and DLQ sizes."""
    from feedpipe.infra import LocalStack
    from feedpipe.lag import end_offsets, group_lag

    s = settings()
    console.print(str(LocalStack(s).status()))
    try:
        lag = group_lag(s.kafka_bootstrap, s.app_id, PIPELINE_TOPICS, timeout_s=5)
        for t, n in lag.items():
            console.print(f"lag    {t:<22} {n:,}")
        dlqs = [t for t in topology().topics if t.endswith(".dlq")]
        for (t, p), (low, high) in sorted(end_offsets(s.kafka_bootstrap, dlqs, 5).items()):
            console.print(f"dlq    {t}[{p}] {high - low:,} records")
    except Exception as exc:
        console.print(f"kafka unreachable: {exc}")


def main() -> None:
    """Entry point of the ``feedpipe`` script."""
    cli()


if __name__ == "__main__":
    main()
