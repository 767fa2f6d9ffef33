"""The ``feedpipe`` command line (typer): the commands and their options; the local stack's
``up``, ``down`` and ``status`` are in :mod:`ops.stack`.

feedpipe up [--no-replay] [--detach]
                              start Kafka, Redis, topics, worker, read endpoint, collector;
                              replay the shared data with progress; print URLs; Ctrl-C or
                              `feedpipe down` stops it all
feedpipe down [--wipe]        stop everything; --wipe also deletes the local state
feedpipe status               processes, consumer lag per topic, DLQ sizes
feedpipe topics plan|apply    diff / create the topics of topology.yaml on the broker
feedpipe replay [-s SOURCE]   publish the shared data files (topology.yaml sources)
feedpipe worker | api | collector   run the Faust worker / read endpoint / event collector
                              in the foreground
feedpipe apikey create|list|revoke   API keys of the read endpoint and the collector (hashes)
feedpipe lag [--group G] [--json] [--window N] [--interval S] [--watch]
                              consumer lag per partition, Burrow-style status, exit 2 on STALL/STOP
feedpipe simulate [--rate R] [--duration S] [--collector URL]
                              live-shaped reader events (Zipf users, sessions) at a target rate
feedpipe connect | evaluate | rebuild | faults | schemas check   (see each command's --help)
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

from feedpipe.settings import ROOT, settings
from ops import services, stack
from ops.admin_cli import apikey_cli, schemas_cli, topics_cli
from ops.console import console

cli = typer.Typer(help="feedpipe: real-time personalisation pipeline", no_args_is_help=True)
cli.add_typer(topics_cli, name="topics")
cli.add_typer(apikey_cli, name="apikey")
cli.add_typer(schemas_cli, name="schemas")


@cli.command()
def worker() -> None:
    """Run the Faust worker (the normalise and enrich agents and the click path) in the
    foreground."""
    s = settings()
    raise SystemExit(subprocess.call(services.worker_service(s).args, cwd=ROOT))


@cli.command()
def api() -> None:
    """Run the read endpoint in the foreground."""
    raise SystemExit(subprocess.call([sys.executable, "-m", "readapi"], cwd=ROOT))


@cli.command()
def collector() -> None:
    """Run the event collector (POST /v1/events) in the foreground."""
    raise SystemExit(subprocess.call([sys.executable, "-m", "connectors.collector"], cwd=ROOT))


@cli.command()
def replay(
    source: Annotated[
        list[str] | None, typer.Option("--source", "-s", help="source name(s)")
    ] = None,
) -> None:
    """Publish the shared data files of topology.yaml `sources` to Kafka."""
    stack.replay_with_progress(source)


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
def inspect(
    target: Annotated[str, typer.Argument(help="capture file or http(s) URL")],
    kind: Annotated[
        str | None, typer.Option(help="rss | wordpress | drupal | debezium | mind (guessed)")
    ] = None,
    brand: Annotated[str, typer.Option(help="brand whose taxonomy applies")] = "feeds",
) -> None:
    """Run a capture through the normaliser and the enrichment (no Kafka, no Redis): one JSON
    object per line, each enriched item and each reject with its DLQ reason."""
    from ops.inspect import inspect_target, to_json_line

    out = sys.stdout.buffer
    for outcome in inspect_target(target, kind, brand=brand):
        out.write(to_json_line(outcome))
    out.flush()


@cli.command()
def up(
    no_replay: Annotated[bool, typer.Option("--no-replay", help="start the stack only")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="leave it running and return")] = False,
    brokers: Annotated[
        int, typer.Option(help="1, or 3 for a local KRaft cluster (RF 3, min.insync.replicas 2)")
    ] = 1,
    workers: Annotated[int, typer.Option(min=1, help="worker processes sharing partitions")] = 1,
    redis_cluster: Annotated[
        bool,
        typer.Option(
            "--redis-cluster",
            help="a local 3-master Redis Cluster instead of one Redis (FEEDPIPE_REDIS_CLUSTER=1)",
        ),
    ] = False,
) -> None:
    """Start everything locally and replay the real input; Ctrl-C (or `feedpipe down` from
    another shell) stops it all."""
    raise SystemExit(
        stack.up(no_replay, detach, redis_cluster, brokers=brokers, workers=workers)
    )


@cli.command()
def down(
    wipe: Annotated[bool, typer.Option("--wipe", help="also delete the local state")] = False,
) -> None:
    """Stop the worker, the read endpoint, Kafka and Redis (and wipe the state with --wipe)."""
    stack.down(wipe)


@cli.command()
def status() -> None:
    """Processes, consumer lag per topic and DLQ sizes."""
    stack.status()


@cli.command()
def evaluate(
    path: Annotated[
        str | None,
        typer.Argument(
            help="MIND behaviors-format file or EB-NeRD split folder "
            "[DATA_DIR/mind/derived_eval_impressions.tsv]"
        ),
    ] = None,
    news: Annotated[str | None, typer.Option(help="MIND news.tsv [DATA_DIR/mind/news.tsv]")] = None,
    log: Annotated[
        str | None, typer.Option(help="counting log for popularity/engagement/age [PATH]")
    ] = None,
    exclude: Annotated[
        str | None, typer.Option(help="behaviors file whose impression ids are skipped")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="seed of the random baseline and resampling")] = 0,
    json_out: Annotated[
        str | None, typer.Option("--json", help="write the results as JSON to FILE ('-' = stdout)")
    ] = None,
    tune: Annotated[
        str | None,
        typer.Option(help="instead: grid-search this ranker's weights (affinity|editorial)"),
    ] = None,
    step: Annotated[float, typer.Option(help="grid step for --tune")] = 0.05,
    fit: Annotated[
        str | None,
        typer.Option(help="instead: fit the learned ranker on PATH (minus --exclude) and write "
                     "it as the next version of this weight set in topology.yaml"),
    ] = None,
    objective: Annotated[
        str, typer.Option(help="--fit objective: pointwise (click labels) or pairwise "
                          "(clicked - not clicked differences)")
    ] = "pointwise",
    pseudo: Annotated[
        str | None, typer.Option(help="--fit: add pseudo-impressions from the fitting rows' "
                                 "histories, negatives from nearby rows' shown candidates "
                                 "(shown) or histories (read), or the reader's own rows' "
                                 "candidates (own) (docs/evaluation.md)")
    ] = None,
    c: Annotated[
        float | None, typer.Option("--c", help="--fit: this inverse L2 strength instead of "
                                   "the grouped-CV choice")
    ] = None,
    without: Annotated[
        list[str] | None, typer.Option(help="--fit: leave this feature out (repeatable)")
    ] = None,
    oracle: Annotated[
        bool, typer.Option(help="add the leaky oracle popularity rows (whole log, later rows "
                           "included: an upper bound, never a ranker) and the MDE")
    ] = False,
    features: Annotated[
        bool, typer.Option(help="add a row per learned-ranker feature alone")
    ] = False,
) -> None:
    """Offline evaluation: AUC, MRR, nDCG@5/10 (bootstrap 95% CIs) of every ranker and the
    random, popularity, recency and trending baselines on a MIND or EB-NeRD impression log;
    ``--fit`` fits the learned ranker instead (docs/evaluation.md)."""
    from pathlib import Path

    import orjson

    from feedpipe.errors import ConfigError
    from ops import evaluate as ev

    data = settings().data_dir
    p = Path(path) if path else data / "mind" / "derived_eval_impressions.tsv"
    n = Path(news) if news else data / "mind" / "news.tsv"
    lg = Path(log) if log else None
    ex = Path(exclude) if exclude else None
    try:
        if tune:
            prepared, cov, topo = ev.load(p, n, lg, None, ex)
            for auc, w in ev.tune(prepared, tune, topo, step)[:10]:
                console.print(f"AUC {auc:.4f}  {w}")
            console.print(f"{cov.evaluated} impressions ({cov.excluded} excluded)")
            return
        if fit:
            from feedpipe.topology import TOPOLOGY_PATH
            from ops.evaluate.fit import C_GRID, fit_cv, write_weight_set

            prepared, cov, topo = ev.load(p, n, lg, None, ex)
            extra = ev.load_pseudo(p, n, topo, ex, pool_from=pseudo) if pseudo else []
            grid = (c,) if c is not None else C_GRID
            result = fit_cv(prepared, topo, grid=grid, objective=objective, extra=extra,
                            without=without or ())
            weights = result.weights
            how = (f"{objective} logistic fit on {p.name} minus {ex.name if ex else 'nothing'}, "
                   f"{cov.evaluated} impressions"
                   + (f" + {len(extra)} pseudo-impressions ({pseudo})" if extra else "")
                   + (f" without {', '.join(without)}" if without else "")
                   + f", C={result.c:g}" + ("" if c is not None else " by grouped CV"))
            version = write_weight_set(TOPOLOGY_PATH, fit, weights, how)
            for cc, cv in result.cv_auc.items():
                more = (f", pseudo-impressions {result.cv_auc_extra[cc]:.4f}"
                        if cc in result.cv_auc_extra else "")
                console.print(f"C={cc:g}: cross-validated AUC {cv:.4f}{more}")
            console.print(f"{fit}@v{version} {weights} ({cov.evaluated} impressions, "
                          f"{cov.excluded} excluded, C={result.c:g})")
            return
        report = ev.evaluate(p, n, lg, n_boot=bootstrap, seed=seed, exclude=ex, oracle=oracle,
                             features=features)
    except (ConfigError, ValueError, KeyError) as exc:
        console.print(f"[red]evaluate: {exc}[/]")
        raise SystemExit(2) from None
    if json_out == "-":
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    console.print(report.table(), highlight=False, markup=False)
    if json_out:
        Path(json_out).write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))


@cli.command()
def lag(
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="consumer group(s) [the worker's: FEEDPIPE_APP_ID]"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    window: Annotated[int, typer.Option(help="samples per evaluation window (>= 2)")] = 5,
    interval: Annotated[float, typer.Option(help="seconds between samples")] = 2.0,
    watch: Annotated[bool, typer.Option("--watch", help="keep sampling, print each time")] = False,
) -> None:
    """Consumer lag per group/topic/partition with a Burrow-style status (OK, WARN, STALL, STOP,
    ERR); exit code 2 on STALL or STOP, 3 on ERR. Takes WINDOW samples INTERVAL s apart."""
    from feedpipe.kafka.lag import pipeline_groups
    from ops.lag import overall_exit_code, printer, run

    s = settings()
    default = pipeline_groups(s.app_id)
    groups = {g: default.get(g) for g in (group or list(default))}
    # JSON must not wrap; the table gets at least 120 columns so topic names are not cut
    out = Console(soft_wrap=True) if as_json else Console(width=max(120, console.width))
    try:
        reports = run(s.kafka_bootstrap, groups, window, interval, watch, printer(out, as_json))
    except ValueError as exc:
        console.print(f"lag: {exc}")
        raise SystemExit(64) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(overall_exit_code(reports))


@cli.command()
def rebuild() -> None:
    """Rebuild Redis (the materialised view) from Kafka: content from the enrich stage's output,
    then every partition of the click path's input through the click path. Safe while
    the worker and the read endpoint run (the API serves its fallback ladder meanwhile)."""
    import asyncio

    from ops.rebuild import rebuild as run_rebuild

    s = settings()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}"),
        TimeElapsedColumn(), console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        def tick(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=max(total, 1))
            bar.update(tasks[step], completed=done)

        report = asyncio.run(run_rebuild(s.kafka_bootstrap, tick))
    console.print(report.summary(), highlight=False, markup=False)


@cli.command()
def faults(
    scenario: Annotated[
        list[str] | None, typer.Argument(help="scenario names (default: all)")
    ] = None,
    runs: Annotated[int, typer.Option(help="run each scenario this many times")] = 1,
    rows: Annotated[int, typer.Option(help="MIND behaviours rows streamed per run")] = 1000,
    rate: Annotated[float, typer.Option(help="reader events/s of the steady replay")] = 4000.0,
    kafka_port: Annotated[int, typer.Option(help="the suite's own broker port")] = 29192,
    redis_port: Annotated[int, typer.Option(help="the suite's own Redis port")] = 26479,
    json_out: Annotated[str | None, typer.Option("--json", help="also write JSON to FILE")] = None,
    brokers: Annotated[
        int, typer.Option(help="1, or 3 for a KRaft cluster (RF 3, min ISR 2; ports +0..+5)")
    ] = 1,
    redis_cluster: Annotated[
        bool,
        typer.Option(
            "--redis-cluster",
            help="a 3-master Redis Cluster from --redis-port on instead of one Redis",
        ),
    ] = False,
) -> None:
    """Fault-injection suite (ops/faults/): each scenario on a stack of its own while
    reader events flow; prints events lost, applied twice, DLQ records and recovery time.
    Exit code 1 unless every run shows 0 lost, 0 doubled and every poison record in a DLQ.
    Default scenarios: all single-broker ones, plus broker-kill with --brokers 3; naming
    broker-kill alone starts the 3-broker cluster."""
    import os
    from dataclasses import asdict
    from pathlib import Path

    import orjson

    if redis_cluster:  # the suite's clients, stack and workers (they inherit the environment)
        os.environ["FEEDPIPE_REDIS_CLUSTER"] = "1"
        settings.cache_clear()

    from ops.faults import SCENARIOS, FaultConfig, Outcome, Suite, format_table
    from ops.faults.scenarios import CLUSTER_SCENARIOS

    if scenario and brokers == 1 and set(scenario) <= set(CLUSTER_SCENARIOS):
        brokers = 3
    names = scenario or [*SCENARIOS, *(CLUSTER_SCENARIOS if brokers >= 3 else ())]
    suite = Suite(
        FaultConfig(kafka_port=kafka_port, redis_port=redis_port, rows=rows, rate=rate,
                    state_dir=settings().state_dir / "faults", brokers=brokers)
    )
    suite.start_stack()
    outcomes = []
    try:
        for _ in range(runs):
            for name in names:
                try:
                    outcomes.append(suite.run(name))
                except Exception as exc:  # reported as a failed row; the next gets a new stack
                    outcomes.append(Outcome(name, detail=f"error: {type(exc).__name__}: {exc}"))
                    console.print(f"[red]{name}: {type(exc).__name__}: {exc}[/]")
                    suite.start_stack()
    finally:
        suite.stop_stack()
    console.print(format_table(outcomes), highlight=False, markup=False)
    if json_out:
        Path(json_out).write_bytes(orjson.dumps([asdict(o) for o in outcomes]))
    raise SystemExit(0 if all(o.ok for o in outcomes) else 1)


@cli.command()
def simulate(
    rate: Annotated[float, typer.Option(help="reader events/s to send")] = 1000.0,
    duration: Annotated[float, typer.Option(help="seconds to run")] = 60.0,
    users: Annotated[int, typer.Option(help="reader population (Zipf-ranked)")] = 100_000,
    zipf_s: Annotated[float, typer.Option(help="Zipf exponent of user activity")] = 0.8,
    ctr: Annotated[float, typer.Option(help="clicks per impression")] = 0.176,
    seed: Annotated[int, typer.Option(help="random seed")] = 15,
    collector: Annotated[
        str | None, typer.Option(help="event collector base URL (default: straight to Kafka)")
    ] = None,
    api_key: Annotated[
        str, typer.Option(envvar="FEEDPIPE_SIMULATE_API_KEY", help="collector X-API-Key")
    ] = "",
) -> None:
    """Live-shaped reader events against the current catalogue (ops/simulate.py), with progress."""
    import asyncio

    from ops.simulate import CollectorSink, KafkaSink, Population, Shape, catalogue_items, run

    try:
        population = Population(
            asyncio.run(catalogue_items()),
            Shape(users=users, zipf_s=zipf_s, ctr=ctr, seed=seed),
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise SystemExit(1) from None
    sink = CollectorSink(collector, api_key) if collector else KafkaSink(settings().kafka_bootstrap)
    total = int(rate * duration)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("simulate", total=total, info="")

        def tick(counts: Any, elapsed: float) -> None:
            bar.update(task, completed=counts.sent, info=(
                f"{counts.sent / max(elapsed, 1e-3):,.0f} ev/s  {counts.users:,} users  "
                f"{counts.clicks:,} clicks  {counts.rejected:,} rejected"))

        try:
            counts = run(population, sink, rate, duration, on_tick=tick)
        except Exception as exc:  # httpx / Kafka delivery errors: one clear line, exit 1
            console.print(f"[red]simulate: {type(exc).__name__}: {exc}[/]")
            raise SystemExit(1) from None
    console.print(f"sent {counts.sent:,} events ({counts.clicks:,} clicks) of {counts.users:,} "
                  f"users; rejected {counts.rejected:,}", highlight=False)
    for err in counts.errors or []:
        console.print(f"  rejected: {err}", highlight=False, markup=False)


def main() -> None:
    """Entry point of the ``feedpipe`` script."""
    cli()


if __name__ == "__main__":
    main()
