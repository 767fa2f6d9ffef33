"""The profile fold (feedpipe.model.profile): forward decay, order independence, pending clicks."""

from __future__ import annotations

import base64
import copy
import hashlib
import random
import struct

import pytest

from feedpipe.model.admission import admit_events, fingerprint
from feedpipe.model.item import Meta
from feedpipe.model.profile import Event, apply_events, new_profile
from feedpipe.model.units import HOUR_MS as HOUR
from feedpipe.topology import topology

T0 = 1_573_300_000_000  # 2019-11-09, ms


def _catalogue(n: int, seed: int = 7) -> list[Meta]:
    rng = random.Random(seed)
    cats = ["news", "sports", "finance", "travel", "health"]
    return [
        Meta(
            f"{i:064x}",
            rng.choice(["mind", "frontity"]),
            (rng.choice(cats),),
            (rng.choice(cats), f"sub-{rng.randint(0, 30)}"),
            None if i % 4 == 0 else T0 - rng.randint(0, 72) * HOUR,
        )
        for i in range(n)
    ]


def test_profile_is_independent_of_event_order() -> None:
    spec = topology().profiles
    metas = {m.content_id: m for m in _catalogue(50)}
    ids = list(metas)
    rng = random.Random(3)
    events = [
        Event(
            str(i),
            rng.choice(["click", "impression"]),
            rng.choice(ids),
            T0 + rng.randint(-500, 500) * HOUR,
        )
        for i in range(300)
    ]
    a = new_profile("u", T0, spec)
    apply_events(a, events, metas, spec)
    shuffled = events[:]
    rng.shuffle(shuffled)
    b = new_profile("u", T0, spec)
    for chunk in range(0, 300, 37):  # several batches, any order
        apply_events(b, shuffled[chunk : chunk + 37], metas, spec)
    assert a["recent_reads"] == b["recent_reads"]
    assert (a["clicks"], a["impressions"]) == (b["clicks"], b["impressions"])
    for name in ("category_affinity", "topic_affinity"):
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert a[name][k] == pytest.approx(b[name][k], rel=1e-9)


def test_forward_decay_halves_after_one_half_life() -> None:
    spec = topology().profiles
    m = Meta("c" * 64, "mind", ("news",), ("news",), None)
    old, new = (
        Event("1", "click", m.content_id, T0),
        Event("2", "click", m.content_id, T0 + int(spec.half_life_hours * HOUR)),
    )
    p = new_profile("u", T0, spec)
    apply_events(p, [old], {m.content_id: m}, spec)
    first = p["category_affinity"]["news"]
    apply_events(p, [new], {m.content_id: m}, spec)
    assert p["category_affinity"]["news"] == pytest.approx(first * 3)  # 1 + 2 at landmark scale


def test_pending_click_applied_on_resolve() -> None:
    spec = topology().profiles
    m = Meta("d" * 64, "mind", ("sports",), ("sports", "nfl"), None)
    p = new_profile("u", T0, spec)
    waiting = apply_events(p, [Event("1", "click", m.content_id, T0)], {}, spec)
    assert waiting == [m.content_id]
    assert p["pending"] == [{"content_id": m.content_id, "at": T0}]
    assert p["category_affinity"] == {} and p["clicks"] == 1
    apply_events(p, [Event("r", "resolve", m.content_id, T0 + 10**9)], {m.content_id: m}, spec)
    assert p["pending"] == [] and p["category_affinity"]["sports"] > 0
    assert p["last_seen"] == T0  # resolve is bookkeeping, not activity
    again = copy.deepcopy(p)
    apply_events(p, [Event("r", "resolve", m.content_id, T0)], {m.content_id: m}, spec)
    assert p["category_affinity"] == again["category_affinity"]  # a second resolve is a no-op


def test_pending_clicks_expire_after_the_ttl_and_the_cap_is_reported() -> None:
    spec = topology().profiles.model_copy(update={"pending_max": 2, "pending_ttl_hours": 24.0})
    ttl = int(spec.pending_ttl_hours * HOUR)
    p = new_profile("u", T0, spec)
    clicks = [Event(f"c{i}", "click", f"{i:064x}", T0 + i) for i in range(3)]
    dropped: list[dict] = []
    apply_events(p, clicks, {}, spec, dropped)
    assert dropped == [{"content_id": f"{0:064x}", "at": T0}]  # the oldest, past pending_max
    apply_events(p, [Event("i", "impression", "x" * 64, T0 + 1 + ttl)], {}, spec, dropped)
    assert len(dropped) == 1  # nothing older than the TTL yet
    apply_events(p, [Event("j", "impression", "x" * 64, T0 + 2 + ttl)], {}, spec, dropped)
    assert dropped[1:] == [{"content_id": f"{1:064x}", "at": T0 + 1}]
    assert p["pending"] == [{"content_id": f"{2:064x}", "at": T0 + 2}]  # exactly at the bound
    assert p["clicks"] == 3  # an expired click still counts as a click


