"""Two ``feedpipe worker`` processes against one: click-path events/s, same input, same run.

Usage: ``python bench/bench_workers.py [--rows N] [--repeat N] [--workers 1,2]``
with ``FEEDPIPE_KAFKA_BOOTSTRAP`` and ``FEEDPIPE_REDIS_URL`` pointing at a broker and a Redis
the benchmark may wipe (it deletes and recreates the topology topics and flushes the Redis
database).

For each worker count (interleaved ``--repeat`` times; medians, the machine is shared):

1. fresh topics, empty Redis, ``n`` worker processes (``python -m streams worker``, one app id:
   they share the partitions) and the MIND catalogue (``news.tsv``) replayed and drained;
2. every partition of the click path's input is *held* (the ``fp:rebuild:*`` marker that
   ``feedpipe rebuild`` sets: the click path fetches but applies nothing there), the first
   ``--rows`` rows of MIND ``behaviors.tsv`` (read in place) are published, and the hold is
   lifted: the workers are running and their groups stable, so what is timed is processing
   only, not start-up, group join or the producer;
3. timed: from lifting the hold until every consumer group of the pipeline is at lag 0
   (polled every 0.2 s; the hold releases within the click path's 1 s idle sleep, counted in).
   Also the workers' CPU seconds in that window (``/proc/<pid>/stat`` utime + stime), as µs of
   worker CPU per event.

Prints events/s per worker count and the ratio of each to one worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feedpipe.settings import settings  # noqa: E402
from feedpipe.topology import topology  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


class Lag:
    """Total lag over the pipeline's consumer groups, probed in a child process
    (:class:`~feedpipe.monitoring.exporter.ProbeProcess`: librdkafka 2.16.1 segfaulted in a
    process running these probes under load)."""

    def __init__(self, bootstrap: str, app_id: str) -> None:
        from feedpipe.kafka.lag import pipeline_groups
        from feedpipe.monitoring.exporter import ProbeProcess

        self.groups = pipeline_groups(app_id)
        self.probe = ProbeProcess(bootstrap, timeout_s=5.0, deadline_s=30.0)

    def total(self) -> int | None:
        """Total lag, or None when a partition could not be probed."""
        rows = self.probe.probe(self.groups)
        return None if any(r.sample.error for r in rows) else sum(r.lag for r in rows)

    def close(self) -> None:
        """Stop the child process."""
        self.probe.close()


def run(n: int, rows: int, scratch: Path) -> tuple[int, float, float]:
    """One measurement with ``n`` workers: (events, seconds, worker CPU seconds)."""
    from confluent_kafka.admin import AdminClient

    from connectors.replay import ReplayConnector, replay_all
    from feedpipe.kafka.topics import recreate
    from feedpipe.store.client import sync_client
    from feedpipe.store.keys import keys
    from ops.faults.drivers import Worker
    from ops.faults.inputs import behaviors_subset

    s = settings()
    topo = topology()
    recreate(topo, AdminClient({"bootstrap.servers": s.kafka_bootstrap}))
    r = sync_client(s.redis_url)
    r.flushdb()
    app_id = f"feedpipe-bench-{uuid.uuid4().hex[:8]}"
    env = {"FEEDPIPE_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "FEEDPIPE_REDIS_URL": s.redis_url,
           "FEEDPIPE_APP_ID": app_id}
    workers = [Worker(f"w{i}", env, scratch / app_id / f"w{i}") for i in range(n)]
    lag = Lag(s.kafka_bootstrap, app_id)
    try:
        for w in workers:
            w.start()
        replay_all(topo, s.data_dir, ["mind"], bootstrap=s.kafka_bootstrap)
        wait_lag_zero(lag, quiet=3)
        reader = topo.stages["clickpath"].input
        holds = [keys().rebuilding(reader, p) for p in range(topo.topics[reader].partitions)]
        r.mset({h: b"bench_workers" for h in holds})
        source = behaviors_subset(s.data_dir, rows, scratch / "input")
        conn = ReplayConnector(source, scratch / "input", topo.topics,
                               bootstrap=s.kafka_bootstrap, flush_timeout_s=300)
        try:
            events = conn.run().published
        finally:
            conn.stop()
        pids = [w.proc.pid for w in workers if w.proc is not None]
        cpu0 = sum(cpu_seconds(p) for p in pids)
        t0 = time.monotonic()
        r.delete(*holds)
        seconds = wait_lag_zero(lag, quiet=1) - t0
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        for w in workers:
            if w.proc is None or w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.name} exited:\n{w.tail()}")
        return events, seconds, cpu
    finally:
        lag.close()
        for w in workers:
            w.stop()


def wait_lag_zero(lag: Lag, quiet: int, timeout_s: float = 900) -> float:
    """Poll the lag every 0.2 s until it is 0 ``quiet`` polls in a row; return the monotonic
    time of the first of them.

    Raises:
        TimeoutError: not drained within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    first: float | None = None
    zeros = 0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if lag.total() == 0:
            first = now if zeros == 0 else first
            zeros += 1
            if zeros >= quiet:
                assert first is not None
                return first
        else:
            zeros = 0
        time.sleep(0.2)
    raise TimeoutError(f"pipeline not drained in {timeout_s:.0f} s")


def main() -> None:
    """Parse arguments, run the interleaved measurements, print rates and ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000, help="MIND behaviours rows (~72 events each)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs per worker count")
    ap.add_argument("--workers", default="1,2", help="worker counts, the first is the baseline")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    scratch = settings().state_dir / "bench-workers"
    rates: dict[int, list[float]] = {n: [] for n in counts}
    cpus: dict[int, list[float]] = {n: [] for n in counts}
    print(f"cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.2f}  rows: {args.rows}")
    for i in range(args.repeat):
        for n in counts:
            events, seconds, cpu = run(n, args.rows, scratch)
            rates[n].append(events / seconds)
            cpus[n].append(cpu / events * 1e6)
            print(f"run {i + 1} workers {n}: {events:,} events in {seconds:.2f} s = "
                  f"{events / seconds:,.0f} events/s, worker CPU {cpu:.1f} s "
                  f"({cpu / events * 1e6:.0f} µs/event)", flush=True)
    base = statistics.median(rates[counts[0]])
    print("\nworkers  events/s (median)  µs CPU/event  ratio to " f"{counts[0]} worker(s)")
    for n in counts:
        rate = statistics.median(rates[n])
        print(f"{n:>7}  {rate:>17,.0f}  {statistics.median(cpus[n]):>12.0f}  {rate / base:>6.2f}")


if __name__ == "__main__":
    main()
