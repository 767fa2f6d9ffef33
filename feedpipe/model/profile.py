"""A reader's profile and the fold that applies their events to it (pure; no I/O).

The stages fetch profiles from Redis, admit events (:mod:`feedpipe.model.admission`), call
:func:`apply_events`, and write the results.

Time decay
    Affinities use *forward decay* (Cormode, Shkapenyuk, Srivastava, Xu: "Forward Decay: A
    Practical Time Decay Model for Streaming Systems", ICDE 2009) with an exponential function:
    a click at time t adds ``w * 2 ** ((t - L) / H)`` to the stored value, L being the profile's
    landmark and H the half-life. The decayed value at time T is ``stored * 2 ** (-(T - L) / H)``.
    Because every term is decayed by the same factor, the update is commutative: events applied
    in any order, late or early, give the same profile (this is what makes replays and
    out-of-order delivery safe). H = ``profiles.half_life_hours`` in topology.yaml (7 days; see
    docs/ranking.md for why). A click on an item with a text vector adds it, with the same
    weight, to the profile's text interest vector (:mod:`feedpipe.model.interest`, key
    ``interest``; top 32 terms, so that sum is order-independent only up to the cut).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from feedpipe.model import interest
from feedpipe.model.item import Meta
from feedpipe.model.units import HOUR_MS
from feedpipe.topology import ProfilesSpec

_MAX_EXPONENT = 400.0
"""Rebase the landmark before ``2 ** ((t - L) / H)`` gets near float64's range (2 ** 1023)."""

Profile = dict[str, Any]
"""A profile as stored in Redis (JSON; times in epoch ms). Keys: see :func:`new_profile`, plus
the admission fields of :func:`feedpipe.model.admission.admit_events`."""


class Event(NamedTuple):
    """A reader event reduced to what the profile needs (a named tuple: the click path builds
    one per event, and a tuple is built several times faster than a frozen dataclass).

    Attributes:
        event_id: stable id.
        type: ``impression`` | ``click`` | ``resolve``.
        content_id: the item.
        at: event time, epoch ms UTC.
        origin: ``live`` | ``history``.
        dwell_ms: time on the item in ms, when the front end reports it.
    """

    event_id: str
    type: str
    content_id: str
    at: int
    origin: str = "live"
    dwell_ms: int | None = None


def new_profile(user_id: str, landmark_ms: int, spec: ProfilesSpec) -> Profile:
    """An empty profile whose forward-decay landmark is ``landmark_ms`` (epoch ms).

    Keys: ``user_id``; ``version``; ``landmark_ms`` (ms); ``half_life_s`` (s, from
    ``spec.half_life_hours``); ``category_affinity`` / ``topic_affinity`` (label -> forward-
    decayed sum, see the module docstring); ``recent_reads`` / ``pending`` (lists of
    ``{"content_id", "at" (ms)}``, newest first); ``brands`` (brand -> clicks with known
    metadata); ``impressions``, ``clicks`` (live), ``history_clicks``; ``engagement_rate``
    (clicks / impressions, 0.0 without impressions); ``first_seen`` / ``last_seen`` (ms or
    None).
    """
    return {
        "user_id": user_id,
        "version": 0,
        "landmark_ms": landmark_ms,
        "half_life_s": spec.half_life_hours * 3600.0,
        "category_affinity": {},
        "topic_affinity": {},
        "recent_reads": [],
        "pending": [],
        "brands": {},
        "impressions": 0,
        "clicks": 0,
        "history_clicks": 0,
        "engagement_rate": 0.0,
        "first_seen": None,
        "last_seen": None,
    }


def _rebase(profile: Profile, at_ms: int) -> None:
    """Move the landmark to ``at_ms`` when ``at_ms`` is far past it (keeps floats finite)."""
    h_ms = profile["half_life_s"] * 1000.0
    exponent = (at_ms - profile["landmark_ms"]) / h_ms
    if exponent <= _MAX_EXPONENT:
        return
    factor = 2.0 ** (-exponent)
    for name in ("category_affinity", "topic_affinity"):
        profile[name] = {k: v * factor for k, v in profile[name].items() if v * factor > 0.0}
    interest.rebase(profile, exponent)
    profile["landmark_ms"] = at_ms


def _add_affinity(profile: Profile, meta: Meta, at_ms: int) -> None:
    _rebase(profile, at_ms)
    w = 2.0 ** ((at_ms - profile["landmark_ms"]) / (profile["half_life_s"] * 1000.0))
    cats = profile["category_affinity"]
    for c in meta.categories:
        cats[c] = cats.get(c, 0.0) + w
    tops = profile["topic_affinity"]
    for t in meta.topics:
        tops[t] = tops.get(t, 0.0) + w
    brands = profile["brands"]
    brands[meta.brand] = brands.get(meta.brand, 0) + 1
    if meta.text:
        interest.add_read(profile, meta.text, at_ms)


