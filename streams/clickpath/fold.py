"""The click path's fold: one partition batch + the state it reads -> a plan of what to write
and send. Pure: no I/O, no clock (the caller passes ``now_ms``), no globals.

Input:  the batch's decoded events and DLQ records (:mod:`streams.clickpath.records`), the
        partition's offset watermark, the stored profiles of the batch's users (decoded; they
        are updated in place), the ranking features of the items the events name, the worker's
        :class:`streams.clickpath.catalogue.Catalogue` and ranking configuration.
Output: a :class:`Plan`: profiles and feeds to store, users erased, item stats, trending and A/B
        increments, pending clicks, audience-index changes, DLQ records (undecodable and late
        events), which profiles and feeds to send, counts. :mod:`streams.clickpath.write`
        applies it in one MULTI/EXEC; :mod:`streams.clickpath.publish` sends its records.

What the fold decides, per user (offset order):

* an ``erase`` event: nothing before it survives (the stored profile is dropped, its feed,
  active-set, pending and audience entries are deleted); events after it start a new profile;
* ``fanout`` events carry no profile signal: the user's feed is re-ranked with the new item;
  a user without a stored profile is skipped, one whose profile is unchanged is not resent;
* other events are admitted (:func:`feedpipe.model.profile.admit_events`: duplicates by event
  id, events later than ``profiles.allowed_lateness_hours`` go to the DLQ as ``late``) and
  applied; the profile version moves by one per batch;
* live impressions and clicks of non-bot users count into item stats, trending and the A/B
  counters of the arm that served the user;
* a user is re-ranked at most once per batch (the batch is the debounce window: five events
  of a user in it cost one ranking), and only when the batch brings a click, resolve,
  fan-out or erase. A user with only impressions in the batch is not re-ranked: the profile
  (counts, ``last_seen``) is stored and sent, a stored feed is kept and its TTL renewed
  (``Plan.kept``). The impressions reach the feed at the user's next click or fan-out, or
  when the idle refresher re-ranks feeds older than their profile
  (:mod:`streams.clickpath.refresh`); a user who never clicked is served the read
  endpoint's trending/latest levels until then (docs/ranking.md, "Click path");
* a feed is sent only when its ranked list moved
  (:func:`streams.clickpath.catalogue.feed_fingerprint`, kept in the profile as ``feed_fp``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedpipe.model.admission import admit_events
from feedpipe.model.item import Meta, add_item_signal
from feedpipe.model.profile import Profile, apply_events, new_profile
from feedpipe.model.signals import COREAD_WINDOW, Trend, coread_add, trend_add, trend_epoch
from feedpipe.rank.experiments import assign_arm, experiment_for
from feedpipe.rank.fanout import AudienceWrites, audience_writes
from feedpipe.rank.rankers import rank_feeds
from feedpipe.rank.weights import RankingConfig
from feedpipe.store.coreads import CoReadState, user_coreads
from feedpipe.store.keys import Keys
from feedpipe.store.profiles import profile_ids
from feedpipe.topology import ExperimentSpec, Topology
from feedpipe.wire.ranked import feed_ids
from streams.clickpath.catalogue import Catalogue, feed_fingerprint, feed_json
from streams.clickpath.records import Decoded, Rejected, reader_event
from streams.runtime import ms

DAY_MS = 86_400_000


@dataclass(slots=True)
class Selection:
    """A batch split by the partition's offset watermark ``wm`` (-1: none)."""

    wm: int
    dead: list[tuple[bytes | None, bytes]]
    """DLQ records above the watermark: ``(key, value)``."""
    fresh: Decoded
    """Valid events above the watermark."""
    users: list[str]
    """Every user of the batch's valid events (sorted)."""
    stale_users: set[str]
    """Users with valid events at or below the watermark (applied before)."""
    last_offset: int
    """The batch's last offset: the watermark once it is applied."""


def select(decoded: Decoded, bad: Rejected, wm: int, last_offset: int) -> Selection:
    """Split the batch (last offset ``last_offset``) by the watermark: what is above it is new,
    the rest was applied."""
    return Selection(
        wm=wm,
        dead=[(key, value) for off, key, value in bad if off > wm],
        fresh=[(off, rec) for off, rec in decoded if off > wm],
        users=sorted({rec["user_id"] for _, rec in decoded}),
        stale_users={rec["user_id"] for off, rec in decoded if off <= wm},
        last_offset=last_offset,
    )


def users_of(fresh: Decoded) -> list[str]:
    """The users of ``fresh`` (sorted): whose stored profiles the fold needs."""
    return sorted({rec["user_id"] for _, rec in fresh})


