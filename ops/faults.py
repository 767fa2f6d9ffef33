"""Fault-injection suite: real faults against real processes while reader events flow.

Each scenario runs on a local stack of its own (Kafka KRaft broker and redis-server started
with ``java`` and ``redis-server`` under ``<state>/faults``, on ports chosen by the caller), so
it can stop and kill them without touching anyone else's stack:

1. fresh topics and an empty Redis; one Faust worker (``python -m streams worker``) started;
2. the MIND catalogue (news.tsv) replayed and drained;
3. a steady replay of the first ``rows`` rows of MIND ``behaviors.tsv`` at ``rate`` reader
   events/s (idempotent producer, as ``feedpipe replay``) runs in a thread; after
   ``fault_at`` of it the fault is injected;
4. the replay finishes, the pipeline drains (every consumer group at lag 0, three polls in a
   row), and the final state is compared with a reference computed from the same input
   (:func:`reference_counts`: distinct event ids per user and kind).

What is compared (:class:`Outcome`):

* **lost**: per user and counter (impressions, live clicks, history clicks), how many events of
  the input are missing from the user's profile in Redis (minus events the pipeline routed to
  ``reader.events.dlq`` with a reason); must be 0;
* **doubled**: how many were applied more than once; must be 0;
* **topic mismatches**: users whose newest ``profiles.updated`` record (a compacted topic keyed
  by user) disagrees with the profile in Redis, or who have no feed; must be 0;
* **poison**: records injected by the scenario and the DLQ records found for them, with reasons;
* **recover_s**: seconds from the fault until the pipeline's lag is back under
  ``max(lag just before the fault, rate * 1 s)`` (the worker caught up with the steady input).

Scenarios (issue 6): ``worker-kill`` (SIGKILL a worker mid-batch, restart it), ``rebalance``
(two workers in one consumer group, one SIGKILLed: the survivor takes its partitions over;
then it is restarted), ``broker-restart`` (SIGTERM the Kafka broker, start it again 5 s later),
``redis-outage`` (SIGTERM redis-server, start it again on its append-only file 30 s later: the
stages must wait and retry, neither die nor drop what they held), ``redis-flush`` (the same
outage, then ``FLUSHALL`` once Redis is back: the click path holds its partitions, and
:func:`ops.rebuild.rebuild` -- ``feedpipe rebuild`` -- restores everything from Kafka
while events keep flowing),
``connector-kill`` (a ``feedpipe connect`` process paginating a WordPress REST API --
:class:`connectors.simulator.FixtureServer` serving :data:`WP_POSTS` posts made from the real
frontity ones, 5 per page -- SIGKILLed mid-pagination and restarted: every post must reach
Redis, and ``content.enriched`` must hold one record per post), ``poison`` (wrong schema id,
truncated Avro, a huge payload and invalid UTF-8 in every consumed topic, while events flow).

Run: ``feedpipe faults [SCENARIO ...] [--runs 2]``; tests/integration/test_faults.py runs them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from feedpipe.settings import ROOT, Settings, settings
from feedpipe.topology import SourceSpec, topology

SCENARIOS = (
    "worker-kill", "rebalance", "broker-restart", "redis-outage", "redis-flush",
    "connector-kill", "poison",
)
REDIS_OUTAGE_S = 30.0  # how long the redis-outage scenario keeps Redis stopped
COUNTERS = ("impressions", "clicks", "history_clicks")
POISON_TOPICS = ("cms.raw", "content.normalised", "reader.events")  # topics a stage consumes
HUGE_BYTES = 900_000  # under the broker's default 1 MiB message.max.bytes
WP_POSTS = 120  # posts of the connector-kill scenario (24 pages of 5)
WP_DELAY_S = 0.15  # per-request delay of the simulated CMS, so the kill lands mid-pagination


@dataclass
class Outcome:
    """The result of one scenario run (see the module docstring for each field)."""

    scenario: str
    events: int = 0
    users: int = 0
    lost: int = 0
    doubled: int = 0
    topic_mismatches: int = 0
    poison_sent: int = 0
    poison_dlq: int = 0
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    recover_s: float | None = None
    seconds: float = 0.0
    detail: str = ""
    cms_lost: int = 0
    cms_doubled: int = 0

    @property
    def ok(self) -> bool:
        """0 lost, 0 doubled, topics agree with Redis, every poison record in a DLQ, and the
        pipeline recovered."""
        return (
            self.lost == 0
            and self.doubled == 0
            and self.cms_lost == 0
            and self.cms_doubled == 0
            and self.topic_mismatches == 0
            and self.poison_dlq == self.poison_sent
            and self.recover_s is not None
        )


def format_table(outcomes: Sequence[Outcome]) -> str:
    """A plain-text table of ``outcomes``, one row per scenario run (lost and doubled include
    the CMS side of ``connector-kill``), then each run's detail and DLQ reasons."""
    head = (
        f"{'scenario':<16}{'events':>9}{'users':>7}{'lost':>6}{'doubled':>9}{'topics':>8}"
        f"{'poison':>8}{'in DLQ':>8}{'recover s':>11}{'total s':>9}  ok"
    )
    lines = [head, "-" * len(head)]
    for o in outcomes:
        rec = f"{o.recover_s:.1f}" if o.recover_s is not None else "never"
        lines.append(
            f"{o.scenario:<16}{o.events:>9,}{o.users:>7,}{o.lost + o.cms_lost:>6}"
            f"{o.doubled + o.cms_doubled:>9}"
            f"{o.topic_mismatches:>8}{o.poison_sent:>8}{o.poison_dlq:>8}{rec:>11}"
            f"{o.seconds:>9.1f}  {'yes' if o.ok else 'NO'}"
        )
    notes = [f"{o.scenario}: {o.detail}" for o in outcomes if o.detail]
    notes += [
        f"{o.scenario}: DLQ reasons {dict(sorted(o.dlq_reasons.items()))}"
        for o in outcomes if o.dlq_reasons
    ]
    return "\n".join(lines + notes)