def apply_events(
    profile: Profile,
    events: Iterable[Event],
    metas: Mapping[str, Meta | None],
    spec: ProfilesSpec,
    dropped: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Apply ``events`` to ``profile`` in place; return content ids of clicks left pending.

    Args:
        profile: a profile from :func:`new_profile` or Redis.
        events: the user's events of one batch, in arrival order.
        metas: ranking features by content id for every clicked or resolved item; None (or
            absent) when the item is not materialised yet.
        spec: topology ``profiles`` section (recent-reads cap, pending cap and TTL).
        dropped: receives the pending clicks removed by the cap or the TTL (below).

    A click on an unknown item counts as a click and a recent read now, and its affinity is
    applied when a ``resolve`` event for that item arrives (the item reached the catalogue).
    After each event (a resolve aside), the pending list drops the clicks more than
    ``spec.pending_ttl_hours`` behind ``last_seen`` (event time, so a replay expires the same
    entries as live traffic did) and keeps the newest ``spec.pending_max``; the removed
    ``{"content_id", "at"}`` entries are appended to ``dropped`` when given (the click path
    sends them to the DLQ, reason ``pending_expired``). Checked event by event, not once per
    batch, so a resolve that arrives after the click expired finds nothing, whether the two
    came in one batch or in two: the profile does not depend on how events fall into batches.
    """
    reads: list[dict[str, Any]] = profile["recent_reads"]
    pending: list[dict[str, Any]] = profile["pending"]
    newly_pending: list[str] = []
    ttl_ms = int(spec.pending_ttl_hours * HOUR_MS)
    gone: list[dict[str, Any]] = [] if dropped is None else dropped
    oldest = min((e["at"] for e in pending), default=None)  # the bound's check stays O(1)
    added = False  # a click added a read (and maybe a pending entry)
    # the counters and times live in locals during the loop and are stored once after it
    last_seen: int | None = profile["last_seen"]
    first_seen: int | None = profile["first_seen"]
    impressions = clicks = history = 0
    for ev in events:
        typ = ev.type
        if typ == "impression":
            impressions += 1
        elif typ == "click":
            if ev.origin == "history":
                history += 1
            else:
                clicks += 1
            reads.append({"content_id": ev.content_id, "at": ev.at})
            added = True
            meta = metas.get(ev.content_id)
            if meta is None:
                pending.append({"content_id": ev.content_id, "at": ev.at})
                oldest = ev.at if oldest is None else min(oldest, ev.at)
                newly_pending.append(ev.content_id)
            else:
                _add_affinity(profile, meta, ev.at)
        elif typ == "resolve":  # pipeline bookkeeping, not reader activity: no last_seen
            meta = metas.get(ev.content_id)
            if meta is None:
                continue
            keep = []
            for p in pending:
                if p["content_id"] == ev.content_id:
                    _add_affinity(profile, meta, p["at"])
                else:
                    keep.append(p)
            pending[:] = keep
            oldest = min((e["at"] for e in pending), default=None)
            continue
        at = ev.at
        if last_seen is None or at > last_seen:
            last_seen = at
        if first_seen is None or at < first_seen:
            first_seen = at
        if oldest is not None and (oldest < last_seen - ttl_ms or len(pending) > spec.pending_max):
            _bound_pending(pending, last_seen - ttl_ms, spec.pending_max, gone)
            oldest = min((e["at"] for e in pending), default=None)
    profile["last_seen"], profile["first_seen"] = last_seen, first_seen
    if impressions:
        profile["impressions"] += impressions
    if clicks:
        profile["clicks"] += clicks
    if history:
        profile["history_clicks"] += history
    # Deterministic caps: newest first, ties by content id. Only clicks add entries, and a
    # stored list already is in this form (it was made here), so without a click it stays.
    if added or len(reads) > spec.recent_reads:
        reads.sort(key=lambda r: (r["at"], r["content_id"]), reverse=True)
        dedup: list[dict[str, Any]] = []
        seen_reads: set[tuple[str, int]] = set()
        for r in reads:
            k = (r["content_id"], r["at"])
            if k not in seen_reads:
                seen_reads.add(k)
                dedup.append(r)
        profile["recent_reads"] = dedup[: spec.recent_reads]
    if added:
        pending.sort(key=lambda r: (r["at"], r["content_id"]), reverse=True)
    imps = profile["impressions"]
    profile["engagement_rate"] = profile["clicks"] / imps if imps else 0.0
    return newly_pending


def normalised(m: Mapping[str, float]) -> dict[str, float]:
    """``m`` scaled to sum 1 (``math.fsum``); empty when the sum is not positive."""
    total = math.fsum(m.values())
    return {k: v / total for k, v in m.items()} if total > 0 else {}


def affinity_at(profile: Mapping[str, Any], at_ms: int) -> dict[str, dict[str, float]]:
    """The profile's decayed affinities at ``at_ms`` (epoch ms), each map normalised to sum 1.

    Returns ``{"category": {label: share}, "topic": {label: share}}`` (shares in (0, 1]; an
    empty map when the profile has no affinity of that kind). Decay multiplies every stored
    value by the same factor ``2 ** (-(at_ms - L) / H)``, which normalising cancels, so the
    result does not depend on ``at_ms``; callers pass the time they present the shares at.
    """
    del at_ms
    return {
        "category": normalised(profile.get("category_affinity", {})),
        "topic": normalised(profile.get("topic_affinity", {})),
    }


def _bound_pending(
    pending: list[dict[str, Any]], floor_ms: int, cap: int, gone: list[dict[str, Any]]
) -> None:
    """Move from ``pending`` to ``gone`` the entries with ``at`` below ``floor_ms`` (ms), then
    the oldest (ties: the smallest content id) beyond ``cap`` entries."""
    gone += [e for e in pending if e["at"] < floor_ms]
    pending[:] = [e for e in pending if e["at"] >= floor_ms]
    if len(pending) > cap:
        pending.sort(key=lambda r: (r["at"], r["content_id"]), reverse=True)
        gone += pending[cap:]
        del pending[cap:]
