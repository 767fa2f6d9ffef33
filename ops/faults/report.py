"""What a fault scenario run is judged on: the reference counts of its input, the comparison
with the profiles in Redis, and the outcome table (see :mod:`ops.faults`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

COUNTERS = ("impressions", "clicks", "history_clicks")


@dataclass
class Outcome:
    """The result of one scenario run (see the module docstring for each field)."""

    scenario: str
    events: int = 0
    users: int = 0
    lost: int = 0
    doubled: int = 0
    topic_mismatches: int = 0
    poison_sent: int = 0
    poison_dlq: int = 0
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    recover_s: float | None = None
    seconds: float = 0.0
    detail: str = ""
    cms_lost: int = 0
    cms_doubled: int = 0

    @property
    def ok(self) -> bool:
        """0 lost, 0 doubled, topics agree with Redis, every poison record in a DLQ, and the
        pipeline recovered."""
        return (
            self.lost == 0
            and self.doubled == 0
            and self.cms_lost == 0
            and self.cms_doubled == 0
            and self.topic_mismatches == 0
            and self.poison_dlq == self.poison_sent
            and self.recover_s is not None
        )


def format_table(outcomes: Sequence[Outcome]) -> str:
    """A plain-text table of ``outcomes``, one row per scenario run (lost and doubled include
    the CMS side of ``connector-kill``), then each run's detail and DLQ reasons."""
    head = (
        f"{'scenario':<16}{'events':>9}{'users':>7}{'lost':>6}{'doubled':>9}{'topics':>8}"
        f"{'poison':>8}{'in DLQ':>8}{'recover s':>11}{'total s':>9}  ok"
    )
    lines = [head, "-" * len(head)]
    for o in outcomes:
        rec = f"{o.recover_s:.1f}" if o.recover_s is not None else "never"
        lines.append(
            f"{o.scenario:<16}{o.events:>9,}{o.users:>7,}{o.lost + o.cms_lost:>6}"
            f"{o.doubled + o.cms_doubled:>9}"
            f"{o.topic_mismatches:>8}{o.poison_sent:>8}{o.poison_dlq:>8}{rec:>11}"
            f"{o.seconds:>9.1f}  {'yes' if o.ok else 'NO'}"
        )
    notes = [f"{o.scenario}: {o.detail}" for o in outcomes if o.detail]
    notes += [
        f"{o.scenario}: DLQ reasons {dict(sorted(o.dlq_reasons.items()))}"
        for o in outcomes if o.dlq_reasons
    ]
    return "\n".join(lines + notes)


def reference_counts(items: Iterator[Any]) -> dict[str, Counter[str]]:
    """Per user, how many *distinct* reader events of each counter the input holds.

    Args:
        items: :meth:`connectors.replay.ReplayConnector.items` of the streamed source
            (``Keyed`` records and ``Malformed`` rows; the latter are skipped).

    Returns:
        user_id -> Counter over :data:`COUNTERS` (``history_clicks`` = clicks of origin history).
    """
    from connectors.records import Keyed

    seen: set[str] = set()
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for item in items:
        if type(item) is not Keyed:
            continue
        rec = item.record
        if rec["event_id"] in seen:
            continue
        seen.add(rec["event_id"])
        if rec["type"] == "impression":
            out[rec["user_id"]]["impressions"] += 1
        elif rec["type"] == "click":
            kind = "history_clicks" if rec.get("origin") == "history" else "clicks"
            out[rec["user_id"]][kind] += 1
    return dict(out)


def compare(
    reference: Mapping[str, Counter[str]],
    profiles: Mapping[str, Mapping[str, Any] | None],
    dlq_per_user: Mapping[str, int],
) -> tuple[int, int]:
    """(lost, doubled) over every user and counter.

    ``lost`` = input events missing from the profile, less the user's events routed to the DLQ
    with a reason (never below 0 per user); ``doubled`` = events counted more than once.
    A missing profile loses all its user's events.
    """
    lost = doubled = 0
    for user, want in reference.items():
        p = profiles.get(user) or {}
        missing = 0
        for c in COUNTERS:
            got = int(p.get(c) or 0)
            if got > want[c]:
                doubled += got - want[c]
            else:
                missing += want[c] - got
        lost += max(0, missing - dlq_per_user.get(user, 0))
    return lost, doubled
