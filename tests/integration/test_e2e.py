"""End to end on real Kafka and Redis with the real shared data.

Replays all 2,000 MIND articles, the WordPress, Drupal and RSS/Atom/JSON Feed files, then all
5,000 MIND impressions (history clicks, impressions, clicks), through a real Faust worker, and
asserts through the read endpoint's HTTP API:

* every valid article is materialised exactly once;
* for a sample of users the profile equals an independent pure-Python computation from
  behaviors.tsv, and the feed order equals an independent reference ranking;
* every malformed input is in a DLQ with a reason;
* counts reconcile: raw events in = events that produced content + DLQ records, and every
  reader event is counted in exactly one profile.

The reference maths below is written from the formulas in docs/ranking.md, not imported from
feedpipe.model.profile or feedpipe.rank.reference, so a bug there cannot hide itself.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipeline import api_headers, consume_all, drain, running_pipeline, wait_feeds_converged

from connectors.replay import replay_all
from feedpipe.ids import content_id
from feedpipe.store.profiles import read_sync
from feedpipe.topology import topology
from feedpipe.wire.codec import codec

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CMS_SOURCES = ["mind", "frontity-wp", "umami-drupal", "feeds-realworld", "feeds-edge"]
SAMPLE_USERS = 40


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str, redis_url: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A drained pipeline: fresh topics, empty Redis, a worker and the API, all data replayed."""
    with running_pipeline(kafka_bootstrap, redis_url, tmp_path_factory.mktemp("e2e")) as s:
        t0 = time.monotonic()
        cms = replay_all(topology(), data_dir, CMS_SOURCES, None)
        drain(s.kafka_bootstrap, s.app_id)
        t1 = time.monotonic()
        reads = replay_all(topology(), data_dir, ["mind-behaviors"], None)
        drain(s.kafka_bootstrap, s.app_id)
        wait_feeds_converged(redis_url)
        t2 = time.monotonic()
        n_reader = sum(m.published for m in reads.values())
        print(
            f"\nE2E: CMS replay+drain {t1 - t0:.1f} s; {n_reader:,} reader events "
            f"in {t2 - t1:.1f} s = {n_reader / (t2 - t1):,.0f} events/s end to end"
        )
        yield {
            "base": f"http://{s.api_host}:{s.api_port}",
            "headers": api_headers(s),
            "settings": s,
            "cms": cms,
            "reads": reads,
            "redis_url": redis_url,
        }


# --- independent reference -------------------------------------------------------------


