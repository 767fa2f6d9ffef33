"""Ranking weights and experiments from topology.yaml, reloaded while the stages run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from feedpipe.errors import ConfigError
from feedpipe.topology import TOPOLOGY_PATH, ExperimentSpec, RankersSpec, load_topology

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RankingConfig:
    """A loaded ``rankers`` + ``experiments`` configuration.

    Attributes:
        rankers: weight sets, brand -> weight set, editorial inputs.
        experiments: experiment name -> spec.
        mtime_ns: modification time (ns) of the file it was read from.
        generation: 1 for the first load, +1 per successful reload.
    """

    rankers: RankersSpec
    experiments: Mapping[str, ExperimentSpec]
    mtime_ns: int
    generation: int

    def serves(self, ranker: str) -> bool:
        """True when a weight set of ``ranker`` serves a brand (``rankers.brands``) or an arm of
        an enabled experiment."""
        names = set(self.rankers.brands.values()) | {
            arm.weights for e in self.experiments.values() if e.enabled for arm in e.arms.values()
        }
        sets = self.rankers.weight_sets
        return any(n in sets and sets[n].ranker == ranker for n in names)


@dataclass
class WeightsRegistry:
    """Weights and experiments from topology.yaml, re-read when the file changes.

    :meth:`current` stats the file at most once every ``check_every_s`` seconds (monotonic
    clock ``clock``) and reloads it when its mtime or size changed, so an operator edits
    topology.yaml and running stages pick up new weights without a restart. A reload that fails
    validation keeps the previous configuration and sets ``last_error`` (logged), so a typo
    never takes the feeds down.

    Args:
        path: the topology file.
        check_every_s: minimum seconds between two stats of the file.
        clock: monotonic seconds (injectable for tests).

    Raises:
        ConfigError: from the first :meth:`current` when the file cannot be loaded at all.
    """

    path: Path = TOPOLOGY_PATH
    check_every_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    last_error: str | None = None
    _config: RankingConfig | None = field(default=None, repr=False)
    _stamp: tuple[int, int] | None = field(default=None, repr=False)
    _checked_at: float = field(default=float("-inf"), repr=False)

    def current(self) -> RankingConfig:
        """The configuration in force (reloaded first if the file changed and it is time)."""
        now = self.clock()
        if self._config is not None and now - self._checked_at < self.check_every_s:
            return self._config
        self._checked_at = now
        try:
            st = self.path.stat()
        except OSError as exc:
            return self._keep(ConfigError(f"{self.path}: {exc}"))
        stamp = (st.st_mtime_ns, st.st_size)
        if self._config is not None and stamp == self._stamp:
            return self._config
        try:
            topo = load_topology(self.path)
            rankers = topo.ranker_config()
        except ConfigError as exc:
            self._stamp = stamp  # do not re-parse the same broken file every check
            return self._keep(exc)
        except ValidationError as exc:  # weight sets derived from ranking.weights not summing to 1
            self._stamp = stamp
            return self._keep(ConfigError(f"{self.path}: {exc}"))
        gen = 1 if self._config is None else self._config.generation + 1
        self._config = RankingConfig(rankers, dict(topo.experiments), st.st_mtime_ns, gen)
        self._stamp = stamp
        self.last_error = None
        if gen > 1:
            log.info("ranking weights reloaded from %s (generation %d)", self.path, gen)
        return self._config

    def _keep(self, exc: ConfigError) -> RankingConfig:
        if self._config is None:
            raise exc
        self.last_error = str(exc)
        log.error("ranking weights not reloaded, keeping generation %d: %s",
                  self._config.generation, exc)
        return self._config