def wait_feeds_converged(redis_url: str, timeout_s: float = 120.0) -> None:
    """Wait until every reader.events partition's feeds reflect the current catalogue and item
    stats versions (the click path's idle refresher marks ``fp:feeds:refreshed:{p}``).

    Raises:
        TimeoutError: not converged within ``timeout_s`` seconds.
    """
    import redis

    from feedpipe.store.keys import keys

    r = redis.Redis.from_url(redis_url)
    k = keys()
    parts = range(topology().topics["reader.events"].partitions)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cv, sv = r.mget([k.catalogue_version(), k.stats_version()])
        mark = f"{int(cv or 0)}:{int(sv or 0)}".encode()
        if all(r.get(k.feeds_refreshed(p)) == mark for p in parts):
            return
        time.sleep(0.5)
    raise TimeoutError(f"feeds did not converge to the final catalogue and stats in {timeout_s} s")


# -- the input and its reference -------------------------------------------------------------


def behaviors_subset(data_dir: Path, rows: int, into: Path) -> SourceSpec:
    """Write the first ``rows`` lines of ``<data_dir>/mind/behaviors.tsv`` to
    ``<into>/mind/behaviors.tsv`` (a scratch copy under the suite's state directory, never in
    the repository) and return a replay source reading it (data dir = ``into``).

    Raises:
        FileNotFoundError: the MIND behaviours file is missing.
    """
    src = data_dir / "mind" / "behaviors.tsv"
    lines = src.read_bytes().splitlines(keepends=True)[:rows]
    target = into / "mind" / "behaviors.tsv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(lines))
    base = next(s for s in topology().sources if s.kind == "mind.behaviors")
    return base.model_copy(update={"name": "faults-behaviors", "path": "mind/behaviors.tsv"})


def reference_counts(items: Iterator[Any]) -> dict[str, Counter[str]]:
    """Per user, how many *distinct* reader events of each counter the input holds.

    Args:
        items: :meth:`connectors.replay.ReplayConnector.items` of the streamed source
            (``Keyed`` records and ``Malformed`` rows; the latter are skipped).

    Returns:
        user_id -> Counter over :data:`COUNTERS` (``history_clicks`` = clicks of origin history).
    """
    from connectors.records import Keyed

    seen: set[str] = set()
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for item in items:
        if type(item) is not Keyed:
            continue
        rec = item.record
        if rec["event_id"] in seen:
            continue
        seen.add(rec["event_id"])
        if rec["type"] == "impression":
            out[rec["user_id"]]["impressions"] += 1
        elif rec["type"] == "click":
            kind = "history_clicks" if rec.get("origin") == "history" else "clicks"
            out[rec["user_id"]][kind] += 1
    return dict(out)


