"""``feedpipe up | down | status``: the local stack (Kafka, Redis, worker, read endpoint, event
collector).

``up`` in the foreground watches its stack: when ``feedpipe down`` (from another shell) stops
it -- ``down`` leaves a stop marker under ``<state>/run`` before it stops anything -- or one of
its processes exits, ``up`` drops its Kafka clients, prints one line and returns (exit 0 after
``down``, 1 when a process died on its own, once the rest is stopped).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from feedpipe.settings import Settings, settings
from feedpipe.topology import topology
from ops import services
from ops.console import console

WATCH_INTERVAL_S = 0.5


class StackStopped(Exception):
    """Raised in ``up``'s main thread when its stack went away (see :class:`StackWatch`)."""


def admin() -> Any:
    """An AdminClient on the configured broker."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(settings().kafka_config())


def print_changes(changes: list[Any]) -> None:
    """One line per topic change of ``feedpipe.kafka.topics.plan`` / ``apply``."""
    for c in changes:
        console.print(f"  {c}")


def keys_path() -> Path:
    """The read endpoint's API keys file."""
    from feedpipe.apikeys import keys_file

    s = settings()
    return keys_file(s.state_dir, s.api_keys_file)


def dev_key() -> str:
    """Create or reuse the development key under the state dir; return its token."""
    from feedpipe.apikeys import ensure_dev_key

    return ensure_dev_key(settings().state_dir, keys_path())


def worker_services(s: Settings, n: int) -> list[services.Service]:
    """``n`` Faust workers of the same app id (one consumer group: they share the partitions).
    The first is ``services.worker_service``; worker i (2..n) is ``worker-<i>`` with web port
    ``FEEDPIPE_WORKER_WEB_PORT + i - 1``."""
    first = services.worker_service(s)
    out = [first]
    for i in range(2, n + 1):
        port = s.worker_web_port + i - 1
        args = [*first.args]
        args[args.index("--web-port") + 1] = str(port)
        out.append(services.Service(f"worker-{i}", args, f"http://127.0.0.1:{port}/"))
    return out


def started_workers(s: Settings) -> list[services.Service]:
    """The workers ``up`` started under ``s.state_dir`` (``worker`` and every ``worker-<i>``
    with a pid file), so ``down`` and the watch find as many as ``up --workers`` started."""
    extra = sorted(
        int(f.stem.split("-", 1)[1])
        for f in (s.state_dir / "run").glob("worker-*.pid")
        if f.stem.split("-", 1)[1].isdigit()
    )
    return worker_services(s, max([1, *extra]))


def use_cluster(brokers: int) -> None:
    """Point this process and the processes it starts at the local ``brokers``-node cluster
    (node i on the configured Kafka port + 2 (i - 1)): ``FEEDPIPE_KAFKA_BOOTSTRAP`` lists
    every node and ``FEEDPIPE_KAFKA_REPLICATION_FACTOR`` becomes 3 (at most ``brokers``)."""
    from ops.infra import LocalStack

    stack = LocalStack(settings(), brokers=brokers)
    os.environ["FEEDPIPE_KAFKA_BOOTSTRAP"] = stack.kafka.bootstrap
    os.environ["FEEDPIPE_KAFKA_REPLICATION_FACTOR"] = str(min(3, brokers))
    settings.cache_clear()


def stop_marker(s: Settings) -> Path:
    """The file ``down`` writes before it stops anything; ``up`` removes it when it starts."""
    return s.state_dir / "run" / "stopping"


# -- watching a running stack ----------------------------------------------------------------


class StackWatch(threading.Thread):
    """Polls the stack every :data:`WATCH_INTERVAL_S`: once the stop marker appears or a
    process (Kafka, Redis, worker, read endpoint) is gone, sets ``why`` and raises
    :class:`StackStopped` in the main thread (through SIGUSR1)."""

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True, name="feedpipe-up-watch")
        from ops.infra import LocalStack

        self.s = s
        self.stack = LocalStack(s)
        self.why = ""
        self.by_down = False
        self.halt = threading.Event()

    def check(self) -> str:
        """'' while everything runs, else what went away."""
        if stop_marker(self.s).exists():
            self.by_down = True
            return "stopped by feedpipe down"
        if self.stack.kafka.pid() is None:
            return "the Kafka broker exited"
        if self.stack.redis.pid() is None:
            return "redis-server exited"
        for svc in (
            *started_workers(self.s),
            services.api_service(self.s),
            services.collector_service(self.s),
        ):
            if not services.running(svc, self.s):
                return f"the {svc.name} exited (log: {svc.log_file(self.s.state_dir)})"
        return ""

    def run(self) -> None:
        """Poll until something went away (or :attr:`halt`), then signal the main thread."""
        while not self.halt.wait(WATCH_INTERVAL_S):
            why = self.check()
            if why:
                self.why = why
                os.kill(os.getpid(), signal.SIGUSR1)
                return


