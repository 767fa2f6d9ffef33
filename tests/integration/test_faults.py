"""The fault-injection suite (ops/faults/) as tests: ``feedpipe faults`` runs every
scenario in a process of its own (:func:`pipeline.run_fault_suite`), on a Kafka broker and a
redis-server of its own (ports 29192/26479 + FEEDPIPE_TEST_PORT_OFFSET under
.feedpipe-test/faults, or FEEDPIPE_FAULTS_KAFKA_PORT / FEEDPIPE_FAULTS_REDIS_PORT), with real
processes and real faults while MIND reader events flow; each test then checks one scenario's
row of the JSON it wrote. Slow (about a minute per scenario); run in CI.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from pipeline import PORT_OFFSET, clean_fault_row, run_fault_suite

from ops.faults import SCENARIOS, Outcome, compare

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return run_fault_suite(
        tmp_path_factory.mktemp("faults") / "faults.json",
        kafka_port=os.environ.get("FEEDPIPE_FAULTS_KAFKA_PORT", str(29192 + PORT_OFFSET)),
        redis_port=os.environ.get("FEEDPIPE_FAULTS_REDIS_PORT", str(26479 + PORT_OFFSET)),
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_loses_and_doubles_nothing(
    outcomes: dict[str, dict[str, Any]], scenario: str
) -> None:
    out = clean_fault_row(outcomes[scenario])
    if scenario == "poison":
        assert out.poison_sent == 12  # 4 kinds x 3 consumed topics
        assert out.poison_dlq == out.poison_sent, out.dlq_reasons
    if scenario == "connector-kill":
        assert "posts in content.enriched" in out.detail
    assert out.ok


def test_compare_counts_lost_and_doubled() -> None:
    """The comparison itself can fail: a missing event is lost, an extra one doubled, and a
    DLQ'd event with a reason is neither."""
    ref = {"u1": Counter(impressions=3, clicks=1), "u2": Counter(history_clicks=2)}
    assert compare(ref, {"u1": {"impressions": 3, "clicks": 1}, "u2": {"history_clicks": 2}},
                   {}) == (0, 0)
    assert compare(ref, {"u1": {"impressions": 2, "clicks": 1}, "u2": None}, {}) == (3, 0)
    assert compare(ref, {"u1": {"impressions": 4, "clicks": 1}, "u2": {"history_clicks": 2}},
                   {}) == (0, 1)
    assert compare(ref, {"u1": {"impressions": 2, "clicks": 1}, "u2": {"history_clicks": 2}},
                   {"u1": 1}) == (0, 0)
    assert not Outcome("x", lost=1, recover_s=1.0).ok
    assert not Outcome("x", cms_doubled=1, recover_s=1.0).ok
    assert Outcome("x", recover_s=1.0).ok
