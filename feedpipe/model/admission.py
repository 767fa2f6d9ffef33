"""Which of a reader's events the profile fold may apply: deduplication, lateness, sessions and
the bot check (pure; no I/O).

:func:`admit_events` runs before :func:`feedpipe.model.profile.apply_events`, in offset order,
and keeps its state in the profile itself (``seen``, ``event_wm``, session fields, ``rate``,
``bot``), so a redelivered batch is admitted exactly as the first time.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from operator import neg

import numpy as np

from feedpipe.model.profile import Event, Profile
from feedpipe.model.units import HOUR_MS, MINUTE_MS
from feedpipe.topology import ProfilesSpec

_SEEN = struct.Struct("<QI")
"""One remembered event: its id's fingerprint (u64) and its event-time minute since the epoch
(u32), little-endian."""
_FP = struct.Struct("<Q")


def fingerprint(event_id: str) -> int:
    """64-bit fingerprint of an event id, in [0, 2 ** 64).

    The id's first 16 hex digits (feedpipe event ids are sha256 hex, :mod:`feedpipe.ids`), else
    the first 8 bytes of blake2b of the id, big-endian. Collision odds for n ids kept per user:
    about n^2 / 2^65 (birthday bound), ~5e-13 for the 4,096 kept by default.
    """
    head = event_id[:16]
    try:
        if len(head) == 16:
            return int(head, 16)
    except ValueError:
        pass
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


_NUMPY_SEEN = 32
"""Remembered ids above which :func:`_seen_load` unpacks with numpy (struct below it)."""
SEEN_PAIR = np.dtype([("fp", "<u8"), ("m", "<u4")])
"""One remembered event id as stored in a profile's ``seen`` bytes: its 64-bit fingerprint
(:func:`fingerprint`) and its event time in minutes, little-endian, 12 bytes, no padding."""


@dataclass(slots=True)
class _Seen:
    """The remembered ids of a profile: ``raw`` the stored pairs (sorted by minute then
    fingerprint, newest first, as :func:`_seen_store` writes them), ``minutes`` their minutes
    in that order, ``by_fp`` fingerprint -> minute (with the ids admitted since the load),
    ``new`` the (minute, fingerprint) pairs admitted since the load."""

    raw: bytes
    minutes: list[int]
    by_fp: dict[int, int]
    new: list[tuple[int, int]]


def _seen_load(profile: Profile) -> _Seen:
    raw = profile.get("seen")
    if not raw:
        return _Seen(b"", [], {}, [])
    data = base64.b64decode(raw)
    n, odd = divmod(len(data), _SEEN.size)
    if odd:
        raise struct.error(f"seen: {len(data)} bytes is not a whole number of pairs")
    if n > _NUMPY_SEEN:
        rec = np.frombuffer(data, dtype=SEEN_PAIR)
        fps, minutes = rec["fp"].tolist(), rec["m"].tolist()
    else:
        flat = struct.unpack(f"<{'QI' * n}", data)
        fps, minutes = list(flat[0::2]), list(flat[1::2])
    return _Seen(data, minutes, dict(zip(fps, minutes, strict=True)), [])


def _seen_store(profile: Profile, seen: _Seen, floor_minute: int, cap: int) -> None:
    """Store the ids of minute ``floor_minute`` or later, the ``cap`` newest (by minute, then
    fingerprint). When every id admitted since the load is newer than the stored ones (live
    traffic), the stored pairs are kept as bytes behind the new ones and cut at the floor and
    the cap, without unpacking and sorting them all again; the result is the same bytes."""
    new = sorted(seen.new, reverse=True)
    old = seen.raw
    if not old or not new or new[-1] > (seen.minutes[0], _FP.unpack_from(old, 0)[0]):
        head = b"".join(_SEEN.pack(fp, m) for m, fp in new)
        minutes = [m for m, _ in new] + seen.minutes  # newest first
        keep = bisect_right(minutes, -floor_minute, key=neg)  # the entries with m >= floor
        data = (head + old)[: _SEEN.size * min(keep, cap)]
    else:
        kept = sorted(
            ((m, fp) for fp, m in seen.by_fp.items() if m >= floor_minute), reverse=True
        )[:cap]
        data = b"".join(_SEEN.pack(fp, m) for m, fp in kept)
    if data != old or not profile.get("seen"):
        profile["seen"] = base64.b64encode(data).decode()


@dataclass(slots=True)
class Admitted:
    """What :func:`admit_events` let through and what it held back.

    Attributes:
        accepted: events to apply, in the order given.
        duplicates: events whose id was already applied (skipped: exactly-once effect).
        late: events older than the user's event-time watermark minus the lateness bound, or
            older than every remembered id when the dedup memory is full (DLQ reason ``late``).
        bot_flagged: True when this call flagged the user as a bot.
        flagged_by: the accepted click that flagged the user (None when not flagged by this
            call): what came before it in ``accepted`` was admitted from a non-bot.
    """

    accepted: list[Event]
    duplicates: list[Event]
    late: list[Event]
    bot_flagged: bool = False
    flagged_by: Event | None = None


def admit_events(profile: Profile, events: Sequence[Event], spec: ProfilesSpec) -> Admitted:
    """Deduplicate, bound lateness, sessionise and rate-check a user's events, in offset order.

    Mutates ``profile``: ``seen`` (base64 of packed (fingerprint u64, minute u32) pairs, the
    ids of events within ``allowed_lateness_hours`` of the user's watermark, at most
    ``dedup_max``), ``event_wm`` (max event time seen, ms), the session fields and ``bot``.

    * lateness: an event with ``at < event_wm - allowed_lateness`` is *late* (the watermark
      moves as events are admitted, in offset order, so the outcome does not depend on batch
      boundaries). Forward decay makes the profile maths order-independent, so anything inside
      the bound is applied exactly; the bound only limits how long ids must be remembered.
    * dedup: an event whose fingerprint is remembered is a duplicate (redelivery at a new
      offset, a source replayed twice). When ``dedup_max`` ids are kept and an event is older
      than all of them, it cannot be checked and is *late* too.
    * sessions (``session_gap_minutes`` of inactivity ends one; live impressions and clicks):
      ``sessions``, ``session_start``/``session_last`` (ms), ``session_clicks`` (depth of the
      current session), ``session_clicks_total`` (clicks in all sessions; mean depth =
      total / sessions), ``dwell_ms_total`` (sum of reported dwell). An event before the current
      session's start minus the gap belongs to an earlier session: counted in the totals, no
      new session (an approximation, stated in docs/ranking.md).
    * bots: more than ``bot_clicks_per_minute`` live clicks in one event-time minute flags the
      user (``bot: true``, sticky); the stage then leaves their events out of item stats and
      trending. Resolve events bypass all of this (pipeline bookkeeping, not reader activity).
    """
    lateness_ms = int(spec.allowed_lateness_hours * HOUR_MS)
    gap_ms = int(spec.session_gap_minutes * MINUTE_MS)
    memory = _seen_load(profile)
    seen = memory.by_fp
    wm: int | None = profile.get("event_wm")
    full = len(seen) >= spec.dedup_max
    oldest = min(seen.values()) if full and seen else None
    out = Admitted([], [], [])
    rate = profile.get("rate") or [0, 0]  # [minute, live clicks in it]
    for ev in events:
        if ev.type == "resolve":
            out.accepted.append(ev)
            continue
        if wm is not None and ev.at < wm - lateness_ms:
            out.late.append(ev)
            continue
        fp = fingerprint(ev.event_id)
        minute = ev.at // MINUTE_MS
        if fp in seen:
            out.duplicates.append(ev)
            continue
        if oldest is not None and minute < oldest:
            out.late.append(ev)
            continue
        seen[fp] = minute
        memory.new.append((minute, fp))
        wm = ev.at if wm is None else max(wm, ev.at)
        out.accepted.append(ev)
        if ev.origin != "live":
            continue
        # sessions
        start, last = profile.get("session_start"), profile.get("session_last")
        if start is None or last is None or ev.at > last + gap_ms:
            profile["sessions"] = profile.get("sessions", 0) + 1
            profile["session_start"], profile["session_last"] = ev.at, ev.at
            profile["session_clicks"] = 0
        elif ev.at >= start - gap_ms:
            profile["session_start"] = min(start, ev.at)
            profile["session_last"] = max(last, ev.at)
        if ev.type in ("click", "dwell") and ev.dwell_ms:  # a dwell event reports it later
            profile["dwell_ms_total"] = profile.get("dwell_ms_total", 0) + int(ev.dwell_ms)
        if ev.type == "click":
            if ev.at >= profile["session_start"] - gap_ms:
                profile["session_clicks"] = profile.get("session_clicks", 0) + 1
            profile["session_clicks_total"] = profile.get("session_clicks_total", 0) + 1
            if rate[0] == minute:
                rate[1] += 1
            elif minute > rate[0]:
                rate = [minute, 1]
            if rate[1] > spec.bot_clicks_per_minute and not profile.get("bot"):
                profile["bot"] = True
                out.bot_flagged = True
                out.flagged_by = ev
    profile["rate"] = rate
    profile["event_wm"] = wm
    floor = (wm - lateness_ms) // MINUTE_MS if wm is not None else 0
    _seen_store(profile, memory, floor, spec.dedup_max)
    return out
