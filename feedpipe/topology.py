"""topology.yaml loaded into pydantic models (unknown keys refused, errors name the file).

topology.yaml says *what exists* (topics, agents, Redis keys, taxonomies, weights, replay
sources); :mod:`feedpipe.settings` says *where* things run. Nothing else reads the YAML.
"""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feedpipe.errors import ConfigError

TOPOLOGY_PATH = Path(__file__).resolve().parent.parent / "topology.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSpec(_Strict):
    """One Kafka topic. ``retention_ms`` is milliseconds (-1 = forever). ``replication_factor``
    None: the deployment's ``FEEDPIPE_KAFKA_REPLICATION_FACTOR`` (1 on a single broker, 3 on a
    cluster; see :func:`feedpipe.kafka.topics.replicas`)."""

    partitions: int = Field(ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    key: str
    schema_: str = Field(alias="schema")
    cleanup_policy: Literal["delete", "compact", "compact,delete"]
    retention_ms: int
    dlq: str | None = None

    def configs(self) -> dict[str, str]:
        """Topic configs as the broker names them."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


class StageSpec(_Strict):
    """One processing stage of the worker (topology.yaml ``stages``).

    ``kind``: ``agent`` (a Faust agent iterating its input stream) or ``service`` (a Faust
    service running its own batch consumer, the click path). ``outputs`` maps a role (e.g.
    ``content``, ``profiles``) to a declared topic, so code names roles, never topics.
    ``consumer_group`` is a template over the worker's app id (``{app_id}``); ``state`` lists the
    ``redis.keys`` families the stage writes.
    """

    kind: Literal["agent", "service"]
    module: str
    input: str
    outputs: dict[str, str]
    dlq: str | None = None
    consumer_group: str = "{app_id}"
    state: list[str] = Field(default_factory=list)

    def output(self, role: str) -> str:
        """The topic of output ``role``.

        Raises:
            ConfigError: the stage declares no such output.
        """
        try:
            return self.outputs[role]
        except KeyError:
            raise ConfigError(
                f"{TOPOLOGY_PATH.name}: stage {self.module} has no output {role!r} "
                f"(declared: {sorted(self.outputs)})"
            ) from None

    def dead_letters(self) -> str:
        """The stage's DLQ topic.

        Raises:
            ConfigError: the stage declares none.
        """
        if self.dlq is None:
            raise ConfigError(f"{TOPOLOGY_PATH.name}: stage {self.module} declares no dlq")
        return self.dlq

    def group(self, app_id: str) -> str:
        """The stage's consumer group for worker app id ``app_id`` (e.g. ``feedpipe.clickpath``)."""
        return self.consumer_group.format(app_id=app_id)


class IngestSpec(_Strict):
    """Topics written from outside the worker: CMS connectors and the reader-event collector."""

    cms: str
    reader_events: str
    reader_events_dlq: str
    """Where the event collector sends the reader events it refuses (with a reason)."""


class RedisSpec(_Strict):
    """Redis key templates; ``{prefix}`` and named fields are filled by feedpipe.store.keys."""

    prefix: str
    keys: dict[str, str]


class ProfilesSpec(_Strict):
    """Profile stage parameters (hours, counts, seconds, minutes, days).

    ``allowed_lateness_hours``: events older than the user's event-time watermark minus this
    bound go to the DLQ (reason ``late``); ``dedup_max``: event-id fingerprints kept per user;
    ``session_gap_minutes``: inactivity that ends a session; ``bot_clicks_per_minute``: live
    clicks in one event-time minute above which a user is flagged as a bot;
    ``ttl_days``: idle time after which Redis expires a profile and its feed;
    ``pending_ttl_hours``: how long a click waits for its item to reach the catalogue (event
    time in the profile's pending list, wall time as the TTL of the pending sets) before it
    goes to the DLQ (reason ``pending_expired``).
    """

    half_life_hours: float = Field(gt=0)
    recent_reads: int = Field(ge=1)
    pending_max: int = Field(ge=0)
    history_click_spacing_s: int = Field(ge=0)
    allowed_lateness_hours: float = Field(default=168.0, gt=0)
    dedup_max: int = Field(default=4096, ge=1)
    session_gap_minutes: float = Field(default=30.0, gt=0)
    bot_clicks_per_minute: int = Field(default=30, ge=1)
    ttl_days: float = Field(default=30.0, gt=0)
    pending_ttl_hours: float = Field(default=24.0, gt=0)
    profile_format: Literal["json", "compact"] = "compact"
    """How fp:profile:{user} is stored (feedpipe/store/profiles.py): JSON or the compact form."""
    profile_deflate: bool = True
    """The compact form's JSON fields deflated (~320 bytes less per MIND profile, ~20 us more
    CPU per profile write and read; feedpipe/store/profiles.py)."""


class Weights(_Strict):
    """Seed ranking weights: score = a*affinity + b*recency + c*engagement."""

    a: float = Field(ge=0)
    b: float = Field(ge=0)
    c: float = Field(ge=0)

    def as_dict(self) -> dict[str, float]:
        """The weights as a plain mapping {'a': .., 'b': .., 'c': ..}."""
        return {"a": self.a, "b": self.b, "c": self.c}


class CandidatesSpec(_Strict):
    """Candidate generation (feedpipe/rank/candidates.py, docs/ranking.md "Candidate generation").

    ``fresh_hours``: window of the *fresh* source, hours before the user's reference time (last
    event), on the item's publication time, or the time it entered the catalogue when the
    source gives none (:attr:`feedpipe.model.item.CandidateMatrix.fresh_at`). ``trending_k``:
    items taken from the top of each brand's trending list. ``top_affinities``: strongest
    categories and topics (each) of the user whose items are candidates."""

    fresh_hours: float = Field(default=48.0, gt=0)
    trending_k: int = Field(default=50, ge=0)
    top_affinities: int = Field(default=5, ge=0)


class RankingSpec(_Strict):
    """Ranking parameters (hours, counts) and per-brand weights (key 'default' required)."""

    default_brand: str
    feed_size: int = Field(ge=1)
    trending_size: int = Field(ge=1)
    recency_half_life_hours: float = Field(gt=0)
    trending_half_life_hours: float = Field(gt=0)
    trending_epoch_hours: float = Field(gt=0)
    engagement_prior_clicks: float = Field(ge=0)
    engagement_prior_impressions: float = Field(gt=0)
    max_per_category: int = Field(default=0, ge=0)
    """Diversity: at most this many items of one primary category in a feed, 0 = no cap
    (feedpipe/rank/candidates.py ``diversify``; docs/ranking.md)."""
    weights: dict[str, Weights]
    candidates: CandidatesSpec | None = None
    """Candidate generation; None: every catalogue item of the user's brands is scored."""
    feed_format: Literal["json", "compact"] = "compact"
    """How fp:feed:{user} is stored (feedpipe/store/feeds.py): JSON or the compact binary form."""

    @model_validator(mode="after")
    def _has_default(self) -> RankingSpec:
        if "default" not in self.weights:
            raise ValueError("ranking.weights needs a 'default' entry")
        return self

    def weights_for(self, brand: str) -> Weights:
        """Weights of ``brand``, or the default ones."""
        return self.weights.get(brand) or self.weights["default"]


RANKER_COMPONENTS: dict[str, tuple[str, ...]] = {
    "affinity": ("a", "b", "c"),
    "editorial": ("category", "bias", "freshness"),
    "learned": ("affinity", "recency", "ctr", "popularity", "trend_1h", "trend_24h", "ctr_24h",
                "coread", "similarity"),
}
"""Weight keys of each named ranker (formulas in feedpipe/rank/components.py and
feedpipe/rank/learned.py, docs/ranking.md)."""

WEIGHT_SUM_TOLERANCE = 1e-6
"""A weight set's weights must sum to 1 within this tolerance."""


class WeightSet(_Strict):
    """A named, versioned set of weights for one ranker (``rankers.weight_sets``).

    ``weights`` has exactly the ranker's keys (:data:`RANKER_COMPONENTS`), each >= 0, summing
    to 1; a ``learned`` set's weights are logistic-regression coefficients (any finite sign and
    sum, fit by ``feedpipe evaluate --fit``). ``version`` is stamped on every feed item the set
    ranks (``name@vN``).
    """

    ranker: Literal["affinity", "editorial", "learned"]
    version: int = Field(ge=1)
    weights: dict[str, float]
    note: str | None = None

    @model_validator(mode="after")
    def _keys_and_sum(self) -> WeightSet:
        want = set(RANKER_COMPONENTS[self.ranker])
        if set(self.weights) != want:
            raise ValueError(
                f"{self.ranker} weights need exactly the keys {sorted(want)}, "
                f"got {sorted(self.weights)}"
            )
        if self.ranker == "learned":
            if not all(math.isfinite(v) for v in self.weights.values()):
                raise ValueError("learned weights must be finite")
            return self
        if any(v < 0 for v in self.weights.values()):
            raise ValueError("weights must be >= 0")
        total = sum(self.weights.values())
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"weights must sum to 1, got {total:g}")
        return self


