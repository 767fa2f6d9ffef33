"""``feedpipe lag``: consumer lag per group, topic and partition, with a Burrow-style status.

Takes ``window`` samples ``interval`` seconds apart (defaults 5 x 2 s: one call returns after
about 8 s plus the probes), then prints per partition the committed offset, the end offset,
the lag in offsets and in seconds (now - timestamp of the record at the committed offset), the
trend (lag change, messages/s) and the status of :func:`feedpipe.kafka.lag.evaluate`. The exit code
follows the worst status over all groups (:func:`feedpipe.kafka.lag.exit_code`): 0 OK/WARN,
2 STALL/STOP, 3 ERR, so scripts can alert on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from feedpipe.kafka.lag import (
    Evaluation,
    LagProbe,
    PartitionProbe,
    Status,
    Tracker,
    exit_code,
    worst,
)

DEFAULT_WINDOW = 5
DEFAULT_INTERVAL_S = 2.0

GroupReport = dict[str, Any]


def _trend(t: float | None) -> str:
    if t is None:
        return "-"
    if abs(t) < 1e-9:
        return "flat"
    return f"{'+' if t > 0 else ''}{t:,.1f}/s"


def report(
    group: str, rows: Sequence[PartitionProbe], evaluations: Sequence[Evaluation]
) -> GroupReport:
    """JSON-able report of one group: ``{"group", "status", "partitions": [{"topic",
    "partition", "committed", "end", "lag", "lag_s", "trend", "status", "reason"}]}``."""
    parts = [
        {
            "topic": r.topic,
            "partition": r.partition,
            "committed": r.sample.committed,
            "end": r.sample.end,
            "lag": r.lag,
            "lag_s": None if r.lag_s is None else round(r.lag_s, 3),
            "trend": None if ev.trend is None else round(ev.trend, 3),
            "status": str(ev.status),
            "reason": ev.reason,
        }
        for r, ev in zip(rows, evaluations, strict=True)
    ]
    status = worst(ev.status for ev in evaluations) if evaluations else Status.ERR
    return {"group": group, "status": str(status), "partitions": parts}


def table(reports: Sequence[GroupReport]) -> Table:
    """A rich table of the reports (one row per partition)."""
    t = Table(show_lines=False)
    for col in ("group", "topic", "part", "committed", "end", "lag", "lag s", "trend", "status"):
        t.add_column(col, justify="right" if col not in ("group", "topic", "status") else "left")
    colours = {"OK": "green", "WARN": "yellow", "STALL": "red", "STOP": "red", "ERR": "magenta"}
    for rep in reports:
        for p in rep["partitions"]:
            lag_s = "-" if p["lag_s"] is None else f"{p['lag_s']:,.1f}"
            committed = "-" if p["committed"] is None else f"{p['committed']:,}"
            st = p["status"]
            t.add_row(
                rep["group"],
                p["topic"],
                str(p["partition"]),
                committed,
                f"{p['end']:,}",
                f"{p['lag']:,}",
                lag_s,
                _trend(p["trend"]),
                f"[{colours.get(st, 'white')}]{st}[/] {p['reason'] if st != 'OK' else ''}",
            )
    return t


def run(
    bootstrap: str,
    groups: dict[str, list[str] | None],
    window: int = DEFAULT_WINDOW,
    interval_s: float = DEFAULT_INTERVAL_S,
    watch: bool = False,
    emit: Callable[[list[GroupReport]], None] | None = None,
    timeout_s: float = 5.0,
) -> list[GroupReport]:
    """Sample ``groups`` (name -> topics, None = the topics it committed to) ``window`` times,
    ``interval_s`` apart; call ``emit`` with the reports once the window is full (and after
    every further sample with ``watch``, which runs until interrupted). Returns the last reports.

    Raises:
        ValueError: ``window`` < 2 or ``interval_s`` <= 0.
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 samples, got {window}")
    if interval_s <= 0:
        raise ValueError(f"interval must be positive, got {interval_s}")
    probe = LagProbe(bootstrap, timeout_s=timeout_s)
    tracker = Tracker(window)
    reports: list[GroupReport] = []
    try:
        n = 0
        while True:
            t0 = time.monotonic()
            last: dict[str, list[PartitionProbe]] = {}
            for g, topics in groups.items():
                rows = probe.probe(g, topics)
                tracker.add(rows)
                last[g] = rows
            n += 1
            if n >= window:
                reports = [
                    report(g, rows, [tracker.evaluate(g, r.topic, r.partition) for r in rows])
                    for g, rows in last.items()
                ]
                if emit is not None:
                    emit(reports)
                if not watch:
                    return reports
            time.sleep(max(0.0, interval_s - (time.monotonic() - t0)))
    finally:
        probe.close()


def overall_exit_code(reports: Sequence[GroupReport]) -> int:
    """Exit code of the worst group status (0 OK/WARN, 2 STALL/STOP, 3 ERR); STALL/STOP win
    over ERR so an alert on a stuck consumer is never masked by a probe error elsewhere."""
    codes = [exit_code(Status(r["status"])) for r in reports]
    return 2 if 2 in codes else max(codes, default=0)


def printer(console: Console, as_json: bool) -> Callable[[list[GroupReport]], None]:
    """An ``emit`` callback printing a table (with group status lines) or one JSON line."""

    def emit(reports: list[GroupReport]) -> None:
        if as_json:
            doc = {"groups": reports, "exit_code": overall_exit_code(reports)}
            console.print_json(orjson.dumps(doc).decode())
            return
        console.print(table(reports))
        for rep in reports:
            console.print(f"group {rep['group']}: {rep['status']}")

    return emit