def items_of(fresh: Decoded, experiments: Mapping[str, ExperimentSpec]) -> list[str]:
    """The items whose ranking features the fold needs (sorted): clicked and resolved items,
    and the items of live impressions and clicks when an experiment is enabled (A/B
    attribution needs their brand)."""
    ids = {rec["content_id"] for _, rec in fresh if rec["type"] in ("click", "resolve")}
    if any(spec.enabled for spec in experiments.values()):
        ids |= {
            rec["content_id"]
            for _, rec in fresh
            if rec["origin"] == "live" and rec["type"] in ("impression", "click")
        }
    return sorted(ids)


@dataclass(slots=True)
class Plan:
    """What one partition batch writes and sends (see the module docstring)."""

    partition: int
    last_offset: int
    fresh: int
    profiles: dict[str, Profile] = field(default_factory=dict)
    """Profiles to store (every ranked user), by user."""
    feeds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Feed documents to store, by user (the re-ranked users of ``profiles``)."""
    kept: set[str] = field(default_factory=set)
    """Users of ``profiles`` not re-ranked (impressions only): their stored feed is kept."""
    changed: set[str] = field(default_factory=set)
    """Users whose ranked list moved: their feed is sent."""
    unchanged_profiles: set[str] = field(default_factory=set)
    """Users re-ranked for a fan-out only: their profile is stored, not sent."""
    erased: dict[str, Profile | None] = field(default_factory=dict)
    """Users erased in the batch -> their profile before the erase."""
    pending: dict[str, set[str]] = field(default_factory=dict)
    """content_id -> users whose click waits for it."""
    stats: dict[str, list[int]] = field(default_factory=dict)
    trending: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    trends: dict[str, Trend] = field(default_factory=dict)
    """content_id -> trending-window increments (feedpipe.model.signals.trend_add)."""
    ab: dict[str, dict[str, int]] = field(default_factory=dict)
    coreads: CoReadState | None = None
    """Co-read rows read and updated by the batch's clicks (the changed ones are written)."""
    audience: AudienceWrites | None = None
    dead: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    """Rejected records above the watermark: ``(key, DeadLetter value)``, sent to the DLQ."""
    late: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """Events past the lateness bound: ``(offset, event)``, sent to the DLQ."""
    expired: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    """Pending clicks whose item did not arrive within ``profiles.pending_ttl_hours`` (or
    past ``pending_max``): ``(offset of the user's last record, user, {"content_id", "at"})``,
    sent to the DLQ (reason ``pending_expired``)."""
    unpend: dict[str, list[str]] = field(default_factory=dict)
    """user -> content ids of expired clicks the user no longer waits for (pending sets)."""
    newest_ms: int = 0
    """Newest event time (epoch ms) of the live events counted in ``stats`` (0: none)."""
    counted: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    """Admitted events and whether their user is a bot."""
    duplicates: int = 0

    def interned_ids(self) -> list[str]:
        """The content ids the stored profiles and feeds name (they need item ordinals)."""
        users = sorted(self.profiles)
        return [
            *(c for u in users for c in profile_ids(self.profiles[u])),
            *(c for u in sorted(self.feeds) for c in feed_ids(self.feeds[u]["items"])),
        ]


def ab_counts(
    live: Sequence[dict[str, Any]],
    experiments: Mapping[str, ExperimentSpec],
    metas: Mapping[str, Meta],
) -> dict[str, dict[str, int]]:
    """A/B counters of a batch's admitted live impressions and clicks (bots excluded).

    Attribution: an event on an item of brand B counts for the arm its user is assigned to
    (:func:`feedpipe.rank.experiments.assign_arm`, a pure hash of experiment and user) in the
    enabled experiment running on B; that is the arm whose ranker produced the user's feed
    of B, and anyone can recompute it from the event. Events on items whose metadata has
    not arrived yet have no known brand and are not attributed (they still count in the
    item stats). Returns experiment -> {"{arm}:impressions" | "{arm}:clicks": count}.
    """
    if not live or not any(spec.enabled for spec in experiments.values()):
        return {}
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rec in live:
        meta = metas.get(rec["content_id"])
        found = experiment_for(experiments, meta.brand) if meta is not None else None
        if found is None:
            continue
        name, spec = found
        arm = assign_arm(name, spec, rec["user_id"])
        out[name][f"{arm}:{rec['type']}s"] += 1
    return {name: dict(fields) for name, fields in out.items()}


