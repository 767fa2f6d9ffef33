"""Golden expectations of every real capture in the shared data dir through `feedpipe inspect`
(connector readers -> wire codec -> normaliser -> enrichment, no Kafka or Redis).

tests/unit/golden_enrichment.json holds, per file: outcome counts (``enriched`` or
``<stage>:<DLQ reason>``), detected languages, extracted entities, items with topics derived
from the text, and items with a sentiment score. A change to the normalisers or the
enrichment that moves any of these shows up here, file by file.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from normalisers_support import data

from ops.inspect import guess_kind, inspect_file, to_json_line
from streams.metadata import tone

GOLDEN: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "golden_enrichment.json").read_text(encoding="utf-8")
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
RUSSIAN = (
    "feeds/edge_cases/"
    "feedparser__wellformed__sanitize__large_atom_feed_that_needs_css_sanitisation.xml"
)


def summarise(path: Path) -> dict[str, Any]:
    """The golden summary of one capture (see the module docstring)."""
    outcomes: collections.Counter[str] = collections.Counter()
    langs: collections.Counter[str] = collections.Counter()
    extracted = derived = scored = 0
    for o in inspect_file(path, now=NOW):
        if o["result"] != "enriched":
            outcomes[f'{o["stage"]}:{o["code"]}'] += 1
            continue
        r = o["record"]
        outcomes["enriched"] += 1
        langs[r["language"] or "none"] += 1
        extracted += sum(e["origin"] == "extracted" for e in r["entities"])
        source = set(r["content"]["categories"]) | {t.lower() for t in r["content"]["tags"]}
        derived += any(t not in source for t in r["topics"])
        scored += r["sentiment"] is not None
    return {"outcomes": dict(outcomes), "languages": dict(langs), "extracted": extracted,
            "derived_topics": derived, "sentiment": scored}


@pytest.mark.parametrize("rel", sorted(GOLDEN))
def test_capture_matches_golden(rel: str) -> None:
    assert summarise(data(rel)) == GOLDEN[rel]


def test_every_capture_has_a_golden_entry() -> None:
    base = data("feeds").parent
    found = {
        str(p.relative_to(base))
        for sub in ("feeds/realworld", "feeds/edge_cases", "wordpress", "drupal", "cdc")
        for p in (base / sub).rglob("*")
        if p.is_file() and p.suffix != ".md"
    }
    assert found | {"mind/news.tsv"} == set(GOLDEN)


def test_kind_guessed_per_capture() -> None:
    cases = {
        "feeds/realworld/feedjira__json_feed.json": "rss",
        "feeds/realworld/rsparser__bio.rdf": "rss",
        "wordpress/frontity/posts.json": "wordpress",
        "drupal/drupal-kit/jsonapi_article_collection.json": "drupal",
        "drupal/drupal-kit/jsonapi_multiple_errors.json": "drupal",
        "cdc/debezium__serde-with-schema.json": "debezium",
        "cdc/debezium__serde-unwrapped.json": "debezium",
        "mind/news.tsv": "mind",
    }
    for rel, kind in cases.items():
        p = data(rel)
        assert guess_kind(p.name, p.read_bytes()) == kind, rel


def test_koi8r_feed_labelled_utf8_is_decoded(tmp_path: Path) -> None:
    """A Russian feed stored as KOI8-R under an XML declaration saying UTF-8 (the failure
    that published "ëÁË ÐÅÒÅÖÉÔØ…" as language 'gcf')."""
    text = data(RUSSIAN).read_text(encoding="utf-8")
    p = tmp_path / "koi8.xml"
    p.write_bytes(text.encode("koi8-r", "replace"))
    out = list(inspect_file(p, "rss", now=NOW))
    reference = list(inspect_file(data(RUSSIAN), "rss", now=NOW))
    assert [o["result"] for o in out] == ["enriched"] * len(reference)
    for got, want in zip(out, reference, strict=True):
        assert got["record"]["content"]["title"] == want["record"]["content"]["title"]
        assert got["record"]["language"] == "ru"
        assert any("koi8_r" in w for w in got["record"]["content"]["ingest_warnings"])


def test_remaining_mojibake_goes_to_dlq_with_reason_encoding(tmp_path: Path) -> None:
    """KOI8-R bytes read as Latin-1 and saved as valid UTF-8: no charset can undo it and ftfy
    cannot repair it, so no item is published."""
    text = data(RUSSIAN).read_text(encoding="utf-8")
    garbled = text.encode("koi8-r", "replace").decode("latin-1")
    p = tmp_path / "mojibake.xml"
    p.write_text(garbled, encoding="utf-8")
    out = list(inspect_file(p, "rss", now=NOW))
    assert out and {(o["result"], o["stage"], o["code"]) for o in out} == {
        ("rejected", "enrich", "encoding")
    }


def test_undetermined_language_and_null_sentiment_are_explained() -> None:
    items = [o["record"] for o in inspect_file(data("wordpress/frontity/post-60-comments.json"),
                                              now=NOW) if o["result"] == "enriched"]
    und = [r for r in items if r["language"] == "und"]
    assert und
    for r in und:
        assert r["sentiment"] is None
        assert any(w.startswith("language undetermined") for w in r["content"]["ingest_warnings"])
    detail = data("drupal/drupal-kit/jsonapi_article_detail.json")
    german = [o["record"] for o in inspect_file(detail, now=NOW) if o["result"] == "enriched"]
    assert german and german[0]["language"] == "de"
    assert german[0]["sentiment"] is not None and -1 <= german[0]["sentiment"] <= 1
    japanese = [
        o["record"]
        for o in inspect_file(data("feeds/edge_cases/feedparser__illformed__chardet__shiftjis.xml"),
                              now=NOW)
        if o["result"] == "enriched"
    ]
    assert japanese and japanese[0]["language"] == "ja" and japanese[0]["sentiment"] is None
    assert any(w.startswith("sentiment: ") for w in japanese[0]["content"]["ingest_warnings"])


def test_english_feed_without_tags_gets_entities_and_topics() -> None:
    items = [o["record"] for o in inspect_file(data("feeds/realworld/rsparser__livemint.xml"),
                                              now=NOW) if o["result"] == "enriched"]
    untagged = [r for r in items if not r["content"]["tags"] and not r["content"]["categories"]]
    assert untagged
    for r in untagged:
        assert r["topics"]
    kinds = {e["type"] for r in items for e in r["entities"] if e["origin"] == "extracted"}
    assert {"PER", "ORG", "LOC"} <= kinds


def test_cli_prints_one_json_object_per_line() -> None:
    path = data("drupal/drupal-kit/jsonapi_article_collection.json")
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "inspect", str(path)],
        capture_output=True, check=True, timeout=300,
    )
    lines = proc.stdout.decode("utf-8").splitlines()
    objs = [json.loads(line) for line in lines]
    assert len(objs) == GOLDEN["drupal/drupal-kit/jsonapi_article_collection.json"]["outcomes"][
        "enriched"]
    assert all(o["result"] == "enriched" and o["record"]["language"] == "de" for o in objs)
    assert to_json_line({"result": "x", "b": b"\xff"}).endswith(b"\n")


def test_lexicon_sentiment_does_not_depend_on_other_languages_scored_before() -> None:
    """asent keeps one lexicon in global spaCy extensions: scoring Spanish, then French, then
    Spanish again gives the same Spanish score."""
    es = "Un terrible accidente mató a tres personas."
    first = tone.sentiment(es, "es")
    assert first[0] is not None and first[0] < 0
    tone.sentiment("Un succès formidable et une victoire magnifique.", "fr")
    assert tone.sentiment(es, "es") == first
    assert tone.sentiment(es, "tlh") == (None, "sentiment: no model for language 'tlh'")