def compare(
    reference: Mapping[str, Counter[str]],
    profiles: Mapping[str, Mapping[str, Any] | None],
    dlq_per_user: Mapping[str, int],
) -> tuple[int, int]:
    """(lost, doubled) over every user and counter.

    ``lost`` = input events missing from the profile, less the user's events routed to the DLQ
    with a reason (never below 0 per user); ``doubled`` = events counted more than once.
    A missing profile loses all its user's events.
    """
    lost = doubled = 0
    for user, want in reference.items():
        p = profiles.get(user) or {}
        missing = 0
        for c in COUNTERS:
            got = int(p.get(c) or 0)
            if got > want[c]:
                doubled += got - want[c]
            else:
                missing += want[c] - got
        lost += max(0, missing - dlq_per_user.get(user, 0))
    return lost, doubled


# -- processes ---------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """One ``python -m streams worker`` process of the suite's app id (own state dir and web
    port), started in its own process group so SIGKILL reaches nothing else."""

    def __init__(self, name: str, env: Mapping[str, str], state_dir: Path) -> None:
        self.name = name
        self.state_dir = state_dir
        self.port = _free_port()
        self.env = {
            **os.environ,
            **env,
            "FEEDPIPE_STATE_DIR": str(state_dir),
            "FEEDPIPE_WORKER_WEB_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state_dir / "logs" / f"{name}.log"

    def start(self, timeout_s: float = 90.0) -> None:
        """Spawn the worker and wait until its web server answers.

        Raises:
            RuntimeError: it exited or did not answer within ``timeout_s`` s (with its log tail).
        """
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "-l", "info",
                 "--web-port", str(self.port), "--web-host", "127.0.0.1"],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.tail()}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1.0).status_code < 500:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"worker {self.name} not ready in {timeout_s:.0f} s:\n{self.tail()}")

    def kill9(self) -> None:
        """SIGKILL the worker's process group (no shutdown, no commit) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (SIGKILL after ``timeout_s`` s) and reap."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()

    def tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the worker's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class Stream(threading.Thread):
    """The steady replay: publishes ``source`` at about ``rate`` events/s (throttled in the
    connector's progress callback every 100 records) and sets ``passed`` after ``fault_at`` of
    ``total`` records. Exceptions are kept in ``error`` (the suite re-raises them)."""

    def __init__(
        self, source: SourceSpec, data_dir: Path, bootstrap: str, rate: float,
        total: int, fault_at: float,
    ) -> None:
        super().__init__(daemon=True, name="faults-stream")
        self.source, self.data_dir, self.bootstrap = source, data_dir, bootstrap
        self.rate, self.total, self.fault_at = rate, total, fault_at
        self.passed = threading.Event()
        self.published = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        """Publish the source once (see the class docstring)."""
        from connectors.replay import ReplayConnector

        t0 = time.monotonic()

        def progress(n: int) -> None:
            if n >= self.total * self.fault_at:
                self.passed.set()
            ahead = n / self.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)

        try:
            conn = ReplayConnector(
                self.source, self.data_dir, topology().topics, progress=progress,
                progress_every=100, bootstrap=self.bootstrap, flush_timeout_s=300,
            )
            try:
                self.published = conn.run().published
            finally:
                conn.stop()
        except BaseException as exc:  # handed to the suite's thread
            self.error = exc
        finally:
            self.passed.set()


# -- the suite ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultConfig:
    """Knobs of a suite run.

    Attributes:
        kafka_port / redis_port: the suite's own broker (controller = kafka_port + 1) and Redis.
        state_dir: where their data, the workers' logs and the input subset live.
        rows: MIND behaviours rows streamed per scenario (1,000 rows ~ 70,000 reader events).
        rate: reader events/s of the steady replay.
        fault_at: fraction of the stream after which the fault hits.
        drain_timeout_s: seconds allowed for the pipeline to drain after the stream ends.
    """

    kafka_port: int = 29192
    redis_port: int = 26479
    state_dir: Path = ROOT / ".feedpipe-test" / "faults"
    rows: int = 1000
    rate: float = 4000.0
    fault_at: float = 0.4
    drain_timeout_s: float = 300.0


