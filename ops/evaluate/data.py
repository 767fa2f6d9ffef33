"""The evaluation's input: MIND impression logs and news parsed, and each impression's
candidates prepared leak-free for the rankers (see :mod:`ops.evaluate`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from feedpipe.errors import ConfigError
from feedpipe.model.interest import interest_of
from feedpipe.model.item import CandidateMatrix, Meta
from feedpipe.model.profile import Event, apply_events, new_profile
from feedpipe.model.signals import (
    CoReads,
    Trend,
    coread_add,
    coread_replay,
    coread_scores,
    trend_add,
    trend_at,
)
from feedpipe.model.text import SparseVec, encode, similarity
from feedpipe.model.units import HOUR_MS
from feedpipe.rank.components import (
    Array,
    Candidates,
    affinity_scores,
    category_weights,
    item_biases,
    profile_shares,
    user_bias,
)
from feedpipe.topology import Topology


@dataclass(frozen=True, slots=True)
class Impression:
    """One MIND impression log row.

    Attributes:
        impression_id: as in the file.
        user_id: as in the file.
        at_ms: impression time, epoch ms (MIND times read as UTC).
        history: clicked news ids before the impression, oldest first.
        candidates: news ids shown; ``labels`` 1 = clicked, 0 = not (same length).
    """

    impression_id: str
    user_id: str
    at_ms: int
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    labels: tuple[int, ...]


def parse_behaviors(lines: Iterable[str]) -> tuple[list[Impression], dict[int, str]]:
    """Parse behaviors.tsv lines; return ``(impressions, {line number: reason})``.

    A malformed row (not 5 tab-separated columns, empty ids, a time not ``M/D/YYYY h:mm:ss
    AM/PM``, an entry not ``<news id>-<0|1>``) is not evaluated and is reported with its reason.
    Blank lines are ignored.
    """
    from connectors.files.mind import parse_mind_time

    out: list[Impression] = []
    bad: dict[int, str] = {}
    for n, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            bad[n] = f"expected 5 tab-separated columns, got {len(cols)}"
            continue
        iid, uid, when, hist, imps = (c.strip() for c in cols)
        if not iid or not uid:
            bad[n] = "empty impression_id or user_id"
            continue
        try:
            at_ms = int(parse_mind_time(when).timestamp() * 1000)
        except ValueError:
            bad[n] = f"time {when!r} is not 'M/D/YYYY h:mm:ss AM/PM'"
            continue
        cands: list[str] = []
        labels: list[int] = []
        for entry in imps.split():
            nid, sep, label = entry.rpartition("-")
            if not sep or not nid or label not in ("0", "1"):
                bad[n] = f"impression entry {entry!r} is not '<news id>-<0|1>'"
                break
            cands.append(nid)
            labels.append(int(label))
        else:
            out.append(Impression(iid, uid, at_ms, tuple(hist.split()), tuple(cands),
                                  tuple(labels)))
    return out, bad


def read_behaviors(path: Path) -> tuple[list[Impression], dict[int, str]]:
    """:func:`parse_behaviors` of a file (UTF-8).

    Raises:
        ConfigError: the file cannot be read or is not UTF-8.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_behaviors(text.splitlines())


def read_news(path: Path, topo: Topology, brand: str = "mind",
              texts: dict[str, SparseVec] | None = None) -> tuple[dict[str, Meta], int]:
    """Ranking features of a MIND news.tsv, by news id, built as the pipeline builds them.

    Each row goes through the MIND normaliser (``streams.normalisers.mind.normalise_row``),
    the brand taxonomy (``Topology.map_categories``) and the enrichment's topic rule
    (``streams.metadata.topics``), so categories and topics equal those of the replayed
    catalogue. ``published_at`` is None (MIND has none). Returns ``(metas, rejected rows)``;
    when ``texts`` is given, each item's text vector (:func:`feedpipe.model.text.encode` of
    title and abstract, English) is stored in it by news id.

    Raises:
        ConfigError: the file cannot be read.
    """
    from feedpipe.errors import RejectedInput
    from streams.metadata import topics
    from streams.normalisers.mind import normalise_row

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    metas: dict[str, Meta] = {}
    rejected = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            d = normalise_row(line, deleting=False)
        except RejectedInput:
            rejected += 1
            continue
        src = list(dict.fromkeys(d.source_categories))
        cats = topo.map_categories(
            brand, src if d.categories_from is None else d.categories_from
        )
        metas[d.source_id] = Meta(d.source_id, brand, tuple(cats),
                                  tuple(topics(cats, src, d.tags)), None)
        if texts is not None:
            texts[d.source_id] = encode([d.title, d.summary, d.body], "en")
    return metas, rejected



