"""A/B experiments: deterministic assignment of users to arms (pure, no I/O).

An experiment (topology.yaml ``experiments``) runs on one brand's feeds; each arm names a
weight set of ``rankers.weight_sets`` (which names its ranker) and a share of users. A user's
arm is a pure function of (experiment name, user id):

    u = first 8 bytes of sha256(experiment + "\\x1f" + user_id), big-endian, / 2**64  in [0, 1)

and the arm is the first, in declaration order, whose cumulative split exceeds ``u``. SHA-256
makes ``u`` uniform and independent across experiments (a user's arm in one experiment says
nothing about another), stable across processes, hosts and restarts (unlike Python's salted
``hash``), and needs no stored assignment table. Changing the splits moves only the users whose
``u`` falls between the old and new boundaries.

Attribution: the feed item carries the arm (:class:`Assignment` -> ``Ranked.breakdown(arm=)``);
impressions and clicks on it count for that arm, and CTR per arm is ``clicks / impressions``
(:func:`arm_ctr`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from feedpipe.topology import ExperimentSpec, RankersSpec, WeightSet

_SCALE = float(2**64)


def bucket(experiment: str, user_id: str) -> float:
    """The user's position in [0, 1) for ``experiment`` (see the module docstring)."""
    digest = hashlib.sha256(f"{experiment}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign_arm(experiment: str, spec: ExperimentSpec, user_id: str) -> str:
    """The arm of ``user_id`` in ``experiment``: first arm whose cumulative split exceeds
    :func:`bucket` (the last arm with a positive split absorbs float rounding)."""
    u = bucket(experiment, user_id)
    cum = 0.0
    last = None
    for name, arm in spec.arms.items():
        if arm.split <= 0:
            continue
        last = name
        cum += arm.split
        if u < cum:
            return name
    assert last is not None  # splits sum to 1 (validated), so some arm has a positive split
    return last


def experiment_for(
    experiments: Mapping[str, ExperimentSpec], brand: str
) -> tuple[str, ExperimentSpec] | None:
    """The enabled experiment on ``brand`` (the first by name if several), or None."""
    for name in sorted(experiments):
        spec = experiments[name]
        if spec.enabled and spec.brand == brand:
            return name, spec
    return None


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which ranker and weights serve a user's feed of a brand, and why.

    Attributes:
        experiment: experiment name, None when no experiment runs on the brand.
        arm: arm name, None outside experiments.
        weight_set: weight set name; ``weights`` the set (its ``ranker`` and ``version``).
    """

    experiment: str | None
    arm: str | None
    weight_set: str
    weights: WeightSet


def resolve(
    rankers: RankersSpec,
    experiments: Mapping[str, ExperimentSpec],
    user_id: str,
    brand: str,
) -> Assignment:
    """The weight set for ``user_id``'s feed of ``brand``: the user's arm when an enabled
    experiment runs on the brand, else the brand's weight set (``rankers.brands``).

    Raises:
        KeyError: an arm naming an unknown weight set (prevented by topology validation).
    """
    found = experiment_for(experiments, brand)
    if found is None:
        name, ws = rankers.for_brand(brand)
        return Assignment(None, None, name, ws)
    exp_name, spec = found
    arm = assign_arm(exp_name, spec, user_id)
    ws_name = spec.arms[arm].weights
    return Assignment(exp_name, arm, ws_name, rankers.weight_sets[ws_name])


def arm_ctr(impressions: int, clicks: int) -> float:
    """Click-through rate of an arm, ``clicks / impressions`` (0.0 without impressions).

    Raises:
        ValueError: negative counts.
    """
    if impressions < 0 or clicks < 0:
        raise ValueError(f"counts must be >= 0, got impressions={impressions}, clicks={clicks}")
    return clicks / impressions if impressions else 0.0