def _parse_time(s: str) -> int:
    return int(datetime.strptime(s, "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC).timestamp() * 1000)


def _reference_events(data_dir: Path) -> dict[str, list[tuple[str, str, str, int]]]:
    """user -> [(type, origin, mind news id, ms)] straight from behaviors.tsv.

    A user's history (the same on each of their rows) is replayed once, as clicks spaced
    ``history_click_spacing_s`` apart ending before the user's earliest impression.
    """
    spacing = topology().profiles.history_click_spacing_s * 1000
    per_user: dict[str, list[tuple[str, str, str, int]]] = defaultdict(list)
    history: dict[str, list[str]] = {}
    earliest: dict[str, int] = {}
    with (data_dir / "mind" / "behaviors.tsv").open(encoding="utf-8") as fh:
        for line in fh:
            _imp, user, when, hist, impressions = line.rstrip("\n").split("\t")
            t = _parse_time(when)
            history.setdefault(user, hist.split())
            earliest[user] = min(t, earliest.get(user, t))
            for item in impressions.split():
                nid, label = item.rsplit("-", 1)
                per_user[user].append(("impression", "live", nid, t))
                if label == "1":
                    per_user[user].append(("click", "live", nid, t))
    for user, h in history.items():
        for i, nid in enumerate(h):
            per_user[user].append(
                ("click", "history", nid, earliest[user] - (len(h) - i) * spacing)
            )
    return per_user


def _norm(m: dict[str, float]) -> dict[str, float]:
    total = sum(m.values())
    return {k: v / total for k, v in m.items()} if total else {}


def _reference_profile(
    events: list[tuple[str, str, str, int]], catalogue: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    half_life_ms = topology().profiles.half_life_hours * 3_600_000
    pending_ttl_ms = int(topology().profiles.pending_ttl_hours * 3_600_000)
    last = max(t for *_, t in events)
    cats: dict[str, float] = defaultdict(float)
    tops: dict[str, float] = defaultdict(float)
    reads: list[tuple[int, str]] = []
    pending: set[tuple[str, int]] = set()
    imps = clicks = hist = 0
    for typ, origin, nid, t in events:
        if typ == "impression":
            imps += 1
            continue
        cid = content_id("mind", nid)
        hist += origin == "history"
        clicks += origin == "live"
        reads.append((t, cid))
        doc = catalogue.get(cid)
        if doc is None:
            pending.add((cid, t))
            continue
        w = 0.5 ** ((last - t) / half_life_ms)  # plain exponential decay to last_seen
        for c in doc["categories"]:
            cats[c] += w
        for x in doc["topics"]:
            tops[x] += w
    reads = sorted(set(reads), reverse=True)[: topology().profiles.recent_reads]
    return {
        "impressions": imps,
        "clicks": clicks,
        "history_clicks": hist,
        "engagement_rate": clicks / imps if imps else 0.0,
        "last_seen": last,
        "category": _norm(cats),
        "topic": _norm(tops),
        "recent_reads": [c for _, c in reads],
        # clicks wait for their item at most profiles.pending_ttl_hours behind last_seen
        "pending": {(c, t) for c, t in pending if t >= last - pending_ttl_ms},
    }


def _reference_ranking(
    profile: dict[str, Any], catalogue: dict[str, dict[str, Any]], stats: dict[str, list[int]]
) -> list[tuple[float, str]]:
    rk = topology().ranking
    w = rk.weights_for("mind")
    a0, b0 = rk.engagement_prior_clicks, rk.engagement_prior_impressions
    read = set(profile["recent_reads"])
    out = []
    for cid, doc in catalogue.items():
        if doc["brand"] != "mind" or cid in read:
            continue
        aff = 0.5 * min(
            1.0, sum(profile["category"].get(c, 0.0) for c in doc["categories"])
        ) + 0.5 * min(1.0, sum(profile["topic"].get(x, 0.0) for x in doc["topics"]))
        rec = (
            0.0
            if doc["published_at"] is None
            else 0.5
            ** (
                max(0.0, profile["last_seen"] - doc["published_at"])
                / 3_600_000
                / rk.recency_half_life_hours
            )
        )
        imps, clicks = stats.get(cid, [0, 0])
        ctr = (clicks + a0) / (imps + b0)
        eng = ctr / (ctr + a0 / b0)
        out.append((w.a * aff + w.b * rec + w.c * eng, cid))
    out.sort(key=lambda x: (-x[0], x[1]))
    # diversity (docs/ranking.md): at most max_per_category items per primary category in the
    # top feed_size, then the capped-out items in score order if the feed is short
    cap, size = rk.max_per_category, rk.feed_size
    if cap <= 0:
        return out
    kept: list[tuple[float, str]] = []
    spill: list[tuple[float, str]] = []
    per: Counter[str] = Counter()
    for sc, cid in out:
        if len(kept) == size:
            break
        cats = catalogue[cid]["categories"]
        if cats and per[cats[0]] >= cap:
            spill.append((sc, cid))
            continue
        if cats:
            per[cats[0]] += 1
        kept.append((sc, cid))
    return kept + spill[: size - len(kept)]


# --- tests -----------------------------------------------------------------------------


def _mind_catalogue(client: httpx.Client, data_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    with (data_dir / "mind" / "news.tsv").open(encoding="utf-8") as fh:
        for line in fh:
            nid = line.split("\t", 1)[0]
            cid = content_id("mind", nid)
            r = client.get(f"/v1/content/{cid}")
            assert r.status_code == 200, (nid, r.status_code, r.text[:200])
            out[cid] = r.json()
    return out


def test_every_valid_article_materialised_once(pipeline: dict[str, Any], data_dir: Path) -> None:
    from feedpipe.store.client import sync_client
    from feedpipe.store.keys import keys

    with httpx.Client(base_url=pipeline["base"], headers=pipeline["headers"], timeout=10) as client:
        catalogue = _mind_catalogue(client, data_dir)
    assert len(catalogue) == 2000
    titles = {}
    with (data_dir / "mind" / "news.tsv").open(encoding="utf-8") as fh:
        for line in fh:
            cols = line.split("\t")
            titles[content_id("mind", cols[0])] = cols[3]
    # plain text with whitespace runs collapsed (MIND titles hold runs of spaces where dashes were)
    assert all(doc["title"] == " ".join(titles[cid].split()) for cid, doc in catalogue.items())
    assert (
        all(doc["language"] == "en" for doc in list(catalogue.values())[:50])
        or sum(doc["language"] == "en" for doc in catalogue.values()) >= 1900
    )

    bootstrap = pipeline["settings"].kafka_bootstrap
    normalised = consume_all(bootstrap, "content.normalised")
    dec = codec("Content").decode
    ids = Counter(dec(m.value())["content_id"] for m in normalised)
    r = sync_client(pipeline["redis_url"])
    k = keys()
    in_catalogue: set[str] = set()
    for brand in ("mind", "frontity", "umami", "feeds"):
        in_catalogue |= {x.decode() for x in r.zrange(k.catalogue(brand), 0, -1)}
    # exactly once: one catalogue entry and one content key per distinct valid item
    assert in_catalogue == set(ids)
    assert sum(1 for _ in r.scan_iter(match=k.content("*"), count=1000)) == len(ids)
    brands = Counter(dec(m.value())["brand"] for m in normalised)
    assert brands["frontity"] >= 8 and brands["umami"] >= 8 and brands["feeds"] >= 100


def test_profiles_and_feeds_match_reference(pipeline: dict[str, Any], data_dir: Path) -> None:
    events = _reference_events(data_dir)
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for evs in events.values():
        for typ, origin, nid, _t in evs:
            if origin == "live":
                stats[content_id("mind", nid)][0 if typ == "impression" else 1] += 1
    rng = random.Random(20191109)
    users = rng.sample(sorted(events), SAMPLE_USERS)
    with httpx.Client(base_url=pipeline["base"], headers=pipeline["headers"], timeout=10) as client:
        catalogue = _mind_catalogue(client, data_dir)
        for user in users:
            ref = _reference_profile(events[user], catalogue)
            got = client.get(f"/v1/profiles/{user}")
            assert got.status_code == 200, got.text
            prof = got.json()
            assert prof["impressions"] == ref["impressions"], user
            assert prof["clicks"] == ref["clicks"], user
            assert prof["history_clicks"] == ref["history_clicks"], user
            assert prof["engagement_rate"] == pytest.approx(ref["engagement_rate"])
            assert [r["content_id"] for r in prof["recent_reads"]] == ref["recent_reads"], user
            assert prof["pending_count"] == len(ref["pending"]), user
            cats = {c["category"]: c["affinity"] for c in prof["top_categories"]}
            for name, share in cats.items():
                assert share == pytest.approx(ref["category"][name], rel=1e-6), (user, name)
            assert set(cats) == set(
                sorted(ref["category"], key=lambda c: -ref["category"][c])[: len(cats)]
            ) or len(ref["category"]) > len(cats)

            feed = client.get(f"/v1/feeds/{user}", params={"limit": 100, "explain": "true"}).json()
            assert feed["source"] == "personalised", (user, feed)
            expected = _reference_ranking(ref, catalogue, stats)[:100]
            got_ids = [it["content_id"] for it in feed["items"]]
            exp_scores = dict((cid, s) for s, cid in expected)
            # compact feeds store scores as uint16 in [0, 1]: within 1/131070 (feedstore.py)
            tol = 1 / 131070 + 1e-12 if topology().ranking.feed_format == "compact" else 1e-12
            for it in feed["items"]:
                assert it["explain"]["score"] == pytest.approx(
                    exp_scores.get(it["content_id"], math.nan), rel=1e-9, abs=tol
                ), (user, it)
            # same order, allowing swaps only between items whose reference scores tie to 1e-12
            exp_ids = [cid for _, cid in expected][: len(got_ids)]
            for g, e in zip(got_ids, exp_ids, strict=True):
                if g != e:
                    assert abs(exp_scores[g] - exp_scores[e]) < 1e-12, (user, g, e)


def test_malformed_inputs_in_dlq_with_reason(pipeline: dict[str, Any], data_dir: Path) -> None:
    bootstrap = pipeline["settings"].kafka_bootstrap
    dlq = [codec("DeadLetter").decode(m.value()) for m in consume_all(bootstrap, "cms.raw.dlq")]
    assert dlq, "no DLQ records"
    assert all(d["reason"].strip() and d["error_type"] for d in dlq)
    origins_rejected = {Path(d["origin"]).name for d in dlq if d["origin"]}
    for name in (
        "jsonapi_include_error.json",
        "jsonapi_index_error.json",
        "jsonapi_multiple_errors.json",
        "jsonapi_index.json",
    ):
        assert name in origins_rejected, name
    include_err = next(
        d for d in dlq if d["origin"] and d["origin"].endswith("jsonapi_include_error.json")
    )
    assert "is not a valid relationship field name" in include_err["reason"]
    normalised = [
        codec("Content").decode(m.value()) for m in consume_all(bootstrap, "content.normalised")
    ]
    raw = [codec("RawCmsEvent").decode(m.value()) for m in consume_all(bootstrap, "cms.raw")]
    origins_parsed = {Path(c["raw_event_id"]).name for c in normalised}
    del origins_parsed
    parsed_events = {c["raw_event_id"] for c in normalised}
    by_event = {r["event_id"]: Path(r["origin"]).name for r in raw}
    edge = sorted(p.name for p in (data_dir / "feeds" / "edge_cases").iterdir())
    for name in edge:
        in_dlq = name in origins_rejected
        parsed = any(by_event[e] == name for e in parsed_events if e in by_event)
        assert in_dlq or parsed, f"{name} neither parsed nor dead-lettered"
        if parsed and not in_dlq:
            items = [c for c in normalised if by_event.get(c["raw_event_id"]) == name]
            assert items and all(c["title"] or c["summary"] for c in items)


def test_counts_reconcile(pipeline: dict[str, Any], data_dir: Path) -> None:
    bootstrap = pipeline["settings"].kafka_bootstrap
    raw = [codec("RawCmsEvent").decode(m.value()) for m in consume_all(bootstrap, "cms.raw")]
    normalised = [
        codec("Content").decode(m.value()) for m in consume_all(bootstrap, "content.normalised")
    ]
    dlq = [codec("DeadLetter").decode(m.value()) for m in consume_all(bootstrap, "cms.raw.dlq")]
    produced = {c["raw_event_id"] for c in normalised}
    rejected = {d["raw_event_id"] for d in dlq}
    assert not produced & rejected
    assert len(raw) == len(produced) + len(dlq), (len(raw), len(produced), len(dlq))
    assert {r["event_id"] for r in raw} == produced | rejected
    assert sum(m.published for m in pipeline["cms"].values()) == len(raw)

    # reader events: every impression and live click is counted in exactly one profile
    events = _reference_events(data_dir)
    total_imps = sum(1 for evs in events.values() for e in evs if e[0] == "impression")
    total_clicks = sum(
        1 for evs in events.values() for e in evs if e[0] == "click" and e[1] == "live"
    )
    assert total_imps == 189_359 and total_clicks == 7_542
    from feedpipe.store.client import sync_client

    r = sync_client(pipeline["redis_url"])
    imps = clicks = 0
    users = sorted(events)
    for u in users:
        p = read_sync(r, u)[0]  # compact profiles: feedpipe/store/profiles.py
        assert p is not None
        imps += p["impressions"]
        clicks += p["clicks"]
    assert (imps, clicks) == (total_imps, total_clicks)
    reader_dlq = [
        codec("DeadLetter").decode(m.value()) for m in consume_all(bootstrap, "reader.events.dlq")
    ]
    # pending_expired records are clicks already counted (their item never arrived), not
    # rejected input events
    rejected = [d for d in reader_dlq if d["error_type"] != "pending_expired"]
    published = sum(m.published for m in pipeline["reads"].values())
    assert published == sum(len(v) for v in events.values()) + len(rejected)


def test_unknown_user_gets_trending_fallback(pipeline: dict[str, Any]) -> None:
    with httpx.Client(base_url=pipeline["base"], headers=pipeline["headers"], timeout=10) as client:
        feed = client.get("/v1/feeds/nobody-at-all").json()
        assert feed["source"] == "trending" and feed["fallback"] is True and feed["reason"]
        assert len(feed["items"]) > 0
        trending = client.get("/v1/trending", params={"brand": "mind"}).json()
        assert [i["content_id"] for i in trending["items"]][: len(feed["items"])] == [
            i["content_id"] for i in feed["items"]
        ]


def test_unpublished_item_leaves_content_and_every_feed(pipeline: dict[str, Any]) -> None:
    """A delete (unpublish) event flows through the pipeline and takes the item out of the
    content table and of every feed served; runs last because it changes the state."""
    from confluent_kafka import Producer

    from feedpipe.ids import event_id
    from feedpipe.store.client import sync_client
    from feedpipe.store.keys import keys

    r = sync_client(pipeline["redis_url"])
    k = keys()
    with httpx.Client(base_url=pipeline["base"], headers=pipeline["headers"], timeout=10) as client:
        users = [u.decode() for u in r.zrange(k.active(0), 0, 30)]
        feeds = {u: client.get(f"/v1/feeds/{u}", params={"limit": 100}).json() for u in users}
        counts = Counter(it["content_id"] for f in feeds.values() for it in f["items"])
        victim, n_feeds = counts.most_common(1)[0]
        doc = client.get(f"/v1/content/{victim}").json()
        assert doc["source"] == "mind" and n_feeds > 1
        raw = codec("RawCmsEvent").encode(
            {
                "event_id": event_id("unpublish", victim),
                "kind": "mind.news",
                "op": "delete",
                "source": "mind",
                "brand": "mind",
                "source_id": doc["source_id"],
                "content_type": "text/tab-separated-values",
                "payload": b"",
                "origin": "test",
                "emitted_at": datetime.now(UTC),
            }
        )
        p = Producer(
            {
                "bootstrap.servers": pipeline["settings"].kafka_bootstrap,
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
            }
        )
        p.produce("cms.raw", key=f"mind:{doc['source_id']}".encode(), value=raw)
        assert p.flush(10) == 0
        t0 = time.monotonic()
        deadline = t0 + 60
        while client.get(f"/v1/content/{victim}").status_code != 404:
            assert time.monotonic() < deadline, "content not removed"
            time.sleep(0.2)
        removed_s = time.monotonic() - t0
        for u in users:
            served = client.get(f"/v1/feeds/{u}", params={"limit": 100}).json()
            assert victim not in {it["content_id"] for it in served["items"]}, u
        assert r.zscore(k.catalogue("mind"), victim) is None
        # the materialised feeds are re-ranked without it once the stage is idle
        while any(
            victim in {it["content_id"] for it in (read_sync(r, u)[1] or {}).get("items", [])}
            for u in users
        ):
            assert time.monotonic() < deadline, "stored feeds still list the unpublished item"
            time.sleep(0.5)
        print(
            f"\nunpublish: out of content and served feeds in {removed_s:.1f} s, "
            f"out of stored feeds in {time.monotonic() - t0:.1f} s"
        )
