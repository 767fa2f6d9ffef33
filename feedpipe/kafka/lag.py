"""Consumer lag: how far a consumer group is behind the end of its topics.

lag(partition) = high watermark (log end offset) - committed offset of the group; a partition
the group never committed counts from the log start offset. Used by ``feedpipe status``, the
``up`` command's progress display and the end-to-end tests to know when the pipeline drained.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from feedpipe.settings import settings
from feedpipe.topology import topology

# librdkafka's own log lines (e.g. one "Connection refused" every 50 ms while a broker is down)
# go to this logger instead of stderr: a probe reports an unreachable broker once, as an error.
# A command line without logging configured drops them (NullHandler); a worker logs them.
_LOG = logging.getLogger("feedpipe.kafka.lag.librdkafka")
_LOG.addHandler(logging.NullHandler())


def _probe_config(bootstrap: str) -> dict[str, Any]:
    """Client settings of the lag probes: the settings' connection plus the quiet logger."""
    return {**settings().kafka_config(bootstrap), "logger": _LOG}


def watermarks(
    admin: AdminClient, partitions: Iterable[tuple[str, int]], timeout_s: float = 10.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (low, high): log start offset and high watermark (log end offset)
    of each of ``partitions``, from two batched ListOffsets calls for all of them (earliest,
    latest; the client sends one request per partition leader, KIP-396).

    Raises:
        confluent_kafka.KafkaException: a partition's offsets could not be read in
            ``timeout_s`` (unknown partition, no leader, broker down).
    """
    tps = [TopicPartition(t, p) for t, p in partitions]
    if not tps:
        return {}
    found: list[dict[tuple[str, int], int]] = []
    for spec in (OffsetSpec.earliest(), OffsetSpec.latest()):
        futs = admin.list_offsets({tp: spec for tp in tps}, request_timeout=timeout_s)
        found.append(
            {(tp.topic, tp.partition): fut.result().offset for tp, fut in futs.items()}
        )
    low, high = found
    return {key: (low[key], high[key]) for key in low}


def _partitions(md: Any, topics: Iterable[str]) -> list[tuple[str, int]]:
    """(topic, partition) of every partition of the known ``topics`` in metadata ``md``."""
    out: list[tuple[str, int]] = []
    for t in topics:
        tmd = md.topics.get(t)
        if tmd is not None and tmd.error is None:
            out += [(t, p) for p in sorted(tmd.partitions)]
    return out


def end_offsets(
    bootstrap: str, topics: Iterable[str], timeout_s: float = 10.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (low, high) watermark offsets of every partition of ``topics``
    (unknown topics left out): one metadata request and :func:`watermarks`."""
    admin = AdminClient(_probe_config(bootstrap))
    md = admin.list_topics(timeout=timeout_s)
    return watermarks(admin, _partitions(md, topics), timeout_s)


def group_lag(
    bootstrap: str, group: str, topics: Iterable[str], timeout_s: float = 10.0
) -> dict[str, int]:
    """Total lag of consumer group ``group`` per topic (messages not yet committed)."""
    topics = list(topics)
    ends = end_offsets(bootstrap, topics, timeout_s)
    admin = AdminClient(_probe_config(bootstrap))
    req = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for (t, p) in ends])]
    committed: dict[tuple[str, int], int] = {}
    try:
        res = admin.list_consumer_group_offsets(req, request_timeout=timeout_s)[group].result()
        for tp in res.topic_partitions:
            committed[(tp.topic, tp.partition)] = tp.offset
    except Exception:
        committed = {}
    lag: dict[str, int] = dict.fromkeys(topics, 0)
    for (t, p), (low, high) in ends.items():
        off = committed.get((t, p), -1)
        lag[t] += high - (off if off >= 0 else low)
    return lag


def pipeline_groups(app_id: str) -> dict[str, list[str]]:
    """The worker's consumer groups and the topics each consumes, from topology.yaml
    ``stages``: ``{group: [input topics]}``, e.g. the Faust group ``feedpipe`` on cms.raw and
    content.normalised, the click path's group ``feedpipe.clickpath`` on reader.events."""
    groups: dict[str, list[str]] = {}
    for stage in topology().stages.values():
        topics = groups.setdefault(stage.group(app_id), [])
        if stage.input not in topics:
            topics.append(stage.input)
    return groups


def pipeline_lag(bootstrap: str, app_id: str, timeout_s: float = 10.0) -> dict[str, int]:
    """Total lag per topic over every group of :func:`pipeline_groups` (0 = drained)."""
    lag: dict[str, int] = {}
    for group, topics in pipeline_groups(app_id).items():
        lag |= group_lag(bootstrap, group, topics, timeout_s)
    return lag


# -- per-partition probe and Burrow-style evaluation ---------------------------------------------


class Status(StrEnum):
    """Partition/group status, after Burrow's consumer lag evaluation
    (github.com/linkedin/Burrow/wiki/Consumer-Lag-Evaluation-Rules), worst last."""

    OK = "OK"
    WARN = "WARN"
    STALL = "STALL"
    STOP = "STOP"
    ERR = "ERR"