class ContentScorer:
    """The content features of candidates for a reader with a given history: ``affinity``
    (profile shares through the click path's profile code) and ``similarity`` (the interest
    vector built by ``apply_events`` with the click path's codec), as :func:`prepare` and the
    pseudo-impressions of :mod:`ops.evaluate.pseudo` compute them.

    History clicks carry no time in MIND; as the replay connector does, click i of h is placed
    at ``at_ms - (h - i) * profiles.history_click_spacing_s``.
    """

    def __init__(self, metas: Mapping[str, Meta], texts: Mapping[str, SparseVec],
                 topo: Topology) -> None:
        self.pspec = topo.profiles
        self.spacing_ms = self.pspec.history_click_spacing_s * 1000
        self.matrix = CandidateMatrix(list(metas.values()))
        self.texts = texts
        # History items carry their text vector, so apply_events builds the interest vector
        # with the click path's codec (feedpipe.model.interest: 32 terms at 8 bits).
        self.with_text = {nid: replace(m, text=tuple(texts[nid].items()))
                          if texts.get(nid) else m for nid, m in metas.items()}
        self.zero_cat = np.zeros(self.matrix.cat.shape[1])
        self.zero_top = np.zeros(self.matrix.topic.shape[1])

    def features(self, key: str, user_id: str, at_ms: int, history: Sequence[str],
                 candidates: Sequence[str]) -> tuple[Array, Array, Array, bool]:
        """``(affinity (n,), similarity (n,), has_meta (n,) of 0/1, the history has an item
        with metadata)`` of ``candidates`` for a reader whose clicks before ``at_ms`` (epoch
        ms) are ``history`` (oldest first); ``key`` names the replayed events."""
        h = len(history)
        profile = new_profile(user_id, at_ms - h * self.spacing_ms, self.pspec)
        events = [Event(f"{key}:{i}", "click", nid, at_ms - (h - i) * self.spacing_ms,
                        "history") for i, nid in enumerate(history)]
        known = {nid: self.with_text[nid] for nid in history if nid in self.with_text}
        apply_events(profile, events, known, self.pspec)
        s_cat, s_top = profile_shares([profile], self.matrix)
        rows = [self.matrix.index.get(nid) for nid in candidates]
        item_cat = np.array([self.zero_cat if r is None else self.matrix.cat[r] for r in rows])
        item_top = np.array([self.zero_top if r is None else self.matrix.topic[r]
                             for r in rows])
        aff = affinity_scores(s_cat, s_top, item_cat, item_top)[0]
        sim = similarity(interest_of(profile), [self.texts.get(n) for n in candidates])
        has_meta = np.array([r is not None for r in rows], dtype=float)
        return aff, sim, has_meta, bool(known)


@dataclass(frozen=True, slots=True)
class Prepared:
    """One evaluable impression: labels, the rankers' inputs (leak-free) and, per candidate,
    1.0 when it has metadata in the news file (``has_meta``, 0.0 otherwise)."""

    impression: Impression
    labels: Array
    cands: Candidates
    has_meta: Array


@dataclass
class Coverage:
    """Counts describing the evaluated data (reported with the table)."""

    rows: int = 0
    malformed: int = 0
    excluded: int = 0
    evaluated: int = 0
    skipped_no_positive: int = 0
    skipped_no_negative: int = 0
    candidates: int = 0
    clicks: int = 0
    candidates_without_metadata: int = 0
    histories_with_metadata: int = 0
    candidates_seen_before: int = 0