def _raise_stopped(*_: object) -> None:
    raise StackStopped


# -- up ----------------------------------------------------------------------------------------


def replay_with_progress(sources: list[str] | None, producer: Any = None) -> dict[str, int]:
    """Replay ``sources`` with a progress bar (on ``producer`` when given); return records
    published per source."""
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

        metrics = replay_all(topology(), s.data_dir, sources, tick, producer=producer)
    out: dict[str, int] = {}
    for name, m in metrics.items():
        out[name] = m.published
        console.print(
            f"  {name:<18} published {m.published:>8,}  rejected {sum(m.rejected.values()):>4}"
        )
    return out


def wait_drained(timeout_s: float = 600.0, probe_timeout_s: float = 3.0) -> float:
    """Show consumer lag until the pipeline has processed everything; return seconds waited."""
    from feedpipe.kafka.lag import pipeline_lag

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
            try:
                lag = pipeline_lag(s.kafka_bootstrap, s.app_id, timeout_s=probe_timeout_s)
            except Exception as exc:  # the broker restarts or is stopped: the watch decides
                progress.update(task, lag=f"lag probe failed: {exc}")
                time.sleep(1.0)
                continue
            progress.update(task, lag="  ".join(f"{t}: {n:,}" for t, n in lag.items()))
            quiet = quiet + 1 if sum(lag.values()) == 0 else 0
            if quiet >= 3:
                break
            time.sleep(1.0)
    return time.monotonic() - t0


def where_to_look() -> None:
    """Print the URLs, the dev API key, and the commands to watch the stack."""
    s = settings()
    base = f"http://{s.api_host}:{s.api_port}"
    console.print("\n[bold]where to look[/]")
    console.print(f"  read endpoint   {base}/healthz")
    console.print(f"  trending        {base}/v1/trending")
    console.print(f"  a feed          {base}/v1/feeds/U35841?explain=true")
    console.print(f"  a profile       {base}/v1/profiles/U35841")
    console.print(f"  API docs        {base}/openapi.json   metrics {base}/metrics")
    console.print(f"  API key (dev)   {s.state_dir / 'dev-api-key'}; e.g.")
    console.print(f'    curl -H "X-API-Key: {dev_key()}" {base}/v1/feeds/U35841?explain=true')
    console.print(f"  ops page        {base}/ops")
    console.print(f"  demo page       {base}/demo#key={dev_key()}")
    collector = s.collector_public_url()
    console.print(f"  event collector {collector}/v1/events   (API docs {collector}/openapi.json)")
    console.print(
        f'    curl -H "X-API-Key: {dev_key()}" -H "Content-Type: application/json" '
        f"{collector}/v1/events -d '{{\"events\": [{{\"type\": \"click\", "
        f'\"user_id\": \"U35841\", \"content_id\": \"<content_id>\", '
        f"\"occurred_at\": {int(time.time() * 1000)}}}]}}'"
    )
    console.print(f"  worker metrics  http://127.0.0.1:{s.worker_web_port}/metrics")
    console.print("  consumer lag    feedpipe lag")
    console.print(f"  logs            {s.state_dir / 'logs'}")
    console.print("  status          feedpipe status\n")


def start_stack(brokers: int = 1, workers: int = 1) -> None:
    """Start Kafka (one node or a ``brokers``-node cluster) and Redis, apply the topics, start
    ``workers`` Faust workers, the read endpoint and the event collector."""
    from feedpipe.kafka.topics import apply
    from ops.infra import LocalStack

    if brokers > 1:
        use_cluster(brokers)
    s = settings()
    stop_marker(s).unlink(missing_ok=True)
    console.print(f"[bold]feedpipe[/] state in {s.state_dir}")
    console.print(f"starting Kafka ({brokers} broker{'s' if brokers > 1 else ''}) and Redis ...")
    bootstrap, redis_url = LocalStack(s, brokers=brokers).start()
    console.print(f"  kafka {bootstrap}   redis {redis_url}")
    console.print("applying topics from topology.yaml ...")
    print_changes(apply(topology(), admin()))
    console.print(f"starting {workers} Faust worker(s), the read endpoint and the collector ...")
    for svc in worker_services(s, workers):
        services.start(svc, s)
    dev_key()
    services.start(services.api_service(s), s)
    services.start(services.collector_service(s), s)
    where_to_look()