SEVERITY = {Status.OK: 0, Status.WARN: 1, Status.STALL: 2, Status.STOP: 3, Status.ERR: 4}


@dataclass(frozen=True)
class Sample:
    """One probe of one partition of one consumer group.

    Attributes:
        at_s: probe time, Unix seconds.
        end: log end offset (high watermark); -1 when the broker gave none.
        committed: the group's committed offset; None when the group never committed here.
        low: log start offset (a partition never committed counts its lag from here).
        active: the group had members (consumers) at probe time; None when unknown.
        error: probe error message for this partition, else None.
    """

    at_s: float
    end: int
    committed: int | None
    low: int = 0
    active: bool | None = None
    error: str | None = None

    @property
    def lag(self) -> int:
        """Messages not yet committed: end - committed (end - low without a commit), >= 0."""
        base = self.committed if self.committed is not None and self.committed >= 0 else self.low
        return max(0, self.end - base)


@dataclass(frozen=True)
class Evaluation:
    """Status of a partition over a window of samples; ``trend`` is lag change in messages/s."""

    status: Status
    reason: str
    lag: int
    trend: float | None


def evaluate(window: Sequence[Sample]) -> Evaluation:
    """Evaluate a window of samples of one partition (oldest first) with Burrow's rules.

    Rules, first match wins (Burrow's wiki numbering in brackets):

    * ERR: no samples, a probe error, or the committed or end offset went backwards
      (Burrow's REWIND; e.g. an offset reset or a recreated topic).
    * OK: the broker has no end offset yet [5], or any sample in the window has lag 0 [1].
    * STOP / STALL: lag > 0 throughout and the committed offset never moved over the window
      (at least two samples) [2]. STOP when the last sample says the group has no members:
      nobody will commit, the consumer is gone [4]. Otherwise STALL: consumers are there but
      not making progress. Burrow tells the two apart by commit timestamps; OffsetFetch does
      not return them, so the group's membership stands in for "no commits for a while".
    * WARN: the committed offset moved but lag grew in every interval [3] (falling behind).
    * OK otherwise [6].

    ``trend`` = (last lag - first lag) / (last time - first time), messages/s; None with
    fewer than two samples or zero elapsed time.
    """
    if not window:
        return Evaluation(Status.ERR, "no samples", 0, None)
    last = window[-1]
    first = window[0]
    span = last.at_s - first.at_s
    trend = (last.lag - first.lag) / span if len(window) >= 2 and span > 0 else None
    for s in window:
        if s.error:
            return Evaluation(Status.ERR, f"probe error: {s.error}", last.lag, trend)
    for a, b in itertools.pairwise(window):
        if a.committed is not None and b.committed is not None and b.committed < a.committed:
            return Evaluation(
                Status.ERR, f"committed offset went back {a.committed} -> {b.committed}",
                b.lag, trend,
            )  # fmt: skip
        if b.end >= 0 and b.end < a.end:
            return Evaluation(
                Status.ERR, f"end offset went back {a.end} -> {b.end}", b.lag, trend
            )
    if last.end < 0:
        return Evaluation(Status.OK, "no end offset yet", 0, trend)
    if any(s.lag == 0 for s in window):
        return Evaluation(Status.OK, "caught up within the window", last.lag, trend)
    if len(window) >= 2 and all(s.committed == first.committed for s in window):
        if last.active is False:
            return Evaluation(
                Status.STOP, "lag > 0, no commits and no consumers in the group", last.lag, trend
            )
        return Evaluation(
            Status.STALL, f"lag > 0, committed offset stuck at {first.committed}", last.lag, trend
        )
    if len(window) >= 2 and all(b.lag > a.lag for a, b in itertools.pairwise(window)):
        return Evaluation(Status.WARN, "lag increasing in every interval", last.lag, trend)
    return Evaluation(Status.OK, "consuming", last.lag, trend)


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status (OK for none), as Burrow's group status."""
    return max(statuses, key=SEVERITY.__getitem__, default=Status.OK)


def exit_code(status: Status) -> int:
    """Process exit code for a group status: 0 OK/WARN, 2 STALL/STOP, 3 ERR."""
    if status in (Status.STALL, Status.STOP):
        return 2
    return 3 if status is Status.ERR else 0


@dataclass
class PartitionProbe:
    """One probe row: group, topic, partition, offsets, lag in offsets and seconds."""

    group: str
    topic: str
    partition: int
    sample: Sample
    lag_s: float | None
    """now - timestamp (ms) of the record at the committed offset, seconds; 0 when lag is 0;
    None when that record could not be read."""

    @property
    def lag(self) -> int:
        """Lag in offsets."""
        return self.sample.lag