def test_pending_expiry_does_not_depend_on_how_events_are_batched() -> None:
    # a click waits for its item; the reader comes back after the TTL, and the item arrives
    # (its resolve follows): the click expired first, whether both came in one batch or two
    spec = topology().profiles.model_copy(update={"pending_ttl_hours": 24.0})
    m = Meta("e" * 64, "mind", ("sports",), ("sports", "nfl"), None)
    ttl = int(spec.pending_ttl_hours * HOUR)
    later = [Event("i", "impression", "x" * 64, T0 + ttl + 1),
             Event("r", "resolve", m.content_id, T0 + ttl + 1)]
    runs = []
    for cut in range(len(later) + 1):
        p, dropped = new_profile("u", T0, spec), []
        apply_events(p, [Event("c", "click", m.content_id, T0)], {}, spec, dropped)
        for part in (later[:cut], later[cut:]):
            apply_events(p, part, {m.content_id: m}, spec, dropped)
        runs.append((p, dropped))
    p, dropped = runs[0]
    assert dropped == [{"content_id": m.content_id, "at": T0}] and p["pending"] == []
    assert not p["category_affinity"]  # the item came after the click expired
    assert all(r == runs[0] for r in runs)


def _reference_seen(raw: bytes, wm: int | None, batch: list[Event], lateness_ms: int,
                    cap: int) -> tuple[bytes, int | None]:
    """The remembered ids after admitting ``batch`` to ids ``raw`` (watermark ``wm``), by the
    definition (feedpipe.model.admission): every id unpacked, the admitted ones added, those
    of minute ``(watermark - lateness) // 60 s`` or later kept, the ``cap`` newest by
    (minute, fingerprint), all sorted again."""
    seen = {fp: m for fp, m in struct.iter_unpack("<QI", raw)}
    oldest = min(seen.values()) if len(seen) >= cap and seen else None
    for ev in batch:
        fp = fingerprint(ev.event_id)
        if (wm is not None and ev.at < wm - lateness_ms) or fp in seen:
            continue
        if oldest is not None and ev.at // 60_000 < oldest:
            continue
        seen[fp] = ev.at // 60_000
        wm = ev.at if wm is None else max(wm, ev.at)
    floor = (wm - lateness_ms) // 60_000 if wm is not None else 0
    kept = sorted(((m, fp) for fp, m in seen.items() if m >= floor), reverse=True)[:cap]
    return b"".join(struct.pack("<QI", fp, m) for m, fp in kept), wm


@pytest.mark.parametrize("disorder", [0.0, 0.3])
def test_seen_kept_newest_first_whatever_the_batches(disorder: float) -> None:
    """Admission keeps the stored ids as bytes when a batch's ids are all newer (live order)
    and sorts them all otherwise: both give the ids its definition names, batch by batch."""
    rng = random.Random(15)
    spec = topology().profiles.model_copy(update={"dedup_max": 40, "allowed_lateness_hours": 1})
    lateness_ms = 3_600_000
    t = T0
    events = []
    for i in range(300):
        t += rng.choice((0, 1_000, 60_000, 600_000))
        at = t - (rng.choice((60_000, 1_800_000)) if rng.random() < disorder else 0)
        eid = hashlib.sha256(str(i).encode()).hexdigest()
        events.append(Event(eid, rng.choice(("impression", "click")), "N1", at))
        if rng.random() < 0.05:
            events.append(events[rng.randrange(len(events))])  # a duplicate
    p = new_profile("u1", T0, spec)
    want, wm = b"", None
    done = 0
    while done < len(events):
        batch = events[done : done + rng.randint(1, 25)]
        admit_events(p, batch, spec)
        done += len(batch)
        want, wm = _reference_seen(want, wm, batch, lateness_ms, 40)
        assert base64.b64decode(p["seen"]) == want