def fold(
    partition: int,
    sel: Selection,
    stored: Mapping[str, Profile | None],
    metas: Mapping[str, Meta],
    catalogue: Catalogue,
    cfg: RankingConfig,
    topo: Topology,
    keys: Keys,
    now_ms: int,
    coreads: CoReadState | None = None,
) -> Plan:
    """Fold the fresh events of ``sel`` into ``stored`` (user -> stored profile or None; the
    profiles are updated in place) and rank the users; return the :class:`Plan`.

    ``metas``: ranking features of (at least) :func:`items_of` the fresh events; ``catalogue``:
    the candidate matrix, item stats and versions ranked with; ``now_ms``: wall clock of the
    audience registrations; ``coreads``: the co-read rows of the batch's reads
    (:func:`feedpipe.store.coreads.read_state`), updated in place by the batch's non-bot clicks
    (:func:`count_coreads`) and ranked with; None: no co-reads.
    """
    spec, rspec = topo.profiles, topo.ranking
    epoch_ms = rspec.trending_epoch_hours * 3_600_000
    half_ms = rspec.trending_half_life_hours * 3_600_000
    plan = Plan(partition, sel.last_offset, len(sel.fresh), dead=sel.dead)
    per_user: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    item_ids: set[str] = set()
    for item in sel.fresh:  # one pass: group by user, collect the clicked and resolved items
        rec = item[1]
        group = per_user.get(rec["user_id"])
        if group is None:
            per_user[rec["user_id"]] = [item]
        else:
            group.append(item)
        if rec["type"] in ("click", "resolve"):
            item_ids.add(rec["content_id"])
    item_metas = {c: m for c, m in metas.items() if c in item_ids}
    pending: dict[str, set[str]] = defaultdict(set)
    for u in sorted(per_user):
        evs = per_user[u]
        old = stored.get(u)
        kinds = {rec["type"] for _, rec in evs}
        if "erase" in kinds:  # right to erasure: nothing before the erase survives
            types = [rec["type"] for _, rec in evs]
            cut = len(types) - 1 - types[::-1].index("erase")
            plan.erased[u] = old
            old = None
            evs = evs[cut + 1 :]
            if not evs:
                continue
            kinds = set(types[cut + 1 :])
        fanned = "fanout" in kinds
        if fanned:
            # fan-out on write (feedpipe/rank/fanout.py): no profile signal, the user is
            # re-ranked below; a user without a profile (expired, erased) is skipped
            evs = [(off, rec) for off, rec in evs if rec["type"] != "fanout"]
            if not evs:
                if old is not None:  # profile unchanged: same version, not sent
                    plan.profiles[u] = old
                    plan.unchanged_profiles.add(u)
                continue
        elif len(kinds) == 1 and "impression" in kinds:
            plan.kept.add(u)
        events = [reader_event(rec) for _, rec in evs]
        p = old or new_profile(u, min(ev.at for ev in events) // DAY_MS * DAY_MS, spec)
        clicks = coreads is not None and "click" in kinds
        prior = [(r["at"], r["content_id"]) for r in p["recent_reads"]] if clicks else []
        was_bot = bool(p.get("bot"))
        adm = admit_events(p, events, spec)
        plan.duplicates += len(adm.duplicates)
        if adm.late:
            late_ids = {id(ev) for ev in adm.late}
            plan.late += [
                (off, rec) for (off, rec), ev in zip(evs, events, strict=True)
                if id(ev) in late_ids
            ]
        dropped: list[dict[str, Any]] = []
        waiting = apply_events(p, adm.accepted, item_metas, spec, dropped)
        if dropped:
            plan.expired += [(evs[-1][0], u, e) for e in dropped]
            left = {e["content_id"] for e in p["pending"]}
            waiting = [c for c in waiting if c in left]
            plan.unpend[u] = sorted({e["content_id"] for e in dropped} - left)
        for cid in waiting:
            pending[cid].add(u)
        p["version"] += 1
        plan.profiles[u] = p
        if clicks and coreads is not None and not was_bot:
            # a user flagged by this batch: only the clicks admitted before the flag count
            flagged = adm.flagged_by
            upto = (len(adm.accepted) if flagged is None
                    else next(i for i, ev in enumerate(adm.accepted) if ev is flagged))
            count_coreads(coreads, prior,
                          [ev for ev in adm.accepted[:upto] if ev.type == "click"],
                          spec.recent_reads)
        bot = bool(p.get("bot"))
        if len(adm.accepted) == len(events):  # the common case: every event admitted
            plan.counted += [(rec, bot) for _, rec in evs]
        elif adm.accepted:
            accepted_ids = {id(ev) for ev in adm.accepted}
            plan.counted += [
                (rec, bot)
                for (_, rec), ev in zip(evs, events, strict=True)
                if id(ev) in accepted_ids
            ]
    plan.pending = dict(pending)
    live = [
        rec
        for rec, bot in plan.counted
        if not bot and rec["origin"] == "live" and rec["type"] in ("impression", "click")
    ]
    plan.ab = ab_counts(live, cfg.experiments, metas)
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    trending: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    trends: dict[str, Trend] = {}
    newest = 0
    for rec in live:  # bots are left out of every other reader's signals
        cid = rec["content_id"]
        at = ms(rec["occurred_at"]) or 0
        newest = max(newest, at)
        click = rec["type"] != "impression"
        if click:
            add_item_signal(stats, trending, "click", cid, at, item_metas.get(cid), epoch_ms,
                            half_ms)
        else:  # add_item_signal's impression branch, inline: most live events are impressions
            stats[cid][0] += 1
        trends[cid] = trend_add(trends.get(cid), click, at, shown=not click)
    plan.trends = trends
    plan.stats = dict(stats)
    plan.newest_ms = newest
    plan.trending = {key: dict(scores) for key, scores in trending.items()}
    ranked_users = sorted(u for u in plan.profiles if u not in plan.kept)
    plan.coreads = coreads
    co_maps = coread_maps([plan.profiles[u] for u in ranked_users], coreads)
    ranked = rank_feeds(
        [plan.profiles[u] for u in ranked_users],
        catalogue.matrix,
        catalogue.stats,
        rspec,
        cfg,
        sources=catalogue.sources(),
        trends=catalogue.trends,
        coreads=co_maps,
    )
    stats_version = catalogue.stats_version or 0
    for j, (u, items) in enumerate(zip(ranked_users, ranked, strict=True)):
        co = co_maps[j] if co_maps is not None else None
        plan.feeds[u] = feed_json(u, plan.profiles[u], items, stats_version, catalogue, co)
        fp = feed_fingerprint(items)
        if plan.profiles[u].get("feed_fp") != fp:
            plan.profiles[u]["feed_fp"] = fp
            plan.changed.add(u)
    plan.audience = audience_writes(plan.profiles, rspec, topo.fanout, keys, now_ms,
                                    plan.kept | plan.unchanged_profiles)
    return plan


def count_coreads(state: CoReadState, reads: list[tuple[int, str]], clicks: Sequence[Any],
                  keep: int) -> None:
    """Count a user's clicks (reader events of one batch **in offset order**, live or replayed
    history) as co-reads with :func:`feedpipe.model.signals.coread_add` on the partition's rows
    of the click's epoch.

    A click's prior reads are the :data:`feedpipe.model.signals.COREAD_WINDOW` newest reads
    strictly before its event time among the reads the user's profile holds when the click is
    admitted: ``reads`` ((at ms, content id) of the stored recent reads) and the batch's earlier
    clicks, the ``keep`` newest (``profiles.recent_reads``, the profile's own cap; ties by
    content id). That is a function of the user's events up to the click in offset order, so
    it does not depend on where batches start or end, nor on which worker applies them: a
    click arriving after a newer one (rows of a log out of time order, a late event) does not
    become a prior of the newer click, in one batch as across two. Clicks of one time do not
    count each other, as in ``feedpipe evaluate``; a replayed history click is a click the
    reader made before the stream began, so it counts like a live one, as
    :func:`feedpipe.model.signals.coread_replay` counts a history offline (admission has
    already dropped a history replayed twice).
    """
    if not clicks:
        return
    timeline = sorted(set(reads))[-keep:] if keep > 0 else []
    for ev in clicks:
        read = (ev.at, ev.content_id)
        before = bisect_left(timeline, (ev.at, ""))  # first read at or after the click's time
        prior = [cid for _, cid in timeline[max(0, before - COREAD_WINDOW) : before]]
        e = trend_epoch(ev.at)
        coread_add(state.own(e), prior, ev.content_id)
        state.changed.update((e, x) for x in prior if x != ev.content_id)
        at = bisect_left(timeline, read)
        if keep > 0 and (at == len(timeline) or timeline[at] != read):
            timeline.insert(at, read)
            del timeline[:-keep]


def coread_maps(profiles: Sequence[Profile], state: CoReadState | None
                ) -> list[dict[str, float]] | None:
    """Per profile, its co-read scores (:func:`feedpipe.store.coreads.user_coreads` of its last
    reads over the merged rows); None without co-read state."""
    if state is None:
        return None
    # the COREAD_WINDOW newest reads (recent_reads is newest first), oldest first
    reads = [[r["content_id"] for r in p["recent_reads"][:COREAD_WINDOW]][::-1]
             for p in profiles]
    table = state.table({x for rs in reads for x in rs})
    return [user_coreads(table, rs) for rs in reads]
