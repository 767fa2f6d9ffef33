"""The fault suite's cluster scenarios (:data:`ops.faults.scenarios.CLUSTER_SCENARIOS`):
``feedpipe faults broker-kill`` in a process of its own, on a 3-broker KRaft cluster and a
redis-server the suite starts (ports 29310..29315 and 26579 + FEEDPIPE_TEST_PORT_OFFSET, or
FEEDPIPE_FAULTS_CLUSTER_KAFKA_PORT / FEEDPIPE_FAULTS_CLUSTER_REDIS_PORT), while MIND reader
events flow. Slow (about two minutes); run in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from ops.faults import Outcome
from ops.faults.scenarios import CLUSTER_SCENARIOS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
_OFFSET = int(os.environ.get("FEEDPIPE_TEST_PORT_OFFSET", "0"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("faults-cluster") / "faults.json"
    env = {**os.environ, "FEEDPIPE_STATE_DIR": str(ROOT / ".feedpipe-test"), "COLUMNS": "120"}
    kafka = os.environ.get("FEEDPIPE_FAULTS_CLUSTER_KAFKA_PORT", str(29310 + _OFFSET))
    redis = os.environ.get("FEEDPIPE_FAULTS_CLUSTER_REDIS_PORT", str(26579 + _OFFSET))
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "faults", *CLUSTER_SCENARIOS, "--brokers", "3",
         "--kafka-port", kafka, "--redis-port", redis,
         "--rows", os.environ.get("FEEDPIPE_FAULTS_ROWS", "600"), "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
    )
    print(proc.stdout[-6000:])
    assert out.exists(), f"feedpipe faults wrote no results (exit {proc.returncode}):\n" + (
        proc.stdout[-3000:] + proc.stderr[-6000:]
    )
    return {row["scenario"]: row for row in orjson.loads(out.read_bytes())}


@pytest.mark.parametrize("scenario", CLUSTER_SCENARIOS)
def test_cluster_scenario_loses_and_doubles_nothing(
    outcomes: dict[str, dict[str, Any]], scenario: str
) -> None:
    row = outcomes[scenario]
    out = Outcome(**row)
    assert out.events > 10_000 and out.users > 100  # the stream really flowed
    assert out.lost == 0 and out.doubled == 0, row
    assert out.topic_mismatches == 0, row
    assert out.recover_s is not None, row
    assert "all replicas in sync" in out.detail, row  # the killed broker came back
    assert out.ok
