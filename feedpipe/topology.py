"""topology.yaml loaded into pydantic models (unknown keys refused, errors name the file).

topology.yaml says *what exists* (topics, agents, Redis keys, taxonomies, weights, replay
sources); :mod:`feedpipe.settings` says *where* things run. Nothing else reads the YAML.
"""

from __future__ import annotations

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
    """One Kafka topic. ``retention_ms`` is milliseconds (-1 = forever)."""

    partitions: int = Field(ge=1)
    replication_factor: int = 1
    key: str
    schema_: str = Field(alias="schema")
    cleanup_policy: Literal["delete", "compact", "compact,delete"]
    retention_ms: int
    dlq: str | None = None

    def configs(self) -> dict[str, str]:
        """Topic configs as the broker names them."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


class AgentSpec(_Strict):
    """One Faust agent: the module defining it, its input, outputs and DLQ topic."""

    module: str
    input: str
    outputs: list[str]
    dlq: str | None = None


class RedisSpec(_Strict):
    """Redis key templates; ``{prefix}`` and named fields are filled by feedpipe.redis_keys."""

    prefix: str
    keys: dict[str, str]


class ProfilesSpec(_Strict):
    """Profile stage parameters (hours, counts, seconds)."""

    half_life_hours: float = Field(gt=0)
    recent_reads: int = Field(ge=1)
    pending_max: int = Field(ge=0)
    history_click_spacing_s: int = Field(ge=0)


class Weights(_Strict):
    """Seed ranking weights: score = a*affinity + b*recency + c*engagement."""

    a: float = Field(ge=0)
    b: float = Field(ge=0)
    c: float = Field(ge=0)

    def as_dict(self) -> dict[str, float]:
        """The weights as a plain mapping {'a': .., 'b': .., 'c': ..}."""
        return {"a": self.a, "b": self.b, "c": self.c}


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
    candidate_window_hours: float = Field(gt=0)
    weights: dict[str, Weights]

    @model_validator(mode="after")
    def _has_default(self) -> RankingSpec:
        if "default" not in self.weights:
            raise ValueError("ranking.weights needs a 'default' entry")
        return self

    def weights_for(self, brand: str) -> Weights:
        """Weights of ``brand``, or the default ones."""
        return self.weights.get(brand) or self.weights["default"]


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
    agents: dict[str, AgentSpec]
    redis: RedisSpec
    profiles: ProfilesSpec
    ranking: RankingSpec
    brands: dict[str, BrandSpec]
    sources: list[SourceSpec]

    @model_validator(mode="after")
    def _references(self) -> Topology:
        for name, t in self.topics.items():
            if t.dlq is not None and t.dlq not in self.topics:
                raise ValueError(f"topic {name}: dlq {t.dlq} is not a declared topic")
        for name, a in self.agents.items():
            for ref in [a.input, *a.outputs, *([a.dlq] if a.dlq else [])]:
                if ref not in self.topics:
                    raise ValueError(f"agent {name}: topic {ref} is not declared")
        return self

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
