"""Live content similarity on real Redis and Kafka: items enriched (their text vectors) and
materialised by the enrich stage's code, clicks applied by the click path; a reader who clicks
items about football sees an unclicked football item rise in their learned feed, with the
``similarity`` value in its explanation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from clickpath_support import T0, Sent, apply, reader, records, stored_feed, with_path

from feedpipe.ids import content_id
from feedpipe.model import interest
from feedpipe.model.text import similarity
from feedpipe.rank.components import contributions
from feedpipe.store.keys import keys
from feedpipe.store.profiles import read_sync
from feedpipe.topology import WeightSet, topology

pytestmark = pytest.mark.integration

ITEMS = {
    "foot1": ("Football club wins the championship final",
              "The striker scored twice as the football club beat its rivals in the final."),
    "foot2": ("Football striker joins a new club",
              "The championship club signed the striker after the football final."),
    "foot3": ("Football final: the club celebrates the championship",
              "Supporters of the football club celebrated the striker and the final win."),
    "vote1": ("Parliament election results announced",
              "Voters elected a new parliament; the election turnout was the highest in years."),
    "vote2": ("Parliament election campaign begins",
              "Parties campaign for votes before the parliament election next month."),
    "vote3": ("Election commission counts parliament votes",
              "The commission counted the votes of the parliament election overnight."),
}


def _content(name: str, title: str, summary: str, at: datetime) -> dict[str, Any]:
    """A feedpipe.Content record of brand mind, category news."""
    return {
        "content_id": content_id("simil", name), "source": "simil", "source_id": name,
        "kind": "test", "brand": "mind", "status": "published", "title": title,
        "summary": summary, "body": "", "url": None, "published_at": at, "updated_at": at,
        "categories": ["news"], "language_hint": None, "content_hash": uuid.uuid4().hex * 2,
        "raw_event_id": "0" * 64,
        **{f: [] for f in ("authors", "source_categories", "tags", "media", "entities",
                           "ingest_warnings")},
    }


def _materialise() -> dict[str, str]:
    """Enrich ``ITEMS`` and write them with the enrich stage's code; name -> content id."""
    from streams import runtime
    from streams.metadata import enrich
    from streams.stages.enrich import content_json, materialise

    now = T0 - timedelta(hours=2)
    docs, ids = [], {}
    for name, (title, summary) in ITEMS.items():
        rec = enrich(_content(name, title, summary, now), now)
        assert rec["text_vector"], name
        docs.append(content_json(rec))
        ids[name] = rec["content"]["content_id"]

    async def go() -> None:
        runtime.redis_client.cache_clear()
        try:
            await materialise(docs)
        finally:
            await runtime.redis_client().aclose()
            runtime.redis_client.cache_clear()

    asyncio.run(go())
    return ids


def test_clicks_about_a_subject_raise_an_unclicked_item_about_it(
    kafka_bootstrap: str,
    topics_applied: Any,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from feedpipe.rank.weights import RankingConfig
    from streams.clickpath.catalogue import REGISTRY

    ids = _materialise()
    assert b"text_vector" not in (redis_client.get(keys().content(ids["foot1"])) or b"")
    topo = topology()
    learned = topo.ranker_config().weight_sets["learned-mind"]
    ws = WeightSet(ranker="learned", version=1, weights={
        **dict.fromkeys(learned.weights, 0.0), "similarity": 1.0})
    rc = topo.ranker_config()
    rc = rc.model_copy(update={"weight_sets": {**rc.weight_sets, "simil": ws},
                               "brands": {"default": "simil", "mind": "simil"}})
    cfg = RankingConfig(rc, {}, 0, 1)
    # the registry object every click-path module imported serves this config
    monkeypatch.setattr(REGISTRY, "current", lambda: cfg)
    u = f"U{uuid.uuid4().hex[:8]}"
    first = [reader(u, "click", ids["vote1"], T0)]
    then = [reader(u, "click", ids["foot1"], T0 + timedelta(minutes=5)),
            reader(u, "click", ids["foot3"], T0 + timedelta(minutes=6))]
    feeds: list[dict[str, Any]] = []

    async def body(path: Any, sent: Sent) -> None:
        await apply(path, records(u, first, 0))
        feeds.append(stored_feed(redis_client, u))
        await apply(path, records(u, then, len(first)))
        feeds.append(stored_feed(redis_client, u))

    asyncio.run(with_path(kafka_bootstrap, body))
    before, after = ({it["content_id"]: it for it in f["items"]} for f in feeds)
    foot2, vote2 = ids["foot2"], ids["vote2"]
    # after one election read: the election items lead, football ones score 0
    assert before[vote2]["similarity"] > 0.2 and before[foot2]["similarity"] == 0.0
    assert before[vote2]["rank"] < before[foot2]["rank"]
    # two football reads later: the unclicked football item rose above the election items
    assert after[foot2]["similarity"] > after[vote2]["similarity"] > 0.0
    assert after[foot2]["rank"] == 1 < before[foot2]["rank"]
    assert ids["foot1"] not in after and ids["foot3"] not in after  # read items left the feed
    # explain: the value and its contribution, the same number as the evaluation's function
    profile = read_sync(redis_client, u)[0] or {}
    stored = profile[interest.FIELD]
    assert len(stored) <= 180
    item_vec = {int(k): w for k, w in redis_meta_text(redis_client, foot2)}
    want = similarity(interest.interest_of(profile), [item_vec])[0]
    # (feed values are stored as float32 by the compact feed codec)
    assert after[foot2]["similarity"] == pytest.approx(want, rel=1e-5)
    assert (contributions(after[foot2]) or {})["similarity"] == pytest.approx(want, rel=1e-5)
    assert after[foot2]["score"] == pytest.approx(want, rel=1e-5)


def redis_meta_text(r: redis.Redis, cid: str) -> list[list[float]]:
    """The text vector stored in an item's meta (``[[index, weight], ...]``)."""
    import orjson

    raw = r.get(keys().meta(cid))
    assert raw is not None
    return list(orjson.loads(raw)["text"])