def replay_all_sources() -> None:
    """Replay the CMS sources, wait until processed, then the reader sources, and report the
    time each took end to end."""
    from feedpipe.kafka.producer import IdempotentProducer

    cms = [x.name for x in topology().sources if x.kind != "mind.behaviors"]
    readers = [x.name for x in topology().sources if x.kind == "mind.behaviors"]
    producer = IdempotentProducer(settings().kafka_bootstrap, client_id="feedpipe-replay")
    t0 = time.monotonic()
    n_cms = sum(replay_with_progress(cms, producer).values())
    wait_drained()
    t1 = time.monotonic()
    console.print(
        f"content: {n_cms:,} CMS events normalised, enriched and materialised in {t1 - t0:.1f} s"
    )
    n_reader = sum(replay_with_progress(readers, producer).values())
    producer.close()
    wait_drained()
    t2 = time.monotonic()
    console.print(
        f"readers: {n_reader:,} reader events through profiles and feeds in "
        f"{t2 - t1:.1f} s ({n_reader / (t2 - t1):,.0f} events/s end to end)"
    )
    where_to_look()


def up(
    no_replay: bool, detach: bool, redis_cluster: bool = False, brokers: int = 1, workers: int = 1
) -> int:
    """Start everything (and replay unless ``no_replay``); in the foreground, run until Ctrl-C,
    SIGTERM, ``feedpipe down`` from another shell, or a process of the stack exits.
    ``redis_cluster``: a local three-master Redis Cluster from the port of FEEDPIPE_REDIS_URL on
    (exported as FEEDPIPE_REDIS_CLUSTER=1 to the worker and the read endpoint; stop it with
    ``FEEDPIPE_REDIS_CLUSTER=1 feedpipe down``). ``brokers`` 3 runs a local KRaft cluster
    (replication factor 3, min.insync.replicas 2); ``workers`` Faust workers share the
    partitions.

    Returns:
        The exit code: 0, or 1 when a process of the stack exited on its own.
    """
    import gc

    def _terminate(*_: object) -> None:
        raise KeyboardInterrupt

    if redis_cluster:
        os.environ["FEEDPIPE_REDIS_CLUSTER"] = "1"
        settings.cache_clear()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGUSR1, _raise_stopped)
    watch: StackWatch | None = None
    try:
        start_stack(brokers, workers)
        watch = StackWatch(settings())
        watch.start()
        if not no_replay:
            replay_all_sources()
        if detach:
            watch.halt.set()
            console.print("left running; stop with `feedpipe down`")
            return 0
        console.print("running; press Ctrl-C to stop")
        while True:
            time.sleep(WATCH_INTERVAL_S)
    except KeyboardInterrupt:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # this down() leaves the stop marker too
        if watch is not None:
            watch.halt.set()
        console.print("\nstopping ...")
        down(wipe=False)
        return 0
    except StackStopped:
        pass
    # The stack went away: the traceback (and with it the replay's producer and any lag probe)
    # is gone here, so collecting frees their librdkafka clients before the one line is printed.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    gc.collect()
    assert watch is not None
    console.print(f"\n{watch.why}; exiting")
    if watch.by_down:
        return 0
    down(wipe=False)
    return 1


# -- down, status ------------------------------------------------------------------------------


def down(wipe: bool) -> None:
    """Stop the collector, the read endpoint, the worker, Kafka and Redis (and delete the state
    with ``wipe``)."""
    from ops.infra import LocalStack

    s = settings()
    marker = stop_marker(s)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n")
    for svc in (services.collector_service(s), services.api_service(s), *started_workers(s)):
        if services.stop(svc, s):
            console.print(f"stopped {svc.name}")
    stack = LocalStack(s)
    stack.stop()
    console.print("stopped Kafka and Redis")
    if wipe:
        stack.wipe()
        console.print(f"wiped {s.state_dir}")


def status() -> None:
    """Processes, consumer lag per topic and the size of each stage's DLQ."""
    from feedpipe.kafka.lag import end_offsets, pipeline_lag
    from ops.infra import LocalStack

    s = settings()
    console.print(str(LocalStack(s).status()))
    try:
        lag = pipeline_lag(s.kafka_bootstrap, s.app_id, timeout_s=5)
        for t, n in lag.items():
            console.print(f"lag    {t:<22} {n:,}")
        dlqs = sorted({st.dlq for st in topology().stages.values() if st.dlq is not None})
        for (t, p), (low, high) in sorted(end_offsets(s.kafka_bootstrap, dlqs, 5).items()):
            console.print(f"dlq    {t}[{p}] {high - low:,} records")
    except Exception as exc:
        console.print(f"kafka unreachable: {exc}")