def prepare(
    impressions: Sequence[Impression],
    metas: Mapping[str, Meta],
    log: Sequence[Impression],
    topo: Topology,
    brand: str = "mind",
    source: str = "mind",
    texts: Mapping[str, SparseVec] | None = None,
    published: Mapping[str, int] | None = None,
) -> tuple[list[Prepared], Coverage]:
    """Build every impression's :class:`Candidates` without looking at its labels or the future.

    Args:
        impressions: rows to evaluate (any order).
        metas: news id -> ranking features (:func:`read_news`); a candidate without one has no
            categories/topics (affinity 0, default category weight).
        log: counting log: clicks, impressions and first sightings of each news id are taken
            from its rows strictly before each impression's time.
        topo: profiles spec (half-life, spacing), ranking spec, rankers config.
        brand: the brand whose editorial category weights apply.
        source: the content source, for the editorial source bias.
        texts: news id -> text vector (:func:`feedpipe.model.text.encode`); the user's
            interest vector is the decayed sum of the vectors of the history items, built by
            ``apply_events`` with the click path's codec (:mod:`feedpipe.model.interest`).
        published: news id -> publication time (epoch ms); the age of an item with one is
            counted from it, else from its first sighting in the log (the proxy).

    The ``learned`` ranker's online signals are replayed from the log rows strictly before
    the impression with the click path's functions: trending windows
    (:func:`feedpipe.model.signals.trend_add` per shown candidate) and co-reads ("read X, then
    Y": :func:`feedpipe.model.signals.coread_add` of each clicked candidate after the row's
    history, and :func:`feedpipe.model.signals.coread_replay` of the history itself, each
    user's history items counted once, as the replay connector sends them to the click path).

    Returns ``(prepared, coverage)``; impressions without a click or without a non-click are
    counted in ``coverage`` and not prepared (AUC is undefined for them).
    """
    editorial = topo.ranker_config().editorial
    content = ContentScorer(metas, texts or {}, topo)
    cov = Coverage(rows=len(impressions))

    ordered = sorted(log, key=lambda r: r.at_ms)
    clicks: dict[str, int] = {}
    shown: dict[str, int] = {}
    first: dict[str, int] = {}
    trends: dict[str, Trend] = {}
    coreads: CoReads = {}
    replayed: dict[str, int] = {}
    published = published or {}
    pos = 0
    out: list[Prepared] = []
    for imp in sorted(impressions, key=lambda r: (r.at_ms, r.impression_id)):
        while pos < len(ordered) and ordered[pos].at_ms < imp.at_ms:
            row = ordered[pos]
            pos += 1
            for nid, lab in zip(row.candidates, row.labels, strict=True):
                shown[nid] = shown.get(nid, 0) + 1
                clicks[nid] = clicks.get(nid, 0) + lab
                first.setdefault(nid, row.at_ms)
                trends[nid] = trend_add(trends.get(nid), lab > 0, row.at_ms)
                if lab > 0:
                    coread_add(coreads, row.history, nid)
            for nid in row.history:
                first.setdefault(nid, row.at_ms)
            replayed[row.user_id] = coread_replay(coreads, row.history,
                                                  replayed.get(row.user_id, 0))
        n_pos = sum(imp.labels)
        if n_pos == 0:
            cov.skipped_no_positive += 1
            continue
        if n_pos == len(imp.labels):
            cov.skipped_no_negative += 1
            continue
        cov.evaluated += 1
        cov.candidates += len(imp.candidates)
        cov.clicks += n_pos
        # Profile from the history column only, through the click path's profile code.
        h = len(imp.history)
        aff, sim, has_meta, known = content.features(imp.impression_id, imp.user_id,
                                                     imp.at_ms, imp.history, imp.candidates)
        if known:
            cov.histories_with_metadata += 1
        cov.candidates_without_metadata += int(len(has_meta) - has_meta.sum())
        seen = [first.get(nid) for nid in imp.candidates]
        cov.candidates_seen_before += sum(s is not None for s in seen)
        first_ms = np.array([published.get(nid, imp.at_ms if s is None else s)
                             for nid, s in zip(imp.candidates, seen, strict=True)], dtype=float)
        cand_metas = [metas.get(nid) for nid in imp.candidates]
        read_bias = item_biases([None] * h, [source] * h, editorial)
        cands = Candidates(
            affinity=aff,
            age_hours=(imp.at_ms - first_ms) / HOUR_MS,
            clicks=np.array([clicks.get(n, 0) for n in imp.candidates], dtype=float),
            impressions=np.array([shown.get(n, 0) for n in imp.candidates], dtype=float),
            category_weight=category_weights(cand_metas, brand, editorial),
            bias=item_biases([None] * len(imp.candidates), [source] * len(imp.candidates),
                             editorial),
            user_bias=user_bias(list(read_bias), default=editorial.default_bias),
            trend=np.array([trend_at(trends.get(n), imp.at_ms) for n in imp.candidates]),
            coread=coread_scores(coreads, imp.history, imp.candidates),
            similarity=sim,
        )
        out.append(Prepared(imp, np.array(imp.labels, dtype=float), cands, has_meta))
    return out, cov