class LagProbe:
    """Samples committed offsets, end offsets and record times of consumer groups.

    Keeps one AdminClient and one assign-only Consumer (no group membership, never commits)
    for repeated probes; close it with :meth:`close`. Not thread-safe: use from one thread.
    """

    def __init__(self, bootstrap: str, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._admin = AdminClient(_probe_config(bootstrap))
        self._consumer = Consumer(
            {
                **_probe_config(bootstrap),
                "group.id": "feedpipe-lag-probe",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "max.partition.fetch.bytes": 65536,
                "fetch.wait.max.ms": 50,
            }
        )
        self._ts_cache: dict[tuple[str, int, int], int | None] = {}

    def close(self) -> None:
        """Close the Kafka clients."""
        self._consumer.close()

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        """Every (topic, partition) -> offset the group committed (OffsetFetch, all topics).

        Raises:
            confluent_kafka.KafkaException: the broker did not answer in ``timeout_s``.
        """
        req = [ConsumerGroupTopicPartitions(group)]
        fut = self._admin.list_consumer_group_offsets(req, request_timeout=self.timeout_s)[group]
        res = fut.result()
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in res.topic_partitions or []
            if tp.error is None and tp.offset >= 0
        }

    def active(self, group: str) -> bool | None:
        """True when the group has members, False when it has none, None when unknown."""
        try:
            fut = self._admin.describe_consumer_groups(
                [group], request_timeout=self.timeout_s
            )[group]
            desc = fut.result()
        except Exception:
            return None
        return bool(desc.members)

    def _record_times(self, wanted: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], int]:
        """Timestamp (ms) of the record at each (topic, partition, offset); missing if unread."""
        out = {w: t for w in wanted if (t := self._ts_cache.get(w)) is not None}
        todo = [w for w in wanted if w not in out]
        if not todo:
            return out
        self._consumer.assign([TopicPartition(t, p, o) for t, p, o in todo])
        pending = {(t, p): o for t, p, o in todo}
        deadline = time.monotonic() + self.timeout_s
        try:
            while pending and time.monotonic() < deadline:
                for msg in self._consumer.consume(num_messages=64, timeout=0.2):
                    tp = (msg.topic(), msg.partition())
                    if tp not in pending:
                        continue
                    if msg.error() is None:
                        # the first record at or after the committed offset (compaction or
                        # transaction markers can leave gaps)
                        _ts_type, ts = msg.timestamp()
                        out[(tp[0], tp[1], pending[tp])] = ts
                        self._ts_cache[(tp[0], tp[1], pending[tp])] = ts
                    del pending[tp]
        finally:
            self._consumer.unassign()
        if len(self._ts_cache) > 10_000:
            self._ts_cache.clear()
        return out

    def probe(self, group: str, topics: Iterable[str] | None = None) -> list[PartitionProbe]:
        """Sample every partition of ``topics`` (default: the topics the group committed to).

        Returns rows sorted by (topic, partition). Errors are not raised: a failed probe gives
        rows with ``sample.error`` set (one row with topic "" when nothing could be read).
        """
        now = time.time()
        try:
            committed = self.committed(group)
            names = sorted(set(topics) if topics is not None else {t for t, _ in committed})
            md = self._admin.list_topics(timeout=self.timeout_s)
            active = self.active(group)
            marks = watermarks(self._admin, _partitions(md, names), self.timeout_s)
            rows: list[PartitionProbe] = []
            for t in names:
                tmd = md.topics.get(t)
                if tmd is None or tmd.error is not None:
                    err = str(tmd.error) if tmd is not None else "unknown topic"
                    bad = Sample(now, -1, None, error=err)
                    rows.append(PartitionProbe(group, t, -1, bad, None))
                    continue
                for p in sorted(tmd.partitions):
                    low, high = marks[(t, p)]
                    sample = Sample(now, high, committed.get((t, p)), low, active)
                    rows.append(PartitionProbe(group, t, p, sample, 0.0))
        except Exception as exc:
            return [PartitionProbe(group, "", -1, Sample(now, -1, None, error=str(exc)), None)]
        lagging = [r for r in rows if r.sample.error is None and r.lag > 0]
        wanted = [
            (r.topic, r.partition, max(r.sample.committed or 0, r.sample.low)) for r in lagging
        ]
        times = self._record_times(wanted) if wanted else {}
        for r, w in zip(lagging, wanted, strict=True):
            ts = times.get(w)
            r.lag_s = max(0.0, now - ts / 1000.0) if ts is not None and ts > 0 else None
        return rows


class Tracker:
    """Sliding windows of samples per (group, topic, partition) for repeated evaluation."""

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self._samples: dict[tuple[str, str, int], deque[Sample]] = {}

    def add(self, rows: Iterable[PartitionProbe]) -> None:
        """Append each row's sample to its partition's window (oldest dropped)."""
        for r in rows:
            key = (r.group, r.topic, r.partition)
            self._samples.setdefault(key, deque(maxlen=self.window)).append(r.sample)

    def evaluate(self, group: str, topic: str, partition: int) -> Evaluation:
        """:func:`evaluate` over the partition's current window."""
        return evaluate(list(self._samples.get((group, topic, partition), ())))
