"""streams.normalisers, syndication feeds (``feed.document``: RSS, RDF, Atom, JSON Feed) on the
real feeds of the shared data: item counts and kinds of feeds/realworld, known dates, encodings,
untitled and shared-guid items, every feeds/edge_cases file, sanitising, skipped items, size
caps, and the payload never being opened as a path.

Dates and counts are facts looked up in the files and their PROVENANCE.md.
Helpers: ``normalisers_support``.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from normalisers_support import TOPO, _assert_clean, data, feed_raw, run

from feedpipe.errors import RejectedInput
from streams.normalisers import BODY_MAX_CHARS, normalise

# PROVENANCE.md item counts of feeds/realworld, and the kind feedparser's version gives.
REALWORLD = {
    "rsparser__livemint.xml": (25, "feed.rss"),
    "rsparser__macworld.rss": (30, "feed.rss"),
    "rsparser__kc0011.rss": (20, "feed.rss"),
    "rsparser__bio.rdf": (30, "feed.rss"),
    "rsparser__DaringFireball.atom": (48, "feed.atom"),
    "rsparser__scriptingNews.rss": (50, "feed.rss"),
    "rsparser__EMarley.rss": (10, "feed.rss"),
    "feedjira__HuffPostCanada.xml": (2, "feed.rss"),
    "feedjira__RSSWithComments.xml": (30, "feed.rss"),
    "feedjira__TypePadNews.xml": (10, "feed.atom"),
    "feedjira__AmazonWebServicesBlog.xml": (10, "feed.atom"),
    "feedjira__SamRuby.xml": (20, "feed.atom"),
    "feedjira__FeedBurnerXHTML.xml": (10, "feed.atom"),
    "feedjira__google_alerts_atom.xml": (20, "feed.atom"),
    "feedjira__youtube_atom.xml": (15, "feed.atom"),
    "feedjira__itunes.xml": (3, "feed.rss"),
    "feedjira__json_feed.json": (20, "feed.json"),
}
# Articles about HTML quote markup as text (escaped in the source): allowed, see _assert_clean.
BOZO_LEADING_NEWLINE = {
    "feedjira__AmazonWebServicesBlog.xml",
    "feedjira__SamRuby.xml",
    "feedjira__TypePadNews.xml",
    "feedjira__itunes.xml",
    "feedjira__youtube_atom.xml",
}


@pytest.mark.parametrize("name", sorted(REALWORLD))
def test_realworld_feeds(name: str) -> None:
    count, kind = REALWORLD[name]
    payload = data(f"feeds/realworld/{name}").read_bytes()
    ctype = "application/feed+json" if name.endswith(".json") else "application/xml"
    recs = run(feed_raw(payload, name, ctype))
    assert len(recs) == count
    assert {r["kind"] for r in recs} == {kind}
    assert len({r["content_id"] for r in recs}) == count  # every item keeps its own id
    source_text = payload.decode("utf-8", "replace")
    for rec in recs:
        assert rec["title"] and rec["source"] == "feeds" and rec["brand"] == "feeds"
        _assert_clean(rec, source_text)
        lenient = [w for w in rec["ingest_warnings"] if w.startswith("feed parsed leniently")]
        assert bool(lenient) == (name in BOZO_LEADING_NEWLINE)
    # the same bytes give the same records
    assert run(feed_raw(payload, name, ctype)) == recs


def _feed(name: str) -> list[dict[str, Any]]:
    payload = data(f"feeds/realworld/{name}").read_bytes()
    return run(feed_raw(payload, name))


def test_feed_known_dates() -> None:
    assert _feed("rsparser__macworld.rss")[0]["published_at"] == datetime(
        2017, 11, 28, 23, 40, tzinfo=UTC
    )  # Tue, 28 Nov 2017 15:40:00 -0800
    assert _feed("rsparser__DaringFireball.atom")[0]["published_at"] == datetime(
        2017, 6, 27, 0, 54, 17, tzinfo=UTC
    )
    assert _feed("rsparser__bio.rdf")[0]["published_at"] == datetime(2019, 8, 27, tzinfo=UTC)
    # 2013-01-30T10:12:03-08:00, Atom <updated> only
    sam = _feed("feedjira__SamRuby.xml")
    assert datetime(2013, 1, 30, 18, 12, 3, tzinfo=UTC) in {r["updated_at"] for r in sam}


def test_feed_kc0011_gb18030_and_slash_dates() -> None:
    payload = data("feeds/realworld/rsparser__kc0011.rss").read_bytes()
    recs = run(feed_raw(payload, "kc0011"))
    text = payload.decode("gb18030")
    first_title = re.search(r"<item><title>(.*?)</title>", text, re.S)
    assert first_title is not None
    assert recs[0]["title"] == html.unescape(first_title.group(1)).strip()
    assert recs[0]["language_hint"] == "zh"
    # <pubDate>2020/1/10 14:33:00</pubDate>: feedparser alone reads 2020-11-01
    assert recs[0]["published_at"] == datetime(2020, 1, 10, 14, 33, tzinfo=UTC)
    assert any("no time zone" in w for w in recs[0]["ingest_warnings"])


def test_feed_scripting_news_untitled_items() -> None:
    recs = _feed("rsparser__scriptingNews.rss")
    derived = [
        r for r in recs if "item has no title; title taken from its text" in r["ingest_warnings"]
    ]
    assert len(recs) == 50 and len(derived) == 39
    for r in derived:
        assert r["title"] and len(r["title"]) <= 121
        assert (r["summary"] or r["body"]).startswith(r["title"].rstrip("…"))


def test_feed_shared_guid_items_kept_apart() -> None:
    """Scripting News repeats two guids for different items: both items survive."""
    recs = _feed("rsparser__scriptingNews.rss")
    dups = [r for r in recs if "#dup-" in r["source_id"]]
    assert len(dups) == 2
    for d in dups:
        base = d["source_id"].split("#dup-")[0]
        first = next(r for r in recs if r["source_id"] == base)
        assert first["title"] != d["title"] or first["summary"] != d["summary"]
        assert any("is shared with an earlier item" in w for w in d["ingest_warnings"])


def test_json_feed_fields() -> None:
    payload = data("feeds/realworld/feedjira__json_feed.json").read_bytes()
    doc = json.loads(payload)
    # detected from the bytes, whatever the declared type
    recs = run(feed_raw(payload, "json", "application/octet-stream"))
    assert [r["source_id"] for r in recs] == [i["id"] for i in doc["items"]]
    assert all(r["authors"] == [doc["author"]["name"]] for r in recs)
    assert recs[0]["language_hint"] == "en"
    # 2017-06-02T22:05:47-07:00
    assert recs[0]["published_at"] == datetime(2017, 6, 3, 5, 5, 47, tzinfo=UTC)


def test_every_edge_case_returns_items_or_rejects() -> None:
    files = sorted(data("feeds/edge_cases").iterdir())
    assert len(files) == 13
    outcome: dict[str, Any] = {}
    for path in files:
        try:
            outcome[path.name] = len(run(feed_raw(path.read_bytes(), path.name)))
        except RejectedInput as exc:
            assert exc.code in {"malformed_feed", "no_usable_items", "empty_payload"}
            assert exc.reason
            outcome[path.name] = exc.code
    p = "feedparser__"
    assert outcome[p + "illformed__rss_empty_document.xml"] == "malformed_feed"
    assert outcome[p + "illformed__aaa_illformed.xml"] == "malformed_feed"
    assert (
        outcome[p + "wellformed__sanitize__large_atom_feed_that_needs_css_sanitisation.xml"] == 15
    )
    double = run(
        feed_raw(data(f"feeds/edge_cases/{p}encoding__bozo_double-encoded-html.xml").read_bytes())
    )
    assert double[0]["title"] == "\u2026"  # the file's own expectation: ord(...) == 8230
    assert any("feed parsed leniently" in w for w in double[0]["ingest_warnings"])


def test_large_css_feed_is_sanitised() -> None:
    path = data(
        "feeds/edge_cases/feedparser__wellformed__sanitize__large_atom_feed_that_needs_css_sanitisation.xml"
    )
    recs = run(feed_raw(path.read_bytes()))
    for r in recs:
        _assert_clean(r)
        assert "style=" not in r["body"] and "font-family" not in r["body"]


def _rss(*items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        + "".join(f"<item>{i}</item>" for i in items)
        + "</channel></rss>"
    ).encode()


def test_feed_skipped_items_and_caps() -> None:
    recs = run(feed_raw(_rss("<title>Kept</title><guid>a</guid>", "<link>http://x/</link>")))
    assert len(recs) == 1
    assert (
        "1 of 2 items in this feed document were skipped: no title, summary or content"
        in (recs[0]["ingest_warnings"])
    )
    with pytest.raises(RejectedInput) as exc:
        normalise(feed_raw(_rss("<link>http://x/</link>", "<guid>b</guid>")), TOPO)
    assert exc.value.code == "no_usable_items"
    big = "<p>" + "word " * 60_000 + "</p>"
    atom = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><id>x</id>'
        f'<title>Big</title><content type="html">{html.escape(big)}</content></entry></feed>'
    ).encode()
    (rec,) = run(feed_raw(atom))
    assert len(rec["body"]) == BODY_MAX_CHARS
    assert any(w.startswith("body cut from") for w in rec["ingest_warnings"])
    bad_date = run(feed_raw(_rss("<title>T</title><guid>g</guid><pubDate>not a date</pubDate>")))
    assert bad_date[0]["published_at"] is None
    assert any("unparseable date" in w for w in bad_date[0]["ingest_warnings"])
    for empty in (b"", b"  \n"):
        with pytest.raises(RejectedInput) as exc:
            normalise(feed_raw(empty), TOPO)
        assert exc.value.code == "empty_payload"


def test_feed_payload_is_never_opened_as_a_path(tmp_path: Path) -> None:
    """feedparser.parse(bytes) would open a local file named by the bytes; we pass a stream."""
    local = tmp_path / "feed.xml"
    local.write_bytes(_rss("<title>Local file</title><guid>secret</guid>"))
    with pytest.raises(RejectedInput):
        normalise(feed_raw(str(local).encode()), TOPO)


def test_hash_source_id_when_no_guid_or_link() -> None:
    a = run(feed_raw(_rss("<title>Same</title><pubDate>Tue, 28 Nov 2017 15:40:00 -0800</pubDate>")))
    b = run(feed_raw(_rss("<title>Same</title><pubDate>Tue, 28 Nov 2017 15:40:00 -0800</pubDate>")))
    c = run(
        feed_raw(_rss("<title>Other</title><pubDate>Tue, 28 Nov 2017 15:40:00 -0800</pubDate>"))
    )
    assert a[0]["source_id"].startswith("sha256:") and a[0]["content_id"] == b[0]["content_id"]
    assert c[0]["content_id"] != a[0]["content_id"]
