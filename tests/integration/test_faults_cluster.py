"""The fault suite's cluster scenarios (:data:`ops.faults.scenarios.CLUSTER_SCENARIOS`):
``feedpipe faults broker-kill`` in a process of its own, on a 3-broker KRaft cluster and a
redis-server the suite starts (ports 29310..29315 and 26579 + FEEDPIPE_TEST_PORT_OFFSET, or
FEEDPIPE_FAULTS_CLUSTER_KAFKA_PORT / FEEDPIPE_FAULTS_CLUSTER_REDIS_PORT), while MIND reader
events flow. Slow (about two minutes); run in CI."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pipeline import PORT_OFFSET, clean_fault_row, run_fault_suite

from ops.faults.scenarios import CLUSTER_SCENARIOS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return run_fault_suite(
        tmp_path_factory.mktemp("faults-cluster") / "faults.json",
        *CLUSTER_SCENARIOS,
        "--brokers",
        "3",
        kafka_port=os.environ.get("FEEDPIPE_FAULTS_CLUSTER_KAFKA_PORT", str(29310 + PORT_OFFSET)),
        redis_port=os.environ.get("FEEDPIPE_FAULTS_CLUSTER_REDIS_PORT", str(26579 + PORT_OFFSET)),
    )


@pytest.mark.parametrize("scenario", CLUSTER_SCENARIOS)
def test_cluster_scenario_loses_and_doubles_nothing(
    outcomes: dict[str, dict[str, Any]], scenario: str
) -> None:
    out = clean_fault_row(outcomes[scenario])
    assert "all replicas in sync" in out.detail, out  # the killed broker came back
    assert out.ok