class EditorialSpec(_Strict):
    """Inputs of the ``editorial`` ranker other than its weights.

    ``category_weights``: brand -> brand category -> weight in [0, 1] (an item takes the largest
    weight of its categories, ``default_category_weight`` when none is listed);
    ``source_bias``: content source -> bias in [0, 1] for items whose CMS gives none;
    ``default_bias``: bias when neither is known (default 0.5: neutral);
    ``freshness_per_hour``: k in 1 / (1 + k * hours old) (default 0.1: half the score after
    10 hours).
    """

    freshness_per_hour: float = Field(default=0.1, ge=0)
    default_category_weight: float = Field(default=0.5, ge=0, le=1)
    default_bias: float = Field(default=0.5, ge=0, le=1)
    source_bias: dict[str, float] = Field(default_factory=dict)
    category_weights: dict[str, dict[str, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unit_interval(self) -> EditorialSpec:
        for src, b in self.source_bias.items():
            if not 0.0 <= b <= 1.0:
                raise ValueError(f"editorial.source_bias.{src} must be in [0, 1], got {b}")
        for brand, cats in self.category_weights.items():
            for cat, w in cats.items():
                if not 0.0 <= w <= 1.0:
                    raise ValueError(
                        f"editorial.category_weights.{brand}.{cat} must be in [0, 1], got {w}"
                    )
        return self


class RankersSpec(_Strict):
    """The ``rankers`` section: named weight sets, the set serving each brand, editorial inputs.

    ``brands`` maps a brand (key ``default`` required) to a weight set name; the set names
    its ranker.
    """

    weight_sets: dict[str, WeightSet]
    brands: dict[str, str]
    editorial: EditorialSpec = Field(default_factory=EditorialSpec)

    @model_validator(mode="after")
    def _references(self) -> RankersSpec:
        if "default" not in self.brands:
            raise ValueError("rankers.brands needs a 'default' entry")
        for brand, name in self.brands.items():
            if name not in self.weight_sets:
                raise ValueError(f"rankers.brands.{brand}: unknown weight set {name!r}")
        return self

    def for_brand(self, brand: str) -> tuple[str, WeightSet]:
        """``(weight set name, weight set)`` serving ``brand`` (the default one if unlisted)."""
        name = self.brands.get(brand) or self.brands["default"]
        return name, self.weight_sets[name]


class ArmSpec(_Strict):
    """One experiment arm: a weight set (hence a ranker) and its share of users in [0, 1]."""

    weights: str
    split: float = Field(ge=0, le=1)


class ExperimentSpec(_Strict):
    """An A/B experiment on one brand's feeds; arms in declaration order, splits summing to 1."""

    brand: str
    enabled: bool = True
    arms: dict[str, ArmSpec]

    @model_validator(mode="after")
    def _splits(self) -> ExperimentSpec:
        if not self.arms:
            raise ValueError("an experiment needs at least one arm")
        total = sum(a.split for a in self.arms.values())
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"arm splits must sum to 1, got {total:g}")
        return self


class FanoutSpec(_Strict):
    """Fan-out on write and the celebrity switch (docs/ranking.md, feedpipe/rank/fanout.py).

    ``celebrity_audience``: an item whose audience (users, the union of its brand's interest
    sets for its categories and topics) is larger than this is a *celebrity*: it is not copied
    into feeds (no fan-out records) but kept in ``fp:celebrity:{brand}`` and merged at read
    time. ``interest_categories`` / ``interest_topics``: how many of a user's top decayed
    categories / topics are their interests (audience membership and the feed's digest).
    ``audience_refresh_hours``: an unchanged registration is re-stamped (its score, wall-clock
    ms) at most this often, so idle members can be trimmed after ``profiles.ttl_days``.
    ``max_age_hours``: only items published at most this many hours before their
    materialisation are fanned out (a backfill or re-publish of old articles is not pushed
    into feeds; those items reach feeds at the users' next re-rank). Items without a
    publication time count as new.
    """

    celebrity_audience: int = Field(default=10_000, ge=0)
    max_age_hours: float = Field(default=48.0, gt=0)
    interest_categories: int = Field(default=3, ge=0, le=16)
    interest_topics: int = Field(default=3, ge=0, le=16)
    audience_refresh_hours: float = Field(default=24.0, gt=0)


class BrandSpec(_Strict):
    """A brand's taxonomy: CMS category (lower-case) -> brand category."""

    unmapped: Literal["keep", "drop"] = "keep"
    taxonomy: dict[str, str] = Field(default_factory=dict)


class SourceSpec(_Strict):
    """A replay source: files under the data directory published as raw events."""

    name: str
    kind: Literal[
        "mind.news", "mind.behaviors", "wordpress.posts", "drupal.jsonapi", "feed.document"
    ]
    brand: str
    path: str
    glob: str | None = None
    files: list[str] | None = None
    content_source: str | None = Field(
        default=None,
        description="reader-event sources: the CMS source whose items the events refer to "
        "(their content_id is content_id(content_source, item id))",
    )

    @model_validator(mode="after")
    def _reader_sources_name_content(self) -> SourceSpec:
        if self.kind == "mind.behaviors" and not self.content_source:
            raise ValueError(f"source {self.name}: mind.behaviors needs content_source")
        return self


class Topology(_Strict):
    """The whole topology.yaml."""

    version: int
    topics: dict[str, TopicSpec]
    ingest: IngestSpec
    stages: dict[str, StageSpec]
    redis: RedisSpec
    profiles: ProfilesSpec
    ranking: RankingSpec
    brands: dict[str, BrandSpec]
    sources: list[SourceSpec]
    rankers: RankersSpec | None = None
    experiments: dict[str, ExperimentSpec] = Field(default_factory=dict)
    fanout: FanoutSpec = Field(default_factory=FanoutSpec)

    @model_validator(mode="after")
    def _references(self) -> Topology:
        for name, t in self.topics.items():
            if t.dlq is not None and t.dlq not in self.topics:
                raise ValueError(f"topic {name}: dlq {t.dlq} is not a declared topic")
        for role, ref in self.ingest.model_dump().items():
            if ref not in self.topics:
                raise ValueError(f"ingest {role}: topic {ref} is not declared")
        for name, a in self.stages.items():
            for ref in [a.input, *a.outputs.values(), *([a.dlq] if a.dlq else [])]:
                if ref not in self.topics:
                    raise ValueError(f"stage {name}: topic {ref} is not declared")
            for family in a.state:
                if family not in self.redis.keys:
                    raise ValueError(f"stage {name}: state {family!r} is not a redis.keys family")
        sets = self.ranker_config().weight_sets if self.experiments else {}
        for name, exp in self.experiments.items():
            for arm, spec in exp.arms.items():
                if spec.weights not in sets:
                    raise ValueError(
                        f"experiment {name}, arm {arm}: unknown weight set {spec.weights!r}"
                    )
        return self

    def ranker_config(self) -> RankersSpec:
        """The ``rankers`` section, or (compat path) one built from ``ranking.weights``.

        Without a ``rankers`` section every ``ranking.weights`` entry becomes an ``affinity``
        weight set named ``ranking.weights.<brand>`` (version 1) serving that brand.

        Raises:
            pydantic.ValidationError: ``ranking.weights`` entries that do not sum to 1.
        """
        if self.rankers is not None:
            return self.rankers
        sets = {
            f"ranking.weights.{b}": WeightSet(ranker="affinity", version=1, weights=w.as_dict())
            for b, w in self.ranking.weights.items()
        }
        return RankersSpec(
            weight_sets=sets, brands={b: f"ranking.weights.{b}" for b in self.ranking.weights}
        )

    def brand(self, brand: str) -> BrandSpec:
        """The brand's spec, or an empty keep-all taxonomy for unknown brands."""
        return self.brands.get(brand) or BrandSpec()

    def map_categories(self, brand: str, categories: list[str]) -> list[str]:
        """Map CMS categories through the brand's taxonomy; order kept, duplicates removed."""
        spec = self.brand(brand)
        out: list[str] = []
        for raw in categories:
            key = raw.strip().lower()
            if not key:
                continue
            mapped = spec.taxonomy.get(key)
            if mapped is None:
                if spec.unmapped == "drop":
                    continue
                mapped = slug(key)
            if mapped and mapped not in out:
                out.append(mapped)
        return out


_SLUG = re.compile(r"[^\w]+", re.UNICODE)


def slug(text: str) -> str:
    """Lower-case slug: non-word runs become '-', e.g. 'Food & Drink' -> 'food-drink'."""
    return _SLUG.sub("-", text.strip().lower()).strip("-")


def load_topology(path: Path = TOPOLOGY_PATH) -> Topology:
    """Load and validate ``path``.

    Raises:
        ConfigError: unreadable YAML or a validation error; the message names the file.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Topology.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


@cache
def topology() -> Topology:
    """The repository's topology.yaml, loaded once per process."""
    return load_topology()
