"""Burrow-style lag evaluation (feedpipe.kafka.lag.evaluate) over hand-made sample windows."""

from __future__ import annotations

import pytest

from feedpipe.kafka.lag import PartitionProbe, Sample, Status, Tracker, evaluate, exit_code, worst
from ops.lag import overall_exit_code, report


def window(
    committed: list[int | None], end: list[int], active: bool | None = True, dt: float = 2.0
) -> list[Sample]:
    return [
        Sample(at_s=1000.0 + i * dt, end=e, committed=c, low=0, active=active)
        for i, (c, e) in enumerate(zip(committed, end, strict=True))
    ]


def test_any_zero_lag_in_the_window_is_ok() -> None:
    ev = evaluate(window([10, 10, 12, 20], [10, 15, 20, 25]))
    assert ev.status is Status.OK
    assert ev.lag == 5


def test_committed_offset_stuck_with_lag_and_members_is_stall() -> None:
    ev = evaluate(window([5, 5, 5, 5], [10, 12, 15, 15]))
    assert ev.status is Status.STALL
    assert "stuck at 5" in ev.reason
    assert ev.trend == pytest.approx((10 - 5) / 6.0)


def test_committed_offset_stuck_without_members_is_stop() -> None:
    ev = evaluate(window([5, 5, 5], [10, 10, 10], active=False))
    assert ev.status is Status.STOP


def test_never_committed_with_lag_counts_from_log_start() -> None:
    ev = evaluate(window([None, None, None], [3, 3, 3], active=False))
    assert ev.status is Status.STOP
    assert ev.lag == 3


def test_moving_but_falling_behind_every_interval_is_warn() -> None:
    ev = evaluate(window([1, 2, 3, 4], [10, 12, 14, 16]))
    assert ev.status is Status.WARN
    assert ev.trend is not None and ev.trend > 0


def test_moving_with_lag_not_always_growing_is_ok() -> None:
    ev = evaluate(window([1, 5, 6, 12], [10, 12, 14, 16]))
    assert ev.status is Status.OK
    assert ev.reason == "consuming"


def test_offsets_going_backwards_is_err() -> None:
    assert evaluate(window([9, 4, 5], [10, 10, 10])).status is Status.ERR
    assert evaluate(window([1, 1, 1], [10, 3, 3])).status is Status.ERR


def test_probe_error_and_empty_window_are_err() -> None:
    bad = [*window([1, 2], [5, 6]), Sample(1010.0, -1, None, error="timed out")]
    ev = evaluate(bad)
    assert ev.status is Status.ERR
    assert "timed out" in ev.reason
    assert evaluate([]).status is Status.ERR


def test_no_end_offset_yet_is_ok() -> None:
    assert evaluate(window([None, None], [-1, -1])).status is Status.OK


def test_single_sample_with_lag_is_not_judged_stalled() -> None:
    ev = evaluate(window([1], [5]))
    assert ev.status is Status.OK
    assert ev.trend is None


def test_group_status_and_exit_codes() -> None:
    assert worst([Status.OK, Status.WARN, Status.STALL]) is Status.STALL
    assert worst([]) is Status.OK
    assert [exit_code(s) for s in Status] == [0, 0, 2, 2, 3]


def test_tracker_slides_and_report_carries_status() -> None:
    tracker = Tracker(window=3)
    rows: list[PartitionProbe] = []
    for i, (c, e) in enumerate([(0, 0), (1, 5), (1, 6), (1, 7)]):
        rows = [PartitionProbe("g", "t", 0, Sample(float(i), e, c, active=True), 1.5)]
        tracker.add(rows)
    # the window holds the last three samples: committed 1,1,1 with lag 4,5,6 -> STALL
    ev = tracker.evaluate("g", "t", 0)
    assert ev.status is Status.STALL
    rep = report("g", rows, [ev])
    assert rep["status"] == "STALL"
    assert rep["partitions"][0]["lag"] == 6
    assert rep["partitions"][0]["lag_s"] == 1.5
    ok = {"group": "h", "status": "OK", "partitions": []}
    err = {"group": "e", "status": "ERR", "partitions": []}
    assert overall_exit_code([ok, rep]) == 2
    assert overall_exit_code([err, rep]) == 2
    assert overall_exit_code([ok, err]) == 3
    assert overall_exit_code([ok]) == 0
