"""Pure profile and ranking logic shared by the profiles and feeds stages and the read endpoint.

No I/O here: the stages fetch state from Redis, call these functions, and write the results.

Time decay (profiles)
    Affinities use *forward decay* (Cormode, Shkapenyuk, Srivastava, Xu: "Forward Decay: A
    Practical Time Decay Model for Streaming Systems", ICDE 2009) with an exponential function:
    a click at time t adds ``w * 2 ** ((t - L) / H)`` to the stored value, L being the profile's
    landmark and H the half-life. The decayed value at time T is ``stored * 2 ** (-(T - L) / H)``.
    Because every term is decayed by the same factor, the update is commutative: events applied
    in any order, late or early, give the same profile (this is what makes replays and
    out-of-order delivery safe). H = ``profiles.half_life_hours`` in topology.yaml (7 days; see
    docs/ranking.md for why).

Seed ranking formula (feeds)
    ``score = a * affinity + b * recency + c * engagement``, weights per brand in topology.yaml:

    * affinity in [0, 1]: half the share of the user's decayed category affinity held by the item's
      categories, plus half the share of the topic affinity held by the item's topics
      (shares of normalised maps, so the decay factor cancels and "now" does not matter);
    * recency in [0, 1]: ``2 ** (-(T - published_at) / H_r)``, T = the profile's last_seen,
      H_r = ``ranking.recency_half_life_hours``; 0 when the item has no publication time;
    * engagement in [0, 1): smoothed click-through rate
      ``ctr = (clicks + alpha) / (impressions + beta)`` (a Beta(alpha, beta - alpha) prior,
      alpha = ``engagement_prior_clicks``, beta = ``engagement_prior_impressions``), mapped
      through ``ctr / (ctr + alpha/beta)`` so an item at the prior mean scores 0.5.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from feedpipe.topology import ProfilesSpec, RankingSpec, Weights

if TYPE_CHECKING:
    from feedpipe.rank.candidates import CandidateInputs

HOUR_MS = 3_600_000
# Rebase the landmark before 2 ** ((t - L) / H) gets near float64's range (2 ** 1023).
_MAX_EXPONENT = 400.0

Profile = dict[str, Any]
"""A profile as stored in Redis (JSON; times in epoch ms). Keys: see :func:`new_profile`."""


@dataclass(frozen=True, slots=True)
class Meta:
    """Ranking features of a content item (the ``meta`` Redis value).

    Attributes:
        content_id: sha256 hex id.
        brand: the item's brand.
        categories: brand taxonomy categories.
        topics: topic labels (categories, subcategories, tags as slugs).
        published_at: epoch ms UTC, or None when the source gives none.
    """

    content_id: str
    brand: str
    categories: tuple[str, ...]
    topics: tuple[str, ...]
    published_at: int | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Meta:
        """Build from the stored JSON mapping (keys as the attribute names)."""
        return cls(
            d["content_id"],
            d["brand"],
            tuple(d["categories"]),
            tuple(d["topics"]),
            d.get("published_at"),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON mapping stored in Redis."""
        return {
            "content_id": self.content_id,
            "brand": self.brand,
            "categories": list(self.categories),
            "topics": list(self.topics),
            "published_at": self.published_at,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """A reader event reduced to what the profile needs.

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
    """An empty profile whose forward-decay landmark is ``landmark_ms`` (epoch ms)."""
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


def apply_events(
    profile: Profile,
    events: Iterable[Event],
    metas: Mapping[str, Meta | None],
    spec: ProfilesSpec,
) -> list[str]:
    """Apply ``events`` to ``profile`` in place; return content ids of clicks left pending.

    Args:
        profile: a profile from :func:`new_profile` or Redis.
        events: the user's events of one batch, any order (the result does not depend on it).
        metas: ranking features by content id for every clicked or resolved item; None (or
            absent) when the item is not materialised yet.
        spec: topology ``profiles`` section (recent-reads cap, pending cap).

    A click on an unknown item counts as a click and a recent read now, and its affinity is
    applied when a ``resolve`` event for that item arrives (the item reached the catalogue).
    The pending list keeps the newest ``spec.pending_max`` entries.
    """
    reads: list[dict[str, Any]] = profile["recent_reads"]
    pending: list[dict[str, Any]] = profile["pending"]
    newly_pending: list[str] = []
    for ev in events:
        if ev.type != "resolve":  # a resolve is pipeline bookkeeping, not reader activity
            seen = profile["last_seen"]
            profile["last_seen"] = ev.at if seen is None else max(seen, ev.at)
            first = profile["first_seen"]
            profile["first_seen"] = ev.at if first is None else min(first, ev.at)
        if ev.type == "impression":
            profile["impressions"] += 1
        elif ev.type == "click":
            if ev.origin == "history":
                profile["history_clicks"] += 1
            else:
                profile["clicks"] += 1
            reads.append({"content_id": ev.content_id, "at": ev.at})
            meta = metas.get(ev.content_id)
            if meta is None:
                pending.append({"content_id": ev.content_id, "at": ev.at})
                newly_pending.append(ev.content_id)
            else:
                _add_affinity(profile, meta, ev.at)
        elif ev.type == "resolve":
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
    # Deterministic caps: newest first, ties by content id.
    reads.sort(key=lambda r: (r["at"], r["content_id"]), reverse=True)
    dedup: list[dict[str, Any]] = []
    seen_reads: set[tuple[str, int]] = set()
    for r in reads:
        k = (r["content_id"], r["at"])
        if k not in seen_reads:
            seen_reads.add(k)
            dedup.append(r)
    profile["recent_reads"] = dedup[: spec.recent_reads]
    pending.sort(key=lambda r: (r["at"], r["content_id"]), reverse=True)
    del pending[spec.pending_max :]
    imps = profile["impressions"]
    profile["engagement_rate"] = profile["clicks"] / imps if imps else 0.0
    return newly_pending


MINUTE_MS = 60_000
_SEEN = struct.Struct("<QI")  # event-id fingerprint, event-time minute (since the epoch)


def fingerprint(event_id: str) -> int:
    """64-bit fingerprint of an event id: its first 16 hex digits (feedpipe event ids are sha256
    hex, feedpipe.ids), else the first 8 bytes of blake2b. Collision odds for n ids kept per
    user: about n^2 / 2^65 (birthday bound), ~5e-13 for the 4,096 kept by default."""
    head = event_id[:16]
    try:
        if len(head) == 16:
            return int(head, 16)
    except ValueError:
        pass
    import hashlib

    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def _seen_load(profile: Profile) -> dict[int, int]:
    raw = profile.get("seen")
    if not raw:
        return {}
    data = base64.b64decode(raw)
    return {fp: minute for fp, minute in _SEEN.iter_unpack(data)}


def _seen_store(profile: Profile, seen: Mapping[int, int], floor_minute: int, cap: int) -> None:
    kept = sorted(((m, fp) for fp, m in seen.items() if m >= floor_minute), reverse=True)[:cap]
    profile["seen"] = base64.b64encode(b"".join(_SEEN.pack(fp, m) for m, fp in kept)).decode()


@dataclass(slots=True)
class Admitted:
    """What :func:`admit_events` let through and what it held back.

    Attributes:
        accepted: events to apply, in the order given.
        duplicates: events whose id was already applied (skipped: exactly-once effect).
        late: events older than the user's event-time watermark minus the lateness bound, or
            older than every remembered id when the dedup memory is full (DLQ reason ``late``).
        bot_flagged: True when this call flagged the user as a bot.
    """

    accepted: list[Event]
    duplicates: list[Event]
    late: list[Event]
    bot_flagged: bool = False


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
    lateness_ms = int(spec.allowed_lateness_hours * 3_600_000)
    gap_ms = int(spec.session_gap_minutes * MINUTE_MS)
    seen = _seen_load(profile)
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
        if ev.type == "click":
            if ev.at >= profile["session_start"] - gap_ms:
                profile["session_clicks"] = profile.get("session_clicks", 0) + 1
            profile["session_clicks_total"] = profile.get("session_clicks_total", 0) + 1
            if ev.dwell_ms:
                profile["dwell_ms_total"] = profile.get("dwell_ms_total", 0) + int(ev.dwell_ms)
            if rate[0] == minute:
                rate[1] += 1
            elif minute > rate[0]:
                rate = [minute, 1]
            if rate[1] > spec.bot_clicks_per_minute and not profile.get("bot"):
                profile["bot"] = True
                out.bot_flagged = True
    profile["rate"] = rate
    profile["event_wm"] = wm
    floor = (wm - lateness_ms) // MINUTE_MS if wm is not None else 0
    _seen_store(profile, seen, floor, spec.dedup_max)
    return out


def trending_weight(at_ms: int, epoch: int, epoch_ms: float, half_life_ms: float) -> float:
    """Forward-decay weight of a click at ``at_ms`` (epoch ms) in trending ``epoch`` (its
    landmark is the epoch's start, ``epoch * epoch_ms``): ``2 ** ((at - L) / H)``
    (Cormode et al., ICDE 2009, as for profiles above)."""
    return float(2.0 ** ((at_ms - epoch * epoch_ms) / half_life_ms))


def add_item_signal(
    stats: dict[str, list[int]],
    trending: dict[tuple[str, int], dict[str, float]],
    kind: str,
    content_id: str,
    at_ms: int,
    meta: Meta | None,
    epoch_ms: float,
    half_life_ms: float,
) -> None:
    """Count one live impression or click into a batch's item ``stats`` (content id ->
    [impressions, clicks]) and, for a click on a known item, add its forward-decayed weight to
    ``trending[(brand, epoch)][content_id]`` (epoch = ``floor(at_ms / epoch_ms)``)."""
    if kind == "impression":
        stats[content_id][0] += 1
        return
    stats[content_id][1] += 1
    if meta is not None:
        epoch = math.floor(at_ms / epoch_ms)
        trending[(meta.brand, epoch)][content_id] += trending_weight(
            at_ms, epoch, epoch_ms, half_life_ms
        )


def normalised(m: Mapping[str, float]) -> dict[str, float]:
    """``m`` scaled to sum 1 (empty when the sum is 0)."""
    total = math.fsum(m.values())
    return {k: v / total for k, v in m.items()} if total > 0 else {}


def affinity_at(profile: Mapping[str, Any], at_ms: int) -> dict[str, dict[str, float]]:
    """Decayed affinities at ``at_ms`` (epoch ms), each map normalised to sum 1.

    Returns {"category": {...}, "topic": {...}}. Normalising cancels the decay factor, so the
    result is the same for any ``at_ms``; the argument is kept for callers presenting raw values.
    """
    del at_ms
    return {
        "category": normalised(profile.get("category_affinity", {})),
        "topic": normalised(profile.get("topic_affinity", {})),
    }


def engagement(clicks: float, impressions: float, spec: RankingSpec) -> float:
    """Engagement component in [0, 1): see the module docstring (smoothed CTR, Beta prior)."""
    a = spec.engagement_prior_clicks
    b = spec.engagement_prior_impressions
    ctr = (clicks + a) / (impressions + b)
    mean = a / b if a > 0 else 1.0 / b
    return ctr / (ctr + mean)


def recency(published_at: int | None, ref_ms: int, spec: RankingSpec) -> float:
    """Recency component in [0, 1]: half-life decay of the item's age at ``ref_ms`` (ms)."""
    if published_at is None:
        return 0.0
    age_h = max(0.0, (ref_ms - published_at) / HOUR_MS)
    return 2.0 ** (-age_h / spec.recency_half_life_hours)


def item_affinity(
    cat_share: Mapping[str, float], topic_share: Mapping[str, float], meta: Meta
) -> float:
    """Affinity component in [0, 1] from normalised category/topic shares."""
    c = math.fsum(cat_share.get(x, 0.0) for x in meta.categories)
    t = math.fsum(topic_share.get(x, 0.0) for x in meta.topics)
    return 0.5 * min(c, 1.0) + 0.5 * min(t, 1.0)


@dataclass(frozen=True, slots=True)
class Scored:
    """One ranked item with its score breakdown (components before weighting)."""

    content_id: str
    brand: str
    score: float
    affinity: float
    recency: float
    engagement: float
    weights: Weights


def rank(
    profile: Mapping[str, Any],
    candidates: Sequence[Meta],
    stats: Mapping[str, tuple[int, int]],
    spec: RankingSpec,
    sources: CandidateInputs | None = None,
    added_ms: Mapping[str, float] | None = None,
) -> list[Scored]:
    """Rank ``candidates`` for ``profile``; return the top ``spec.feed_size``.

    Args:
        profile: the user's profile (Redis JSON shape).
        candidates: items of the brands the user reads (already filtered for status).
        stats: content_id -> (impressions, clicks) of live events; missing means (0, 0).
        spec: topology ``ranking`` section.
        sources: candidate generation (feedpipe/rank/candidates.py); None scores every candidate.
        added_ms: content_id -> catalogue entry time (ms), the fresh source's clock for items
            without a publication time.

    With ``sources``, only items proposed by a source are scored: fresh (published, else
    added, at most ``fresh_hours`` before the user's last event), in the first ``trending_k``
    ids of their brand's trending list, or sharing a category / topic with the user's top
    ``top_affinities`` shares (ties at the cut kept).

    Items already read (in ``recent_reads``) are excluded. Order: score descending, then
    content_id ascending, so equal scores rank deterministically; with
    ``ranking.max_per_category`` > 0, at most that many items per primary category (the
    item's first category) are kept, then capped-out items fill the feed if it is short
    (:func:`feedpipe.rank.candidates.diversify`). This pure-Python version
    is the reference; the pipeline ranks with :func:`feedpipe.rank.rankers.rank_users` (numpy),
    which must agree with it.
    """
    shares = affinity_at(profile, profile.get("last_seen") or 0)
    ref = profile.get("last_seen") or 0
    read = {r["content_id"] for r in profile.get("recent_reads", [])}
    proposed = (
        None if sources is None else _proposed(shares, ref, candidates, sources, added_ms or {})
    )
    out: list[Scored] = []
    for m in candidates:
        if m.content_id in read or (proposed is not None and m.content_id not in proposed):
            continue
        w = spec.weights_for(m.brand)
        imps, clicks = stats.get(m.content_id, (0, 0))
        aff = item_affinity(shares["category"], shares["topic"], m)
        rec = recency(m.published_at, ref, spec)
        eng = engagement(clicks, imps, spec)
        out.append(
            Scored(m.content_id, m.brand, w.a * aff + w.b * rec + w.c * eng, aff, rec, eng, w)
        )
    out.sort(key=lambda s: (-s.score, s.content_id))
    if spec.max_per_category <= 0:
        return out[: spec.feed_size]
    from feedpipe.rank.candidates import diversify

    codes: dict[str, int] = {}
    by_id = {m.content_id: m for m in candidates}
    primary = [
        codes.setdefault(cs[0], len(codes)) if (cs := by_id[s.content_id].categories) else -1
        for s in out
    ]
    keep = diversify(range(len(out)), primary, spec.feed_size, spec.max_per_category)
    return [out[i] for i in keep]


def _proposed(
    shares: Mapping[str, Mapping[str, float]],
    ref: float,
    candidates: Sequence[Meta],
    sources: CandidateInputs,
    added_ms: Mapping[str, float],
) -> set[str]:
    """Ids of ``candidates`` some candidate source proposes (reference for
    :func:`feedpipe.rank.candidates.candidate_sources`)."""
    from feedpipe.rank.candidates import top_labels_with_ties

    spec = sources.spec
    trending = {cid for ids in sources.trending.values() for cid in ids[: spec.trending_k]}
    top_c = top_labels_with_ties(shares["category"], spec.top_affinities)
    top_t = top_labels_with_ties(shares["topic"], spec.top_affinities)
    out: set[str] = set()
    for m in candidates:
        at = m.published_at if m.published_at is not None else added_ms.get(m.content_id)
        fresh = at is not None and (ref - at) / HOUR_MS <= spec.fresh_hours
        if fresh or m.content_id in trending or top_c & set(m.categories) or top_t & set(
            m.topics
        ):
            out.add(m.content_id)
    return out


def candidate_brands(profile: Mapping[str, Any], spec: RankingSpec) -> list[str]:
    """Brands whose catalogue feeds this user: the brands they clicked, else the default brand."""
    brands = sorted(b for b, n in profile.get("brands", {}).items() if n > 0)
    return brands or [spec.default_brand]


class CandidateMatrix:
    """Candidates of a catalogue as dense numpy arrays, for ranking many users at once.

    Built once per catalogue version (the feeds stage caches it). Memory: n_items x
    (n_categories + n_topics) float64 — about 7 MB for the 2,000-item MIND sample; a catalogue
    of 10^5 items needs candidate generation first (a later issue), not this matrix.

    Args:
        metas: the catalogue's items.
        added_ms: content_id -> when the item entered the catalogue (epoch ms, the
            ``fp:catalogue:{brand}`` score); only used for items without a publication time.

    Attributes (besides the one-hot ``cat`` / ``topic`` matrices): ``published`` (n,) epoch ms
    or NaN; ``fresh_at`` (n,) the publication time, else the catalogue entry time, else NaN:
    the time the *fresh* candidate source measures age on (feedpipe/rank/candidates.py).
    """

    def __init__(self, metas: Sequence[Meta], added_ms: Mapping[str, float] | None = None) -> None:
        import numpy as np

        self.metas = sorted(metas, key=lambda m: m.content_id)
        self.index = {m.content_id: i for i, m in enumerate(self.metas)}
        cats = sorted({c for m in self.metas for c in m.categories})
        tops = sorted({t for m in self.metas for t in m.topics})
        self.cat_index = {c: i for i, c in enumerate(cats)}
        self.topic_index = {t: i for i, t in enumerate(tops)}
        n = len(self.metas)
        self.cat = np.zeros((n, max(1, len(cats))))
        self.topic = np.zeros((n, max(1, len(tops))))
        for i, m in enumerate(self.metas):
            for c in m.categories:
                self.cat[i, self.cat_index[c]] = 1.0
            for t in m.topics:
                self.topic[i, self.topic_index[t]] = 1.0
        self.brands = np.array([m.brand for m in self.metas], dtype=object)
        # primary category (an item's first) as its cat column, -1 without one (diversity cap)
        self.primary: list[int] = [
            self.cat_index[m.categories[0]] if m.categories else -1 for m in self.metas
        ]
        self.published = np.array(
            [np.nan if m.published_at is None else float(m.published_at) for m in self.metas]
        )
        added = added_ms or {}
        self.fresh_at = np.array(
            [
                float(m.published_at)
                if m.published_at is not None
                else float(added.get(m.content_id, np.nan))
                for m in self.metas
            ]
        )

    def __len__(self) -> int:
        return len(self.metas)


def top_rows(row_score: Any, k: int) -> Any:
    """Indices of the ``k`` highest scores of a 1-D numpy array, best first; ties broken by
    index, i.e. by content id, since candidate matrices are sorted by content id. Uses
    ``np.partition`` (O(n)) then sorts only the ``k`` selected (plus ties at the cut-off)."""
    import numpy as np

    n = len(row_score)
    kth = np.partition(row_score, n - k)[n - k]
    idx = np.flatnonzero(row_score >= kth)
    return idx[np.lexsort((idx, -row_score[idx]))][:k]
