"""Replay the files of the shared data directory to Kafka (``topology.yaml`` ``sources:``).

:class:`ReplayConnector` resolves a source's files (:func:`source_files`), reads each with the
reader of the source's kind (:mod:`connectors.files`: pure generators of
:class:`connectors.records.Keyed` records and :class:`connectors.records.Malformed` input),
encodes each record with :func:`feedpipe.wire.codec.codec` and publishes it to the ingest topic
of ``topology.yaml`` (``ingest.cms`` for CMS sources, ``ingest.reader_events`` for MIND
behaviours); malformed input goes to that topic's DLQ as a ``feedpipe.DeadLetter``.
:func:`replay_all` replays several sources with one producer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final

from connectors.base import Connector, ConnectorMetrics, Stopwatch
from connectors.files.cms import drupal_events, wordpress_events
from connectors.files.feeds import feed_document_events
from connectors.files.mind import mind_behavior_events, mind_news_events
from connectors.reader_encoder import ReaderEventEncoder
from connectors.records import Item, Keyed, Malformed
from feedpipe.cms.events import SUBJECT as CMS_SUBJECT
from feedpipe.errors import ConfigError
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.settings import settings
from feedpipe.topology import IngestSpec, SourceSpec, TopicSpec, Topology, topology
from feedpipe.wire.codec import codec

READER_SUBJECT: Final = "ReaderEvent"
PROGRESS_EVERY: Final = 5000

CmsGenerator = Callable[[Path, str, str], Iterator[Keyed]]
CMS_GENERATORS: Final[dict[str, CmsGenerator]] = {
    "mind.news": mind_news_events,
    "wordpress.posts": wordpress_events,
    "drupal.jsonapi": drupal_events,
    "feed.document": feed_document_events,
}
BEHAVIOR_KINDS: Final = frozenset({"mind.behaviors"})


def target_topic(kind: str, ingest: IngestSpec | None = None) -> str:
    """Topic a source kind publishes to: ``ingest.reader_events`` for ``mind.behaviors``, else
    ``ingest.cms`` (default ``ingest``: ``topology().ingest``). ConfigError for an unknown
    kind."""
    topics = ingest if ingest is not None else topology().ingest
    if kind in BEHAVIOR_KINDS:
        return topics.reader_events
    if kind in CMS_GENERATORS:
        return topics.cms
    raise ConfigError(f"no replay generator for source kind {kind!r}")


def source_files(source: SourceSpec, data_dir: Path) -> list[Path]:
    """Files of ``source`` under ``data_dir``: ``path`` itself when it is a file, else its
    ``files`` (in the listed order) or the regular, non-hidden files matching ``glob``
    (sorted by name).

    Raises:
        FileNotFoundError: the path, a listed file, or every glob match is missing (a
            configured source that yields nothing is an error, not an empty replay).
        ConfigError: a directory source has neither ``files`` nor ``glob``.
    """
    base = data_dir / source.path
    if source.files is not None:
        paths = [base / f for f in source.files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"source {source.name}: missing files {missing}")
        return paths
    if source.glob is not None:
        if not base.is_dir():
            raise FileNotFoundError(f"source {source.name}: {base} is not a directory")
        paths = sorted(
            p for p in base.glob(source.glob) if p.is_file() and not p.name.startswith(".")
        )
        if not paths:
            raise FileNotFoundError(f"source {source.name}: no file matches {base}/{source.glob}")
        return paths
    if base.is_file():
        return [base]
    if base.exists():
        raise ConfigError(f"source {source.name}: {base} is a directory; give files or glob")
    raise FileNotFoundError(f"source {source.name}: {base} does not exist")


class ReplayConnector(Connector):
    """Publishes one configured source's files (see :func:`source_files`) once, then returns.

    Args:
        source: the source spec (``topology.yaml`` ``sources:`` entry).
        data_dir: the shared data directory (``settings().data_dir``).
        topics: declared topics (``topology().topics``); the target topic and, for rejected
            rows, its ``dlq`` must be declared.
        ingest: the ingest topics (default ``topology().ingest``, see :func:`target_topic`).
        spacing_s: seconds between replayed MIND history clicks (default: topology's
            ``profiles.history_click_spacing_s``).
        progress: called with the number of input records processed so far, every
            ``progress_every`` records and once at the end.
        producer / bootstrap / name: see :class:`Connector` (name defaults to the source name).
        flush_timeout_s: seconds to wait for acknowledgements at the end of :meth:`run`.

    Raises:
        ConfigError: unknown kind, or target topic / DLQ not declared in ``topics``.
    """

    def __init__(
        self,
        source: SourceSpec,
        data_dir: Path,
        topics: Mapping[str, TopicSpec],
        *,
        ingest: IngestSpec | None = None,
        spacing_s: int | None = None,
        progress: Callable[[int], None] | None = None,
        progress_every: int = PROGRESS_EVERY,
        producer: IdempotentProducer | None = None,
        bootstrap: str | None = None,
        flush_timeout_s: float = 120.0,
    ) -> None:
        super().__init__(source.name, producer=producer, bootstrap=bootstrap)
        self.source = source
        self.data_dir = Path(data_dir)
        self.topic = target_topic(source.kind, ingest)
        spec = topics.get(self.topic)
        if spec is None:
            raise ConfigError(f"source {source.name}: topic {self.topic} is not declared")
        if spec.dlq is not None and spec.dlq not in topics:
            raise ConfigError(f"source {source.name}: dlq {spec.dlq} is not declared")
        self.dlq = spec.dlq
        self.subject = READER_SUBJECT if source.kind in BEHAVIOR_KINDS else CMS_SUBJECT
        if spacing_s is None:
            spacing_s = topology().profiles.history_click_spacing_s
        self.spacing_s = spacing_s
        self.progress = progress
        self.progress_every = max(1, progress_every)
        self.flush_timeout_s = flush_timeout_s

    def files(self) -> list[Path]:
        """The files this source replays (see :func:`source_files`)."""
        return source_files(self.source, self.data_dir)

    def items(self) -> Iterator[Item]:
        """Every item of every file, in file order (pure: no Kafka)."""
        files = self.files()
        if self.source.kind in BEHAVIOR_KINDS:
            for path in files:
                yield from mind_behavior_events(
                    path, self.source.content_source or self.source.name, self.spacing_s
                )
            return
        gen = CMS_GENERATORS[self.source.kind]
        for path in files:
            yield from gen(path, self.source.name, self.source.brand)

    def run(self) -> ConnectorMetrics:
        """Encode and publish every item, flush, and return the metrics.

        Malformed rows are published to the target topic's DLQ as ``feedpipe.DeadLetter``
        (stage ``replay``) and counted under their reason code.

        Raises:
            feedpipe.kafka.producer.DeliveryError: records were not acknowledged.
            feedpipe.errors.SerializationError: a built record does not fit its schema (a bug).
            ConfigError: a malformed row but the target topic has no DLQ.
            FileNotFoundError / OSError: a configured file is missing or unreadable.
        """
        self.setup()
        clock = Stopwatch()
        metrics = self.metrics
        encode = (
            ReaderEventEncoder().encode
            if self.subject == READER_SUBJECT
            else codec(self.subject).encode
        )
        produce = self.producer.produce
        delivered = self._on_delivery  # failures attributed to this connector (see flush)
        topic = self.topic
        progress, every = self.progress, self.progress_every
        fetched = published = 0
        try:
            for item in self.items():
                if self.stopping:
                    break
                fetched += 1
                if type(item) is Keyed:
                    produce(topic, item.key.encode(), encode(item.record), on_delivery=delivered)
                    published += 1
                else:
                    assert isinstance(item, Malformed)
                    self._reject(item)
                if progress is not None and fetched % every == 0:
                    progress(fetched)
        finally:
            metrics.fetched += fetched
            metrics.published += published
        self.flush(self.flush_timeout_s)
        metrics.elapsed_s = clock.elapsed
        if progress is not None:
            progress(fetched)
        return metrics

    def _reject(self, bad: Malformed) -> None:
        if self.dlq is None:
            raise ConfigError(
                f"source {self.source.name}: {bad.origin} is malformed ({bad.reason}) and "
                f"topic {self.topic} has no dlq"
            )
        self.dead_letter(
            self.dlq,
            source_topic=self.topic,
            code=bad.code,
            reason=bad.reason,
            value=bad.raw,
            key=bad.key.encode() if bad.key is not None else None,
            origin=bad.origin,
        )


def replay_all(
    topo: Topology,
    data_dir: Path | None = None,
    sources: Iterable[str] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    bootstrap: str | None = None,
    producer: IdempotentProducer | None = None,
) -> dict[str, ConnectorMetrics]:
    """Replay ``sources`` (names; default all of ``topo.sources``): CMS sources first, then
    behaviours (so clicks mostly find their content), each flushed before the next.

    Args:
        topo: the topology (sources, topics, history spacing).
        data_dir: default ``settings().data_dir``.
        sources: source names to replay, or None for all.
        progress: called with the number of input records processed so far, counted across
            all the sources of this call (for one progress bar).
        bootstrap: Kafka bootstrap servers (default settings); ignored when ``producer`` given.
        producer: a producer to use (not closed here); default: one opened and closed here.

    Returns:
        Metrics per source name, in replay order.

    Raises:
        ConfigError: an unknown source name.
        feedpipe.kafka.producer.DeliveryError, FileNotFoundError: see :meth:`ReplayConnector.run`.
    """
    by_name = {s.name: s for s in topo.sources}
    names = list(by_name) if sources is None else list(sources)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown replay sources {unknown}; known: {sorted(by_name)}")
    chosen = [by_name[n] for n in names]
    chosen.sort(key=lambda s: s.kind in BEHAVIOR_KINDS)  # stable: CMS first, then behaviours
    root = data_dir if data_dir is not None else settings().data_dir
    own = producer is None
    prod = producer or IdempotentProducer(
        bootstrap or settings().kafka_bootstrap, client_id="feedpipe-replay"
    )
    results: dict[str, ConnectorMetrics] = {}
    done = 0
    try:
        for spec in chosen:
            cb: Callable[[int], None] | None = None
            if progress is not None:
                cb = _offset_progress(progress, done)
            conn = ReplayConnector(
                spec,
                root,
                topo.topics,
                ingest=topo.ingest,
                spacing_s=topo.profiles.history_click_spacing_s,
                progress=cb,
                producer=prod,
            )
            results[spec.name] = conn.run()
            done += results[spec.name].fetched
    finally:
        if own:
            prod.close()
    return results


def _offset_progress(progress: Callable[[int], None], offset: int) -> Callable[[int], None]:
    def cb(n: int) -> None:
        progress(offset + n)

    return cb
