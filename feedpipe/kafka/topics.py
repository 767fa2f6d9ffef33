"""``feedpipe topics plan|apply``: make the broker's topics match topology.yaml.

Compared per topic: existence, partition count, replication factor, ``cleanup.policy`` and
``retention.ms``. ``apply`` creates missing topics, adds partitions and sets configs
(incremental alter, SET only: other topic configs are left alone). It never deletes a topic
and never lowers a partition count (Kafka cannot) or changes the replication factor: those
differences are reported as ``error`` changes and left as they are.

Topics on the broker that topology.yaml does not name (Faust changelogs, ``__consumer_offsets``)
are ignored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from feedpipe.errors import FeedpipeError
from feedpipe.settings import settings
from feedpipe.topology import TopicSpec, Topology

Action = Literal["create", "alter-config", "add-partitions", "ok", "error"]
CHECKED_CONFIGS = ("cleanup.policy", "retention.ms")


class TopicsError(FeedpipeError):
    """The broker refused or failed an admin request (message names the topic and the cause)."""


@dataclass(frozen=True)
class TopicChange:
    """One line of a plan.

    Attributes:
        action: ``create`` (missing topic), ``alter-config`` (cleanup.policy / retention.ms
            differ), ``add-partitions`` (fewer partitions than declared), ``ok`` (matches),
            ``error`` (a difference ``apply`` will not fix: fewer partitions declared than the
            broker has, or another replication factor).
        topic: topic name.
        detail: human-readable description, e.g. ``retention.ms 1000 -> 604800000``.
        configs: for ``create`` / ``alter-config``, the configs to set (broker names -> values).
        partitions: for ``create`` / ``add-partitions``, the declared partition count.
    """

    action: Action
    topic: str
    detail: str
    configs: tuple[tuple[str, str], ...] = ()
    partitions: int | None = None

    @property
    def is_error(self) -> bool:
        """True for ``error`` changes."""
        return self.action == "error"

    @property
    def is_noop(self) -> bool:
        """True for ``ok`` changes."""
        return self.action == "ok"

    def __str__(self) -> str:
        return f"{self.action:<15} {self.topic:<28} {self.detail}"


def admin_client(bootstrap: str) -> AdminClient:
    """An AdminClient for ``bootstrap`` (e.g. ``settings().kafka_bootstrap``)."""
    return AdminClient(settings().kafka_config(bootstrap))  # + TLS/SASL of the settings


def replicas(spec: TopicSpec) -> int:
    """The replication factor ``spec`` is created with: its own ``replication_factor`` from
    topology.yaml, else ``FEEDPIPE_KAFKA_REPLICATION_FACTOR`` (settings; 1 by default, 3 on
    the local 3-broker cluster, whose brokers also set ``min.insync.replicas`` 2)."""
    return spec.replication_factor or settings().kafka_replication_factor


def format_changes(changes: Iterable[TopicChange]) -> str:
    """The changes one per line (``action  topic  detail``), sorted as given."""
    return "\n".join(str(c) for c in changes)


def _norm(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if name == "cleanup.policy":
        return ",".join(sorted(p.strip() for p in value.split(",") if p.strip()))
    return value.strip()


def _broker_configs(admin: AdminClient, topics: list[str], timeout_s: float) -> dict[str, dict]:
    if not topics:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    futures = admin.describe_configs(resources, request_timeout=timeout_s)
    out: dict[str, dict[str, str | None]] = {}
    for res, fut in futures.items():
        try:
            entries = fut.result()
        except KafkaException as exc:
            raise TopicsError(f"describe_configs {res.name}: {exc}") from exc
        out[res.name] = {k: entries[k].value if k in entries else None for k in CHECKED_CONFIGS}
    return out


def _diff(name: str, spec: TopicSpec, partitions: int, rf: int, current: dict) -> TopicChange:
    errors: list[str] = []
    if spec.partitions < partitions:
        errors.append(
            f"partitions {partitions} on the broker > {spec.partitions} declared "
            "(Kafka cannot remove partitions; recreate the topic by hand)"
        )
    if rf != replicas(spec):
        errors.append(
            f"replication factor {rf} on the broker != {replicas(spec)} declared "
            "(not changed by apply)"
        )
    if errors:
        return TopicChange("error", name, "; ".join(errors))
    want = spec.configs()
    differ = {k: v for k, v in want.items() if _norm(k, current.get(k)) != _norm(k, v)}
    parts = [f"{k} {current.get(k)} -> {v}" for k, v in differ.items()]
    if spec.partitions > partitions:
        parts.insert(0, f"partitions {partitions} -> {spec.partitions}")
        return TopicChange(
            "add-partitions",
            name,
            ", ".join(parts),
            configs=tuple(differ.items()),
            partitions=spec.partitions,
        )
    if differ:
        return TopicChange("alter-config", name, ", ".join(parts), configs=tuple(differ.items()))
    return TopicChange(
        "ok",
        name,
        f"{partitions} partitions, cleanup.policy={want['cleanup.policy']}, "
        f"retention.ms={want['retention.ms']}",
    )


def plan(topo: Topology, admin: AdminClient, timeout_s: float = 30) -> list[TopicChange]:
    """Diff the topics of ``topo`` against the broker; changes nothing.

    Returns:
        One :class:`TopicChange` per declared topic, in topology.yaml order. An
        ``add-partitions`` change also carries the config differences of that topic.

    Raises:
        TopicsError: the broker did not answer within ``timeout_s`` seconds or refused a
            describe request.
    """
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TopicsError(f"list_topics: {exc}") from exc
    existing = [t for t in topo.topics if t in md.topics and md.topics[t].error is None]
    configs = _broker_configs(admin, existing, timeout_s)
    changes: list[TopicChange] = []
    for name, spec in topo.topics.items():
        if name not in existing:
            changes.append(
                TopicChange(
                    "create",
                    name,
                    f"{spec.partitions} partitions, rf {replicas(spec)}, "
                    + ", ".join(f"{k}={v}" for k, v in spec.configs().items()),
                    configs=tuple(spec.configs().items()),
                    partitions=spec.partitions,
                )
            )
            continue
        tmd = md.topics[name]
        rf = min((len(p.replicas) for p in tmd.partitions.values()), default=0)
        changes.append(_diff(name, spec, len(tmd.partitions), rf, configs[name]))
    return changes


def _wait(futures: dict, what: str) -> None:
    for key, fut in futures.items():
        name = key.name if isinstance(key, ConfigResource) else key
        try:
            fut.result()
        except KafkaException as exc:
            raise TopicsError(f"{what} {name}: {exc}") from exc


def _wait_visible(admin: AdminClient, want: dict[str, int], timeout_s: float) -> None:
    """Wait until every topic in ``want`` shows its partition count, each with a leader."""
    deadline = time.monotonic() + timeout_s
    while True:
        md = admin.list_topics(timeout=timeout_s)
        pending = [
            t
            for t, n in want.items()
            if t not in md.topics
            or len(md.topics[t].partitions) < n
            or any(p.leader < 0 for p in md.topics[t].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicsError(f"topics not ready after {timeout_s:.0f} s: {', '.join(pending)}")
        time.sleep(0.2)


def _wait_configs(admin: AdminClient, want: dict[str, dict[str, str]], timeout_s: float) -> None:
    """Wait until describe_configs shows the values just set: on KRaft the broker serving
    describe_configs learns a config change from the metadata log shortly after the
    controller acknowledged it."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = _broker_configs(admin, list(want), timeout_s)
        pending = [
            t
            for t, cfg in want.items()
            if any(_norm(k, current[t].get(k)) != _norm(k, v) for k, v in cfg.items())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicsError(f"configs not visible after {timeout_s:.0f} s: {', '.join(pending)}")
        time.sleep(0.2)


def apply(topo: Topology, admin: AdminClient, timeout_s: float = 30) -> list[TopicChange]:
    """Make the broker match ``topo``: create, add partitions, set configs. Never deletes.

    Waits until created topics and added partitions have leaders, so producers and Faust
    workers started right after find them.

    Returns:
        The plan that was applied (see :func:`plan`); ``error`` changes were not applied.

    Raises:
        TopicsError: the broker refused a request (e.g. an invalid config value).
    """
    changes = plan(topo, admin, timeout_s)
    creates = [c for c in changes if c.action == "create"]
    if creates:
        new = [
            NewTopic(
                c.topic,
                num_partitions=topo.topics[c.topic].partitions,
                replication_factor=replicas(topo.topics[c.topic]),
                config=dict(c.configs),
            )
            for c in creates
        ]
        _wait(admin.create_topics(new, request_timeout=timeout_s), "create_topics")
    grows = [c for c in changes if c.action == "add-partitions"]
    if grows:
        parts = [NewPartitions(c.topic, topo.topics[c.topic].partitions) for c in grows]
        _wait(admin.create_partitions(parts, request_timeout=timeout_s), "create_partitions")
    alters = [c for c in changes if c.action in ("alter-config", "add-partitions") and c.configs]
    if alters:
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                c.topic,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in c.configs
                ],
            )
            for c in alters
        ]
        _wait(
            admin.incremental_alter_configs(resources, request_timeout=timeout_s),
            "incremental_alter_configs",
        )
    want = {c.topic: topo.topics[c.topic].partitions for c in [*creates, *grows]}
    if want:
        _wait_visible(admin, want, timeout_s)
    if alters:
        _wait_configs(admin, {c.topic: dict(c.configs) for c in alters}, timeout_s)
    return changes


def recreate(topo: Topology, admin: AdminClient, timeout_s: float = 60) -> list[TopicChange]:
    """Delete every topic ``topo`` declares (records and all), then :func:`apply` it again:
    an empty pipeline for tests and benchmarks. Never use it on data you keep.

    Deletion is asynchronous on the broker, so creation is retried for up to ``timeout_s``
    seconds. Returns :func:`apply`'s changes.

    Raises:
        KafkaException: a deletion failed, or creation still failed after ``timeout_s``.
    """
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [name for name in topo.topics if name in existing]
    if doomed:
        for fut in admin.delete_topics(doomed, operation_timeout=30).values():
            fut.result()
    deadline = time.monotonic() + timeout_s
    while doomed and time.monotonic() < deadline:
        if not set(doomed) & set(admin.list_topics(timeout=10).topics):
            break
        time.sleep(0.2)
    while True:
        try:
            return apply(topo, admin)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
