"""feedpipe.monitoring.metrics: quantiles from buckets, observe_* helpers, and the ops snapshot."""

from __future__ import annotations

import math

import pytest

from feedpipe.kafka.lag import Evaluation, PartitionProbe, Sample, Status
from feedpipe.monitoring import metrics
from feedpipe.monitoring.snapshot import SnapshotBuilder, compact


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = [(1.0, 10.0), (2.0, 30.0), (4.0, 40.0), (math.inf, 40.0)]
    # rank 20 of 40 falls in (1, 2]: 1 + (2 - 1) * (20 - 10) / (30 - 10)
    assert metrics.histogram_quantile(0.5, buckets) == pytest.approx(1.5)
    # rank 5 in the first bucket interpolates from 0
    assert metrics.histogram_quantile(0.125, buckets) == pytest.approx(0.5)
    assert metrics.histogram_quantile(1.0, buckets) == pytest.approx(4.0)
    assert metrics.histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert metrics.histogram_quantile(1.5, buckets) is None


def test_rank_in_the_inf_bucket_gives_the_highest_finite_bound() -> None:
    assert metrics.histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0


def test_time_to_feed_beyond_the_live_horizon_counts_as_backfill() -> None:
    before = metrics.counter_values("feedpipe_time_to_feed_backfill").get(("click_to_feed",), 0)
    count = metrics.histogram_buckets("feedpipe_click_to_feed_seconds")[()][-1][1]
    metrics.observe_click_to_feed(3 * 365 * 86400.0)  # a replayed 2019 click
    metrics.observe_click_to_feed(0.8)
    metrics.observe_click_to_feed(float("nan"))  # ignored, never raises
    after = metrics.counter_values("feedpipe_time_to_feed_backfill")[("click_to_feed",)]
    assert after == before + 1
    assert metrics.histogram_buckets("feedpipe_click_to_feed_seconds")[()][-1][1] == count + 1


def test_observe_batch_records_per_event_time() -> None:
    metrics.observe_batch("unit-agent", 4, 0.2)
    metrics.observe_batch("unit-agent", 0, 1.0)  # empty batch: nothing recorded
    ev = metrics.histogram_buckets("feedpipe_event_processing_seconds")[("unit-agent",)]
    batch = metrics.histogram_buckets("feedpipe_batch_processing_seconds")[("unit-agent",)]
    assert ev[-1][1] == 4
    assert batch[-1][1] == 1
    assert metrics.histogram_quantile(0.5, ev) == pytest.approx(0.05, rel=0.5)


def test_snapshot_and_compact_point() -> None:
    metrics.observe_events_in("snap-agent", 10)
    metrics.observe_event_out("snap-agent", "out.topic")
    metrics.observe_dlq("snap-agent", "undecodable")
    metrics.observe_freshness("snap-agent", 0.3)
    builder = SnapshotBuilder("app", window_s=60)
    rows = [
        PartitionProbe("app", "in.topic", 0, Sample(1.0, 10, 4, active=True), 2.5),
        PartitionProbe("app", "in.topic", 1, Sample(1.0, 7, 7, active=True), 0.0),
    ]
    evs = [Evaluation(Status.STALL, "stuck", 6, 0.0), Evaluation(Status.OK, "caught up", 0, 0.0)]
    snap = builder.build(2000.0, "app", rows, evs)
    assert snap["agents"]["snap-agent"]["events_in"] == 10
    assert snap["agents"]["snap-agent"]["events_out"] == 1
    assert {"stage": "snap-agent", "reason": "undecodable", "count": 1} in snap["dlq"]
    assert snap["freshness"]["snap-agent"]["count"] == 1
    assert 0.25 <= snap["freshness"]["snap-agent"]["p50"] <= 0.5
    assert snap["lag"]["status"] == "STALL"
    assert snap["lag"]["total"] == 6
    assert snap["lag"]["max_lag_s"] == 2.5
    point = compact(snap)
    assert point["lag"] == {"in.topic": 6}
    assert point["lag_s"] == {"in.topic": 2.5}
    assert point["in"]["snap-agent"] == 10
    assert point["dlq"]["undecodable"] >= 1
    # a later snapshot's percentiles only cover the window's new observations
    metrics.observe_freshness("snap-agent", 20.0)
    later = builder.build(2070.0, "app", rows, evs)
    assert later["freshness"]["snap-agent"]["count"] == 1
    assert later["freshness"]["snap-agent"]["p50"] >= 10.0
