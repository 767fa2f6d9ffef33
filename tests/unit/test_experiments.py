"""feedpipe.rank.experiments: deterministic arm assignment, splits, resolution, validation."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from feedpipe.rank.experiments import arm_ctr, assign_arm, bucket, experiment_for, resolve
from feedpipe.topology import ArmSpec, ExperimentSpec, topology

USERS = [f"U{i}" for i in range(20_000)]


def _exp(**splits: float) -> ExperimentSpec:
    return ExperimentSpec(
        brand="mind", arms={k: ArmSpec(weights="affinity-mind", split=v) for k, v in splits.items()}
    )


def test_bucket_is_sha256_of_experiment_and_user() -> None:
    d = hashlib.sha256(b"exp\x1fU1").digest()
    assert bucket("exp", "U1") == int.from_bytes(d[:8], "big") / 2**64
    assert 0.0 <= bucket("exp", "U1") < 1.0
    assert bucket("exp", "U1") != bucket("exp2", "U1")


def test_assignment_is_deterministic_and_follows_splits() -> None:
    spec = _exp(control=0.5, treatment=0.3, other=0.2)
    arms = [assign_arm("e", spec, u) for u in USERS]
    assert arms == [assign_arm("e", spec, u) for u in USERS]
    share = {a: arms.count(a) / len(USERS) for a in spec.arms}
    # 20,000 users: binomial standard error <= 0.0036, so 0.015 is > 4 sigma.
    assert share["control"] == pytest.approx(0.5, abs=0.015)
    assert share["treatment"] == pytest.approx(0.3, abs=0.015)
    assert share["other"] == pytest.approx(0.2, abs=0.015)


def test_zero_split_arm_gets_nobody_and_resplit_moves_only_boundary_users() -> None:
    a = _exp(control=1.0, off=0.0)
    assert {assign_arm("e", a, u) for u in USERS} == {"control"}
    before = _exp(control=0.5, treatment=0.5)
    after = _exp(control=0.4, treatment=0.6)
    moved = [u for u in USERS if assign_arm("e", before, u) != assign_arm("e", after, u)]
    assert all(0.4 <= bucket("e", u) < 0.5 for u in moved)
    assert all(assign_arm("e", after, u) == "treatment" for u in moved)
    assert len(moved) == pytest.approx(0.1 * len(USERS), abs=0.015 * len(USERS))


def test_experiment_arms_independent_across_experiments() -> None:
    spec = _exp(x=0.5, y=0.5)
    same = sum(assign_arm("e1", spec, u) == assign_arm("e2", spec, u) for u in USERS)
    assert same / len(USERS) == pytest.approx(0.5, abs=0.015)


def test_resolve_uses_brand_weights_without_enabled_experiment() -> None:
    topo = topology()
    cfg = topo.ranker_config()
    disabled = {"x": topo.experiments["mind-rankers"].model_copy(update={"enabled": False})}
    got = resolve(cfg, disabled, "U1", "mind")
    assert (got.experiment, got.arm) == (None, None)
    assert got.weight_set == cfg.brands["mind"]
    enabled = {"x": topo.experiments["mind-rankers"].model_copy(update={"enabled": True})}
    assert experiment_for(enabled, "other-brand") is None
    seen = {resolve(cfg, enabled, u, "mind").arm for u in USERS[:200]}
    assert seen == {"affinity", "editorial"}
    r = resolve(cfg, enabled, "U7", "mind")
    assert r.weights == cfg.weight_sets[r.weight_set]
    assert r.weights.ranker == r.arm  # the repository's arms are named after their rankers


def test_experiments_validated() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        _exp(a=0.5, b=0.6)
    with pytest.raises(ValidationError, match="at least one arm"):
        ExperimentSpec(brand="mind", arms={})
    data = topology().model_dump(by_alias=True)
    data["experiments"]["bad"] = {
        "brand": "mind", "arms": {"a": {"weights": "no-such-set", "split": 1.0}}
    }
    with pytest.raises(ValidationError, match="unknown weight set"):
        type(topology()).model_validate(data)
    data = topology().model_dump(by_alias=True)
    data["rankers"]["brands"]["mind"] = "no-such-set"
    with pytest.raises(ValidationError, match="unknown weight set"):
        type(topology()).model_validate(data)


def test_arm_ctr() -> None:
    assert arm_ctr(0, 0) == 0.0
    assert arm_ctr(200, 9) == pytest.approx(0.045)
    with pytest.raises(ValueError):
        arm_ctr(-1, 0)