class Suite:
    """Runs scenarios on a stack of its own (see the module docstring).

    Args:
        config: ports, state dir and stream size.
        data_dir: the shared data directory (default ``settings().data_dir``).
        log: progress lines (default: print to stderr).
    """

    def __init__(
        self, config: FaultConfig, data_dir: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from ops.infra import LocalStack

        self.config = config
        self.data_dir = data_dir or settings().data_dir
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.bootstrap = f"127.0.0.1:{config.kafka_port}"
        self.redis_url = f"redis://127.0.0.1:{config.redis_port}/0"
        self.settings = Settings(
            state_dir=config.state_dir, kafka_bootstrap=self.bootstrap, redis_url=self.redis_url
        )
        self.stack = LocalStack(self.settings)
        self.source = behaviors_subset(self.data_dir, config.rows, config.state_dir / "input")
        self.input_dir = config.state_dir / "input"
        self._post_checks: list[Callable[[], tuple[int, int, str]]] = []
        self._probe: Any = None  # feedpipe.monitoring.exporter.ProbeProcess, started on first use

    # stack ---------------------------------------------------------------------------------

    def start_stack(self) -> None:
        """Start the suite's broker and Redis (the jars shared with the development stack,
        ``.feedpipe/kafka/lib``, fetched on first use), wiping their old data first.

        Raises:
            ops.infra.InfraError: a service did not start.
        """
        from ops.infra.kafka import ensure_jars

        self.stack.kafka.lib = ensure_jars(ROOT / ".feedpipe")
        self.stack.stop()
        self.stack.kafka.wipe_data()
        self.stack.redis.wipe_data()
        self.stack.redis.start()
        self.stack.kafka.start(timeout_s=90)

    def stop_stack(self) -> None:
        """Stop the lag probe's child process, the suite's broker and Redis."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self.stack.stop()

    # one scenario -----------------------------------------------------------------------------

    def run(self, scenario: str) -> Outcome:
        """Run one scenario from a clean slate and return its outcome.

        Raises:
            ValueError: an unknown scenario name.
            RuntimeError: a process did not start, the stream failed, or the pipeline did not
                drain in ``drain_timeout_s``.
        """
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        fault = getattr(self, "_fault_" + scenario.replace("-", "_"))
        out = Outcome(scenario)
        t_start = time.monotonic()
        app_id = f"feedpipe-faults-{uuid.uuid4().hex[:8]}"
        env = {
            "FEEDPIPE_KAFKA_BOOTSTRAP": self.bootstrap,
            "FEEDPIPE_REDIS_URL": self.redis_url,
            "FEEDPIPE_APP_ID": app_id,
        }
        self._fresh()
        with self._workers(env, app_id) as workers:
            workers.append(self._worker(env, app_id, "w0"))
            self.log(f"[{scenario}] catalogue replay")
            self._replay_catalogue()
            self._drain(app_id, workers)
            from connectors.replay import ReplayConnector

            items = list(ReplayConnector(self.source, self.input_dir, topology().topics).items())
            reference = reference_counts(iter(items))
            total = sum(sum(c.values()) for c in reference.values())
            out.events, out.users = total, len(reference)
            stream = Stream(
                self.source, self.input_dir, self.bootstrap, self.config.rate,
                len(items), self.config.fault_at,
            )
            self.log(f"[{scenario}] streaming {total:,} reader events at {self.config.rate:,.0f}/s")
            stream.start()
            stream.passed.wait()
            before = self._lag(app_id)
            t_fault = time.monotonic()
            self.log(f"[{scenario}] fault (lag before {before:,})")
            sent = fault(workers, env, app_id)
            out.poison_sent = sum(sent.values())
            out.recover_s = self._recovered(app_id, before, t_fault, stream, workers)
            stream.join()
            if stream.error is not None:
                raise RuntimeError(f"the steady replay failed: {stream.error!r}")
            self._drain(app_id, workers)
            self._wait_feeds()
            dlq_users, poison_found, reasons = self._dlq(sent)
            out.poison_dlq, out.dlq_reasons = poison_found, reasons
            profiles = self._profiles(sorted(reference))
            out.lost, out.doubled = compare(reference, profiles, dlq_users)
            out.topic_mismatches = self._topic_mismatches(profiles)
            for check in self._post_checks:
                lost, doubled, detail = check()
                out.cms_lost += lost
                out.cms_doubled += doubled
                out.detail = "; ".join(x for x in (out.detail, detail) if x)
            self._post_checks.clear()
        out.seconds = time.monotonic() - t_start
        self.log(f"[{scenario}] done: lost {out.lost}, doubled {out.doubled}, "
                 f"topics {out.topic_mismatches}, poison {out.poison_dlq}/{out.poison_sent}, "
                 f"recover {out.recover_s}")
        return out

    # faults -------------------------------------------------------------------------------------

    def _fault_worker_kill(
        self, workers: list[Worker], env: Mapping[str, str], app_id: str
    ) -> dict[str, int]:
        """SIGKILL the worker mid-batch, start a new one at once."""
        workers[0].kill9()
        workers[0] = self._worker(env, app_id, "w0")
        return {}

    def _fault_rebalance(
        self, workers: list[Worker], env: Mapping[str, str], app_id: str
    ) -> dict[str, int]:
        """Second worker joins (rebalance); wait 10 s; SIGKILL the first: the survivor takes
        all partitions after the session timeout; then the first is restarted."""
        workers.append(self._worker(env, app_id, "w1"))
        time.sleep(10)
        workers[0].kill9()
        time.sleep(15)  # > session timeouts (10 s): the survivor owns everything
        workers[0] = self._worker(env, app_id, "w0")
        return {}

    def _fault_broker_restart(
        self, workers: list[Worker], env: Mapping[str, str], app_id: str
    ) -> dict[str, int]:
        """SIGTERM the Kafka broker, wait 5 s, start it again on the same data."""
        self.stack.kafka.stop(timeout_s=30)
        time.sleep(5)
        self.stack.kafka.start(timeout_s=90)
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.name} died with the broker:\n{w.tail()}")
        return {}

    def _fault_redis_outage(
        self, workers: list[Worker], env: Mapping[str, str], app_id: str
    ) -> dict[str, int]:
        """SIGTERM redis-server, keep it down :data:`REDIS_OUTAGE_S` s, start it again (its
        append-only file keeps the data, as a production Redis with AOF would)."""
        self.stack.redis.stop(timeout_s=30)
        time.sleep(REDIS_OUTAGE_S)
        self.stack.redis.start()
        self._alive(workers)
        return {}

    def _fault_redis_flush(
        self, workers: list[Worker], env: Mapping[str, str], app_id: str
    ) -> dict[str, int]:
        """The redis-outage fault, then ``FLUSHALL``, then ``feedpipe rebuild`` (a process)."""
        import redis

        self._fault_redis_outage(workers, env, app_id)
        redis.Redis.from_url(self.redis_url).flushall()
        self.log("  FLUSHALL done; feedpipe rebuild")
        log = self.config.state_dir / "logs" / f"rebuild-{app_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            done = subprocess.run(
                [sys.executable, "-m", "ops.cli", "rebuild"], cwd=ROOT,
                env={**os.environ, **env, "COLUMNS": "120"}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, timeout=self.config.drain_timeout_s,
            )
        if done.returncode != 0:
            raise RuntimeError(f"feedpipe rebuild failed ({done.returncode}); log: {log}")
        self._alive(workers)
        return {}

    def _fault_connector_kill(
        self, workers: list[Worker], env: Mapping[str, str], app_id: str
    ) -> dict[str, int]:
        """A ``feedpipe connect`` process paginates the simulated WordPress API; SIGKILL it after
        a third of the pages, restart it; wait until every post is in cms.raw, then stop it.
        The check after the drain (``cms_lost`` / ``cms_doubled``) reads Redis and
        content.enriched."""
        from connectors.simulator import FixtureServer

        name = f"faults-wp-{app_id[-8:]}"
        posts = wp_posts(self.data_dir, WP_POSTS)
        server = FixtureServer().__enter__()
        server.wp_posts = posts
        cfg = {"sources": [{
            "name": name, "kind": "wordpress", "brand": "frontity", "url": f"{server.base}/wp-json",
            "schedule_s": 1.0, "page_size": 5, "per_host_rps": 50.0,
            "cursor_dir": str(self.config.state_dir / "cursors" / app_id),
        }]}
        path = self.config.state_dir / f"connectors-{app_id}.yaml"
        path.write_bytes(orjson.dumps(cfg))  # JSON is YAML
        from connectors.simulator import Fault

        server.fault("/wp-json/wp/v2/posts", Fault("sleep", sleep_s=WP_DELAY_S,
                                                    when=lambda q: True, times=10**6))
        log = self.config.state_dir / "logs" / f"connect-{app_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)

        def spawn() -> subprocess.Popen[bytes]:
            with log.open("ab") as out:
                return subprocess.Popen(
                    [sys.executable, "-m", "ops.cli", "connect", name, "--config", str(path)],
                    cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )

        first = spawn()
        pages = -(-WP_POSTS // 5)
        deadline = time.monotonic() + 60
        while len(server.requests_to("/wp-json/wp/v2/posts")) < pages // 3:
            if time.monotonic() > deadline or first.poll() is not None:
                raise RuntimeError(f"the connector did not paginate; log: {log}")
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_at = len(server.requests_to("/wp-json/wp/v2/posts"))
        second = spawn()
        try:
            want = {str(p["id"]) for p in posts}
            deadline = time.monotonic() + 120
            while True:
                got = {r.get("source_id") for r in self._raw_of(name)}
                if want <= got:
                    break
                if time.monotonic() > deadline or second.poll() is not None:
                    raise RuntimeError(f"{len(want - got)} posts never reached cms.raw; log: {log}")
                time.sleep(1.0)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(second.pid, signal.SIGTERM)
            second.wait(30)
            server.__exit__(None, None, None)
        self._post_checks.append(lambda: self._check_cms(name, posts, killed_at))
        return {}

    def _raw_of(self, source: str) -> list[dict[str, Any]]:
        """Decoded cms.raw records of ``source``."""
        from feedpipe.errors import SerializationError
        from feedpipe.wire.codec import codec

        dec = codec("RawCmsEvent").decode
        out = []
        for _, value in self._consume("cms.raw"):
            if value is None:
                continue
            try:
                rec = dec(value)
            except SerializationError:
                continue  # another scenario's poison record: not this source's
            if rec.get("source") == source:
                out.append(rec)
        return out

    def _check_cms(
        self, source: str, posts: Sequence[Mapping[str, Any]], killed_at: int
    ) -> tuple[int, int, str]:
        """(posts missing from Redis, extra content.enriched records, detail) of the
        connector-kill scenario."""
        import redis

        from feedpipe.ids import content_id
        from feedpipe.store.keys import keys

        r = redis.Redis.from_url(self.redis_url)
        k = keys()
        ids = [content_id(source, str(p["id"])) for p in posts]
        present = sum(1 for raw in r.mget([k.content(c) for c in ids]) if raw)
        wanted = set(ids)
        per_item: Counter[str] = Counter()
        for key, value in self._consume("content.enriched"):
            if value is not None and key is not None and key.decode() in wanted:
                per_item[key.decode()] += 1
        raw = self._raw_of(source)
        dup_raw = len(raw) - len({x["event_id"] for x in raw})
        return (
            len(ids) - present,
            sum(n - 1 for n in per_item.values() if n > 1),
            f"connector killed after {killed_at} requests; cms.raw {len(raw)} records "
            f"({dup_raw} re-sent after the kill, absorbed downstream), "
            f"{len(per_item)} posts in content.enriched, {present} in Redis",
        )

    def _fault_poison(
        self, workers: list[Worker], env: Mapping[str, str], app_id: str
    ) -> dict[str, int]:
        """Produce the poison records (:func:`poison_records`) to every consumed topic."""
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                      "message.max.bytes": 1_000_000})
        sent: dict[str, int] = Counter()
        for topic_name in POISON_TOPICS:
            sample = next((v for _, v in self._consume(topic_name, limit=1) if v), None)
            if sample is None:
                raise RuntimeError(f"no record in {topic_name} to build poison from")
            for key, value in poison_records(sample):
                p.produce(topic_name, key=key, value=value)
                sent[topic_name] += 1
        if p.flush(60) != 0:
            raise RuntimeError("poison records were not acknowledged")
        return dict(sent)

    # helpers ------------------------------------------------------------------------------------

    @contextmanager
    def _workers(self, env: Mapping[str, str], app_id: str) -> Iterator[list[Worker]]:
        workers: list[Worker] = []
        try:
            yield workers
        finally:
            for w in workers:
                w.stop()

    def _worker(self, env: Mapping[str, str], app_id: str, name: str) -> Worker:
        w = Worker(name, env, self.config.state_dir / "workers" / app_id / name)
        w.start()
        return w

    def _fresh(self) -> None:
        import redis
        from confluent_kafka.admin import AdminClient

        from feedpipe.kafka.topics import recreate

        recreate(topology(), AdminClient({"bootstrap.servers": self.bootstrap}))
        redis.Redis.from_url(self.redis_url).flushall()

    def _replay_catalogue(self) -> None:
        from connectors.replay import replay_all

        replay_all(topology(), self.data_dir, ["mind"], bootstrap=self.bootstrap)

    def _lag(self, app_id: str) -> int:
        """Total lag of the app's consumer groups, probed in a child process (librdkafka can
        abort the process that runs admin requests while the broker restarts: the suite's
        own process must survive the faults it injects).

        Raises:
            RuntimeError: the probe failed (broker unreachable, child died).
        """
        from feedpipe.kafka.lag import pipeline_groups
        from feedpipe.monitoring.exporter import ProbeProcess

        if self._probe is None:
            self._probe = ProbeProcess(self.bootstrap, timeout_s=5.0, deadline_s=30.0)
        rows = self._probe.probe(pipeline_groups(app_id))
        errors = [r.sample.error for r in rows if r.sample.error]
        if errors:
            raise RuntimeError(f"lag probe: {errors[0]}")
        return sum(r.lag for r in rows)

    @staticmethod
    def _alive(workers: Sequence[Worker]) -> None:
        """Raise when a worker the scenario did not kill has exited (with its log tail)."""
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise RuntimeError(
                    f"worker {w.name} exited with code {w.proc.returncode}:\n{w.tail()}"
                )

    def _recovered(
        self, app_id: str, before: int, t_fault: float, stream: Stream, workers: Sequence[Worker]
    ) -> float | None:
        """Seconds from the fault until lag <= max(before, rate * 1 s); None if it never is
        within ``drain_timeout_s``.

        Raises:
            RuntimeError: a worker exited on its own.
        """
        bound = max(before, int(self.config.rate))
        deadline = t_fault + self.config.drain_timeout_s
        while time.monotonic() < deadline:
            self._alive(workers)
            try:
                lag = self._lag(app_id)
            except Exception:  # the broker may still be down: not recovered
                lag = None
            if lag is not None and (lag <= bound or (not stream.is_alive() and lag == 0)):
                return time.monotonic() - t_fault
            time.sleep(0.5)
        return None

    def _drain(self, app_id: str, workers: Sequence[Worker]) -> None:
        """Wait for lag 0 on every group, three polls in a row.

        Raises:
            RuntimeError: not drained in ``drain_timeout_s``, or a worker exited on its own.
        """
        deadline = time.monotonic() + self.config.drain_timeout_s
        quiet = 0
        lag = -1
        while time.monotonic() < deadline:
            self._alive(workers)
            try:
                lag = self._lag(app_id)
            except Exception:  # the broker may be restarting
                lag = -1
            quiet = quiet + 1 if lag == 0 else 0
            if quiet >= 3:
                return
            time.sleep(1.0)
        raise RuntimeError(f"pipeline did not drain in {self.config.drain_timeout_s:.0f} s "
                           f"(lag {lag})")

    def _wait_feeds(self, timeout_s: float = 120.0) -> None:
        wait_feeds_converged(self.redis_url, timeout_s)

    def _profiles(self, users: list[str]) -> dict[str, dict[str, Any] | None]:
        """Each user's profile as stored in Redis (decoded by feedpipe.store.profiles), or None."""
        import redis

        from feedpipe.store.interning import ITEMS, resolve_sync
        from feedpipe.store.keys import keys
        from feedpipe.store.profiles import decode_profile, stored_ordinals

        r = redis.Redis.from_url(self.redis_url)
        k = keys()
        out: dict[str, dict[str, Any] | None] = {}
        for i in range(0, len(users), 500):
            chunk = users[i : i + 500]
            *raws, gen = r.mget([k.profile(u) for u in chunk] + [k.item_gen()])
            ITEMS.sync(gen)
            resolve_sync(r, stored_ordinals(raws))
            for u, raw in zip(chunk, raws, strict=True):
                out[u] = decode_profile(raw) if raw is not None else None
        return out

    def _consume(
        self, topic_name: str, limit: int | None = None
    ) -> list[tuple[bytes | None, bytes | None]]:
        """(key, value) of every record of ``topic_name`` up to its end offsets at the call
        (at most ``limit``)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"faults-{uuid.uuid4()}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            parts = c.list_topics(topic_name, timeout=10).topics[topic_name].partitions
            ends = {p: c.get_watermark_offsets(TopicPartition(topic_name, p), timeout=10)[1]
                    for p in parts}
            c.assign([TopicPartition(topic_name, p, 0) for p in parts])
            out: list[tuple[bytes | None, bytes | None]] = []
            done = {p for p, end in ends.items() if end == 0}
            deadline = time.monotonic() + 60
            while len(done) < len(ends) and time.monotonic() < deadline:
                msg = c.poll(1.0)
                if msg is None or msg.error():
                    continue
                out.append((msg.key(), msg.value()))
                if limit is not None and len(out) >= limit:
                    break
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    done.add(msg.partition())
            return out
        finally:
            c.close()

    def _dlq(self, sent: Mapping[str, int]) -> tuple[dict[str, int], int, dict[str, int]]:
        """(reader events DLQ'd per user, poison records found in DLQs, DLQ reasons count)."""
        from feedpipe.wire.codec import codec

        dec = codec("DeadLetter").decode
        per_user: dict[str, int] = Counter()
        reasons: dict[str, int] = Counter()
        found = 0
        for topic_name in POISON_TOPICS:
            dlq = topology().topics[topic_name].dlq
            assert dlq is not None
            for key, value in self._consume(dlq):
                if value is None:
                    continue
                d = dec(value)
                reasons[f"{topic_name}:{d['error_type']}"] += 1
                if (key or b"").startswith(POISON_KEY_PREFIX):
                    found += 1
                elif topic_name == "reader.events" and key:
                    per_user[key.decode("utf-8", "replace")] += 1
        return dict(per_user), found, dict(reasons)

    def _topic_mismatches(self, profiles: Mapping[str, dict[str, Any] | None]) -> int:
        """Users whose newest profiles.updated record disagrees with Redis on a counter, or who
        have no feed in Redis."""
        import redis

        from feedpipe.store.keys import keys
        from feedpipe.wire.codec import codec

        dec = codec("UserProfile").decode
        newest: dict[str, dict[str, Any] | None] = {}
        for key, value in self._consume("profiles.updated"):
            if key is not None:
                newest[key.decode()] = dec(value) if value is not None else None
        r = redis.Redis.from_url(self.redis_url)
        k = keys()
        users = [u for u, p in profiles.items() if p is not None]
        pipe = r.pipeline(transaction=False)
        for u in users:
            pipe.exists(k.feed(u))
        has_feed = dict(zip(users, (bool(n) for n in pipe.execute()), strict=True))
        bad = 0
        for u in users:
            p, t = profiles[u], newest.get(u)
            assert p is not None
            moved = t is None or any(int(t.get(c) or 0) != int(p.get(c) or 0) for c in COUNTERS)
            if moved or not has_feed[u]:
                bad += 1
        return bad


POISON_KEY_PREFIX = b"poison-"


def poison_records(good: bytes) -> list[tuple[bytes, bytes]]:
    """The four poison records built from ``good`` (a valid record of the topic, Confluent
    framing), keyed ``poison-<kind>``: the same body under an unregistered schema id, the
    record cut in half (truncated Avro), a ~900 KB payload of random bytes, and the record
    with invalid UTF-8 bytes in its first string (same length, so the framing stays valid)."""
    import struct

    return [
        (POISON_KEY_PREFIX + b"schema-id", struct.pack(">bI", 0, 987_654) + good[5:]),
        (POISON_KEY_PREFIX + b"truncated", good[: max(6, len(good) // 2)]),
        (POISON_KEY_PREFIX + b"huge", os.urandom(HUGE_BYTES)),
        (POISON_KEY_PREFIX + b"utf8", good[:5] + _invalid_utf8_body(good[5:])),
    ]


def _invalid_utf8_body(body: bytes) -> bytes:
    """``body`` with its first string's bytes replaced by invalid UTF-8 (same length, so the
    Avro framing stays valid): the first run of >= 4 printable ASCII bytes gets 0xff 0xfe."""
    b = bytearray(body)
    run = 0
    for i, ch in enumerate(b):
        run = run + 1 if 32 <= ch < 127 else 0
        if run == 4:
            b[i - 3 : i - 1] = b"\xff\xfe"
            return bytes(b)
    return bytes(b) + b"\xff"


def wp_posts(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """``n`` WordPress posts made from the 3 real ones of ``wordpress/frontity/posts.json``:
    copies with ids 10001.., one second apart in ``modified_gmt``, titles numbered.

    Raises:
        FileNotFoundError: the shared WordPress payload is missing.
    """
    import copy
    from datetime import datetime, timedelta

    real = orjson.loads((data_dir / "wordpress" / "frontity" / "posts.json").read_bytes())
    base = datetime(2024, 1, 1)
    out = []
    for i in range(n):
        p = copy.deepcopy(real[i % len(real)])
        p["id"] = 10_001 + i
        stamp = (base + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S")
        p["modified_gmt"] = p["date_gmt"] = p["modified"] = p["date"] = stamp
        p["slug"] = f"{p.get('slug', 'post')}-{i}"
        if isinstance(p.get("title"), dict):
            p["title"]["rendered"] = f"{p['title'].get('rendered', '')} ({i})"
        out.append(p)
    return out
