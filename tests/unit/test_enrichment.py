"""Unit tests of streams.metadata on real data read in place (MIND news, Drupal Umami article).

The data is read from ``settings().data_dir`` at test time; nothing of it is copied here. Tests
fail (not skip) when the data is missing.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from content_support import content_record as _content

from feedpipe.errors import RejectedInput
from feedpipe.settings import settings
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams import metadata as enrichment
from streams.metadata import enrich

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MIND_ROWS = 2_000


def _data(rel: str) -> Path:
    path = settings().data_dir / rel
    assert path.is_file(), f"real data missing: {path} (set FEEDPIPE_DATA_DIR)"
    return path


def _mind_entities(raw: str) -> list[dict[str, Any]]:
    out = []
    for e in json.loads(raw or "[]"):
        out.append({
            "label": e["Label"],
            "type": e.get("Type"),
            "wikidata_id": e.get("WikidataId"),
            "confidence": float(e["Confidence"]) if e.get("Confidence") is not None else None,
            "origin": "source",
        })
    return out


@pytest.fixture(scope="module")
def mind_contents() -> list[dict[str, Any]]:
    """The MIND news rows as minimal Content records (title, abstract, categories, entities)."""
    rows = []
    with _data("mind/news.tsv").open(encoding="utf-8", newline="") as fh:
        for r in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            nid, cat, subcat, title, abstract, url, t_ent, a_ent = r
            rows.append(_content(
                "mind", nid, kind="mind.news", brand="mind", title=title, summary=abstract,
                url=url or None,
                categories=topology().map_categories("mind", [cat, subcat]),
                source_categories=[cat, subcat],
                entities=_mind_entities(t_ent) + _mind_entities(a_ent),
            ))
    assert len(rows) == MIND_ROWS
    return rows


@pytest.fixture(scope="module")
def mind_enriched(mind_contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    enrichment.warm_up()
    return [enrich(c, NOW) for c in mind_contents]


@pytest.fixture(scope="module")
def drupal_article() -> dict[str, Any]:
    doc = json.loads(_data("drupal/drupal-kit/jsonapi_article_collection.json").read_text("utf-8"))
    attrs = doc["data"][0]["attributes"]
    body = html.unescape(re.sub(r"<[^>]+>", " ", attrs["body"]["value"]))
    return _content("umami", doc["data"][0]["id"], kind="drupal.node", brand="umami",
                    title=attrs["title"], body=" ".join(body.split()), language_hint=None)


def test_mind_rows_detected_english(mind_enriched: list[dict[str, Any]]) -> None:
    english = [e for e in mind_enriched if e["language"] == "en"]
    assert len(english) >= 0.95 * len(mind_enriched), len(english)
    confident = [e for e in english if e["language_confidence"] is not None
                 and e["language_confidence"] >= 0.5]
    assert len(confident) >= 0.9 * len(mind_enriched)
    for e in mind_enriched:
        c = e["language_confidence"]
        assert c is None or 0.0 <= c <= 1.0


def test_drupal_article_detected_german(drupal_article: dict[str, Any]) -> None:
    e = enrich(drupal_article, NOW)
    assert e["language"] == "de"
    assert e["language_confidence"] is not None and e["language_confidence"] > 0.9
    # German Flesch (Amstad) is computed, the English-only fields are not.
    assert e["reading_level"] is not None
    assert e["reading_grade"] is None
    # German sentiment comes from the Chen & Skiena lexicon (asent), or is explained as null.
    assert (e["sentiment"] is not None and -1 <= e["sentiment"] <= 1) or any(
        w.startswith("sentiment: ") for w in e["content"]["ingest_warnings"]
    )
    assert e["keywords"] and all(k == k.lower() for k in e["keywords"])
    # German stop words are not keywords.
    assert not {"der", "die", "und", "das"} & set(e["keywords"])
    codec("EnrichedContent").encode(e)


def test_language_hint_used_for_short_text() -> None:
    c = _content("t", "1", title="Hallo", language_hint="fr-FR")
    e = enrich(c, NOW)
    assert (e["language"], e["language_confidence"]) == ("fr", None)
    # Without a hint the detector's answer is kept, with its probability.
    e2 = enrich(_content("t", "2", title="Hallo"), NOW)
    assert e2["language"] is not None and e2["language_confidence"] is not None


def test_hint_not_used_when_detection_is_confident(drupal_article: dict[str, Any]) -> None:
    e = enrich({**drupal_article, "language_hint": "en"}, NOW)
    assert e["language"] == "de"
    assert e["language_confidence"] is not None


def test_reading_time_formula(mind_enriched: list[dict[str, Any]],
                              mind_contents: list[dict[str, Any]]) -> None:
    assert enrichment.reading_time_seconds(0) == 0
    assert enrichment.reading_time_seconds(1) == 1
    assert enrichment.reading_time_seconds(238) == 60
    assert enrichment.reading_time_seconds(239) == 61  # rounded up
    assert enrichment.reading_time_seconds(476) == 120
    for c, e in zip(mind_contents, mind_enriched, strict=True):
        words = len(re.findall(r"\w+", f"{c['title']} {c['summary']}"))
        assert e["word_count"] == words
        assert e["reading_time_s"] == math.ceil(words * 60 / 238)


def _vader_titles(mind_contents: list[dict[str, Any]], positive: bool) -> list[dict[str, Any]]:
    """MIND rows whose title carries a clearly positive or negative word (picked at test time)."""
    pos = re.compile(r"\b(wonderful|amazing|best|love|happy|celebrat\w*|beautiful|great)\b", re.I)
    neg = re.compile(r"\b(killed|dead|murder\w*|shooting|tragic|crash|attack\w*|dies)\b", re.I)
    want, avoid = (pos, neg) if positive else (neg, pos)
    picked = [
        _content("t", c["source_id"], title=c["title"])
        for c in mind_contents
        if want.search(c["title"]) and not avoid.search(c["title"])
    ]
    assert len(picked) >= 10
    return picked


def test_vader_sign_on_mind_titles(mind_contents: list[dict[str, Any]]) -> None:
    pos = [enrich(c, NOW) for c in _vader_titles(mind_contents, positive=True)]
    neg = [enrich(c, NOW) for c in _vader_titles(mind_contents, positive=False)]
    pos_scores = [e["sentiment"] for e in pos if e["language"] == "en"]
    neg_scores = [e["sentiment"] for e in neg if e["language"] == "en"]
    assert sum(s > 0 for s in pos_scores) >= 0.8 * len(pos_scores)
    assert sum(s < 0 for s in neg_scores) >= 0.8 * len(neg_scores)
    assert all(-1.0 <= s <= 1.0 for s in pos_scores + neg_scores)


def test_keywords_and_reading_scores(mind_enriched: list[dict[str, Any]]) -> None:
    with_kw = [e for e in mind_enriched if e["keywords"]]
    assert len(with_kw) >= 0.99 * len(mind_enriched)
    for e in mind_enriched:
        kws = e["keywords"]
        assert len(kws) <= 10
        assert all(k == k.lower() and k.strip() == k and k for k in kws)
        assert len(set(kws)) == len(kws)
        assert all(len(k.split()) <= 2 for k in kws)
        if e["language"] == "en":
            assert e["reading_level"] is not None and e["reading_grade"] is not None
    # Keywords come from the text.
    for e in mind_enriched[:200]:
        text = f"{e['content']['title']} {e['content']['summary']}".lower()
        assert all(k.split()[0] in text for k in e["keywords"])


def test_english_readability_needs_no_nltk_download() -> None:
    # textstat would fetch NLTK's cmudict for locale 'en*' roots; our en-US locale must not.
    ease, grade = enrichment.reading_scores(
        "The cat sat on the mat. It was a warm day.", "en")
    assert ease is not None and ease > 80
    assert grade is not None and grade < 4
    hard, hard_grade = enrichment.reading_scores(
        "Institutional macroeconomic considerations necessitate comprehensive "
        "reconsideration of intergovernmental responsibilities.", "en")
    assert hard is not None and hard < ease
    assert hard_grade is not None and hard_grade > grade
    assert enrichment.reading_scores("", "en") == (None, None)
    assert enrichment.reading_scores("Some text here.", "ja") == (None, None)


def test_records_encode_and_round_trip(mind_enriched: list[dict[str, Any]],
                                       mind_contents: list[dict[str, Any]]) -> None:
    enc = codec("EnrichedContent")
    schema_fields = {f["name"] for f in enc.entry.parsed["fields"]}
    for c, e in zip(mind_contents[:300], mind_enriched[:300], strict=True):
        assert set(e) == schema_fields
        added = e["content"]["ingest_warnings"][len(c["ingest_warnings"]):]
        assert {**e["content"], "ingest_warnings": c["ingest_warnings"]} == c
        assert e["content"] is c or added
        back = enc.decode(enc.encode(e))
        assert back["content"]["content_id"] == c["content_id"]
        assert back["enriched_at"] == NOW
        assert back["keywords"] == e["keywords"]


def test_topics_contain_mapped_categories(mind_enriched: list[dict[str, Any]]) -> None:
    mapped = 0
    for e in mind_enriched:
        c = e["content"]
        assert e["topics"][: len(c["categories"])] == c["categories"]
        for sc in c["source_categories"]:
            assert sc.lower() in e["topics"] or sc.lower() in c["categories"]
        assert len(set(e["topics"])) == len(e["topics"])
        if {"foodanddrink", "tv", "movies", "music"} & set(c["source_categories"]):
            mapped += 1
            assert {"food-and-drink", "entertainment"} & set(e["topics"])
    assert mapped > 0


def test_topics_slugs_dedup_and_cap() -> None:
    c = _content("t", "1", title="x", categories=["food-and-drink"],
                 source_categories=["Food & Drink", "Food-and-Drink", "  "],
                 tags=[f"Tag {i}" for i in range(40)])
    t = enrich(c, NOW)["topics"]
    assert t[:2] == ["food-and-drink", "food-drink"]
    assert "tag-0" in t
    assert len(t) == 20


def test_entities_with_wikidata_preserved(mind_enriched: list[dict[str, Any]]) -> None:
    with_ids = 0
    for e in mind_enriched:
        source = e["content"]["entities"]
        assert e["entities"][: len(source)] == source
        labels = {s["label"].casefold() for s in source}
        for ent in e["entities"][len(source):]:
            assert ent["origin"] == "extracted" and ent["type"] in ("PER", "ORG", "LOC")
            assert ent["label"].casefold() not in labels
        for ent in source:
            assert ent["origin"] == "source"
            if ent["wikidata_id"]:
                assert re.fullmatch(r"Q\d+", ent["wikidata_id"])
                with_ids += 1
    assert with_ids > 1000


def test_empty_text_gives_empty_fields() -> None:
    e = enrich(_content("t", "empty", language_hint="de"), NOW)
    assert e["word_count"] == 0 and e["reading_time_s"] == 0
    assert e["keywords"] == []
    assert e["reading_level"] is None and e["reading_grade"] is None and e["sentiment"] is None
    assert (e["language"], e["language_confidence"]) == ("de", None)
    codec("EnrichedContent").encode(e)


def test_bad_input_rejected_and_naive_now_refused() -> None:
    with pytest.raises(RejectedInput) as err:
        enrich(_content("t", "bad", title=None, body=42), NOW)
    assert err.value.code == "invalid_content"
    with pytest.raises(RejectedInput):
        enrich(_content("t", "bad", title="ok", tags="not-a-list"), NOW)
    with pytest.raises(ValueError):
        enrich(_content("t", "ok", title="ok"), datetime(2024, 1, 1))


def test_enriched_at_converted_to_utc() -> None:
    local = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    e = enrich(_content("t", "tz", title="A title of some length for the test"), local)
    assert e["enriched_at"] == NOW and e["enriched_at"].utcoffset() == timedelta(0)
