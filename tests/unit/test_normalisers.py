"""streams.normalisers on the real shared data (read in place; missing data fails loudly).

Expected text values are computed at test time from the files themselves (no data is copied
here); dates and counts are facts looked up in the files and their PROVENANCE.md.
"""

from __future__ import annotations

import copy
import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from feedpipe.cms.drupal import split_collection
from feedpipe.cms.events import Op, cms_event
from feedpipe.cms.wordpress import split_posts
from feedpipe.errors import RejectedInput
from feedpipe.ids import content_id
from feedpipe.settings import settings
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.normalisers import (
    BODY_MAX_CHARS,
    KINDS,
    content_hash,
    html_to_text,
    normalise,
)

TOPO = topology()
TAG = re.compile(r"<[A-Za-z/!?][^>]*>")
ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z]+\d*);")

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


def data(rel: str) -> Path:
    """A path under the shared data dir; fails (not skips) when the data is missing."""
    path = settings().data_dir / rel
    assert path.exists(), f"shared data missing: {path} (set FEEDPIPE_DATA_DIR)"
    return path


def make_raw(
    kind: str,
    payload: bytes,
    *,
    source: str,
    brand: str,
    content_type: str,
    origin: str,
    op: Op = "upsert",
    source_id: str | None = None,
) -> dict[str, Any]:
    """A decoded RawCmsEvent as a connector builds it (:func:`feedpipe.cms.events.cms_event`)."""
    return cms_event(
        kind=kind,
        source=source,
        brand=brand,
        source_id=source_id,
        payload=payload,
        content_type=content_type,
        origin=origin,
        fallback_id=origin,
        op=op,
    )


def wp_raw(post: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return make_raw(
        "wordpress.post",
        orjson.dumps(post),
        source="frontity-wp",
        brand="frontity",
        content_type="application/json",
        origin="wordpress/frontity",
        **kw,
    )


def drupal_raw(doc: Any, **kw: Any) -> dict[str, Any]:
    return make_raw(
        "drupal.node",
        orjson.dumps(doc),
        source="umami-drupal",
        brand="umami",
        content_type="application/vnd.api+json",
        origin="drupal/drupal-kit",
        **kw,
    )


def feed_raw(payload: bytes, name: str = "feed", content_type: str = "application/xml") -> dict:
    return make_raw(
        "feed.document",
        payload,
        source="feeds",
        brand="feeds",
        content_type=content_type,
        origin=name,
    )


def mind_raw(line: bytes) -> dict[str, Any]:
    return make_raw(
        "mind.news",
        line,
        source="mind",
        brand="mind",
        content_type="text/tab-separated-values",
        origin="mind/news.tsv",
    )


def run(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Normalise, and check every record against the Avro schema and its own hash."""
    records = normalise(raw, TOPO)
    c = codec("Content")
    field_names = [f["name"] for f in c.entry.parsed["fields"]]
    for rec in records:
        assert list(rec) == field_names
        decoded = c.decode(c.encode(rec))
        assert decoded == rec  # timestamps already UTC whole milliseconds
        assert content_hash(decoded) == rec["content_hash"]
        assert rec["content_id"] == content_id(rec["source"], rec["source_id"])
        assert rec["raw_event_id"] == raw["event_id"]
        for ts in (rec["published_at"], rec["updated_at"]):
            assert ts is None or ts.utcoffset() == timedelta(0)
    return records


def _assert_clean(rec: dict[str, Any], source_text: str | None = None) -> None:
    """No markup or undecoded entity in the text fields. Tag-shaped text is allowed only when
    the source carried it escaped (an article quoting ``&lt;td&gt;``)."""
    for key in ("title", "summary", "body"):
        text = rec[key]
        assert "&amp;" not in text, (key, text[:200])
        for m in ENTITY.finditer(text):
            assert source_text is not None and html.escape(m.group(0), quote=False) in source_text
        for m in TAG.finditer(text):
            assert source_text is not None, (key, m.group(0))
            assert html.escape(m.group(0), quote=False) in source_text, (key, m.group(0))
    assert "\n" not in rec["title"] and rec["title"] == rec["title"].strip()


# --- text ------------------------------------------------------------------------------------


def test_html_to_text_blocks_entities_scripts() -> None:
    html_in = (
        "<div><p>One &amp; two&#8217;s&nbsp;&nbsp; three</p><script>alert(1)</script>"
        "<style>p{color:red}</style><!-- note --><ul><li>a</li><li>b</li></ul>"
        '<p style="x">Last<br>line</p></div>'
    )
    assert html_to_text(html_in) == "One & two\u2019s three\n* a\n* b\nLast\nline"
    assert html_to_text("") == "" and html_to_text("<p> </p>") == ""
    assert html_to_text("a < b") == "a < b"


# --- WordPress -------------------------------------------------------------------------------


def _wp_posts(name: str) -> list[dict[str, Any]]:
    return split_posts(orjson.loads(data(f"wordpress/frontity/{name}").read_bytes()))


@pytest.mark.parametrize(
    ("name", "count"), [("posts.json", 3), ("posts-from-category-7.json", 5), ("post-60.json", 1)]
)
def test_wordpress_files(name: str, count: int) -> None:
    posts = _wp_posts(name)
    assert len(posts) == count
    for post in posts:
        (rec,) = run(wp_raw(post))
        assert rec["kind"] == "wordpress.post" and rec["source_id"] == str(post["id"])
        assert rec["content_id"] == content_id("frontity-wp", str(post["id"]))
        expected_title = " ".join(html.unescape(post["title"]["rendered"]).split())
        assert rec["title"] == expected_title
        assert rec["url"] == post["link"] and rec["status"] == "published"
        terms = [t for group in post["_embedded"]["wp:term"] for t in group]
        cats = [t["name"] for t in terms if t["taxonomy"] == "category"]
        assert rec["source_categories"] == cats
        assert rec["tags"] == [t["name"] for t in terms if t["taxonomy"] == "post_tag"]
        assert rec["categories"] == TOPO.map_categories("frontity", cats)
        assert rec["authors"] == [a["name"] for a in post["_embedded"]["author"]]
        assert rec["published_at"] == datetime.fromisoformat(post["date_gmt"]).replace(tzinfo=UTC)
        assert len(rec["body"]) > 50 and rec["summary"]
        assert rec["ingest_warnings"] == []
        _assert_clean(rec)


def test_wordpress_post_60_known_values() -> None:
    (post,) = _wp_posts("post-60.json")
    (rec,) = run(wp_raw(post))
    assert rec["published_at"] == datetime(2016, 11, 25, 18, 31, 11, tzinfo=UTC)
    assert rec["updated_at"] == datetime(2018, 3, 22, 17, 9, 55, tzinfo=UTC)
    fm = post["_embedded"]["wp:featuredmedia"][0]
    assert rec["media"] == [
        {"url": fm["source_url"], "type": "image", "caption": None, "width": 5000, "height": 3025}
    ]
    # a paragraph per <p>: the body has several lines, each of them text of the content HTML
    assert rec["body"].count("\n") >= 3
    # uncategorized -> general through the frontity taxonomy
    hello = next(p for p in _wp_posts("posts.json") if p["id"] == 1)
    assert run(wp_raw(hello))[0]["categories"] == ["general"]


def test_wordpress_status_delete_and_errors() -> None:
    (post,) = _wp_posts("post-60.json")
    for status in ("draft", "private", "trash", "pending", "future"):
        assert run(wp_raw({**post, "status": status}))[0]["status"] == "unpublished"
    published = run(wp_raw({**post, "status": "publish"}))[0]
    deleted = run(wp_raw(post, op="delete"))[0]
    assert published["status"] == "published" and deleted["status"] == "unpublished"
    assert deleted["content_id"] == published["content_id"]
    assert deleted["content_hash"] != published["content_hash"]
    (tomb,) = run(wp_raw({}, op="delete", source_id="60") | {"payload": b""})
    assert tomb["status"] == "unpublished" and tomb["content_id"] == published["content_id"]
    wrapped = run(wp_raw({"deleted": True, "previous": post}, op="delete"))[0]
    assert wrapped["title"] == published["title"] and wrapped["status"] == "unpublished"

    no_embed = {k: v for k, v in post.items() if k != "_embedded"}
    rec = run(wp_raw(no_embed))[0]
    assert rec["authors"] == [] and rec["media"] == [] and rec["ingest_warnings"]

    with pytest.raises(RejectedInput) as exc:
        normalise(wp_raw(_wp_posts("posts.json")), TOPO)  # type: ignore[arg-type]
    assert exc.value.code == "not_a_post"
    err = {"code": "rest_post_invalid_id", "message": "Invalid post ID.", "data": {"status": 404}}
    with pytest.raises(RejectedInput) as exc:
        normalise(wp_raw(err), TOPO)
    assert exc.value.code == "wordpress_error" and "404 rest_post_invalid_id" in exc.value.reason
    with pytest.raises(RejectedInput) as exc:
        normalise(wp_raw({**post, "title": {"rendered": "<b> </b>"}}), TOPO)
    assert exc.value.code == "missing_title"


def test_determinism_and_hash_scope() -> None:
    (post,) = _wp_posts("post-60.json")
    a = run(wp_raw(post))[0]
    b = run(wp_raw(copy.deepcopy(post)))[0]
    assert a == b
    other_event = run(wp_raw(post) | {"event_id": "another"})[0]
    assert other_event["content_hash"] == a["content_hash"]
    assert other_event["raw_event_id"] == "another"
    changed = run(wp_raw({**post, "title": {"rendered": "Another title"}}))[0]
    assert changed["content_id"] == a["content_id"] and changed["content_hash"] != a["content_hash"]


# --- Drupal ----------------------------------------------------------------------------------


def _drupal(name: str) -> Any:
    return orjson.loads(data(f"drupal/drupal-kit/{name}").read_bytes())


def test_drupal_collection_split_and_normalise() -> None:
    doc = _drupal("jsonapi_article_collection.json")
    singles = split_collection(doc)
    assert len(singles) == 8
    recs = [run(drupal_raw(s))[0] for s in singles]
    assert [r["source_id"] for r in recs] == [d["id"] for d in doc["data"]]
    for rec, item in zip(recs, doc["data"], strict=True):
        attrs = item["attributes"]
        assert rec["kind"] == "drupal.node" and rec["status"] == "published"
        assert rec["title"] == attrs["title"]
        assert rec["language_hint"] == "de"
        assert rec["url"] == "https://my-drupal.com" + attrs["path"]["alias"]
        assert rec["published_at"] == datetime.fromisoformat(attrs["created"])
        assert rec["updated_at"] == datetime.fromisoformat(attrs["changed"])
        assert rec["summary"] == " ".join(attrs["body"]["summary"].split())
        assert len(rec["body"]) > len(rec["summary"])
        assert len(rec["media"]) == 1 and rec["media"][0]["type"] == "other"
        _assert_clean(rec)
    assert recs[0]["published_at"] == datetime(2023, 1, 27, 9, 38, 39, tzinfo=UTC)
    assert len({r["content_id"] for r in recs}) == 8
    # the unsplit collection is refused, naming the helper
    with pytest.raises(RejectedInput) as exc:
        normalise(drupal_raw(doc), TOPO)
    assert exc.value.code == "not_an_article" and "split_collection" in exc.value.reason


def test_drupal_detail_and_unpublished() -> None:
    doc = _drupal("jsonapi_article_detail.json")
    (rec,) = run(drupal_raw(doc))
    assert rec["source_id"] == doc["data"]["id"]
    assert rec["content_id"] == content_id("umami-drupal", doc["data"]["id"])
    doc["data"]["attributes"]["status"] = False
    assert run(drupal_raw(doc))[0]["status"] == "unpublished"


@pytest.mark.parametrize("name", ["jsonapi_include_error.json", "jsonapi_multiple_errors.json"])
def test_drupal_error_documents(name: str) -> None:
    doc = _drupal(name)
    with pytest.raises(RejectedInput) as exc:
        normalise(drupal_raw(doc), TOPO)
    assert exc.value.code == "jsonapi_error"
    parts = exc.value.reason.split("; ")
    assert len(parts) == len(doc["errors"])
    for part, err in zip(parts, doc["errors"], strict=True):
        assert part == f"{err['status']} {err['title']}: {err['detail']}"


@pytest.mark.parametrize("name", ["jsonapi_index.json", "jsonapi_index_error.json"])
def test_drupal_not_articles(name: str) -> None:
    doc = _drupal(name)
    assert split_collection(doc) == [doc]
    with pytest.raises(RejectedInput) as exc:
        normalise(drupal_raw(doc), TOPO)
    assert exc.value.code == "not_an_article"


def test_drupal_relationships_resolved_through_included() -> None:
    """Real article resource plus synthetic included user, tags, media and file resources."""
    item = _drupal("jsonapi_article_collection.json")["data"][0]
    uid = item["relationships"]["uid"]["data"]
    media_ref = item["relationships"]["field_media"]["data"]
    item = copy.deepcopy(item)
    item["relationships"]["field_tags"] = {
        "data": [
            {"type": "taxonomy_term--tags", "id": "t1"},
            {"type": "taxonomy_term--tags", "id": "t2"},
        ]
    }
    included = [
        {"type": "user--user", "id": uid["id"], "attributes": {"display_name": "Test Author"}},
        {"type": "taxonomy_term--tags", "id": "t1", "attributes": {"name": "Alpha"}},
        {"type": "taxonomy_term--tags", "id": "t2", "attributes": {"name": "Beta"}},
        {"type": "taxonomy_term--tags", "id": "unused", "attributes": {"name": "Unused"}},
        {
            "type": media_ref["type"],
            "id": media_ref["id"],
            "attributes": {"name": "Photo"},
            "relationships": {
                "field_media_image": {
                    "data": {
                        "type": "file--file",
                        "id": "f1",
                        "meta": {"alt": "Alt text", "width": 800, "height": 600},
                    }
                }
            },
        },
        {"type": "file--file", "id": "f1", "attributes": {"uri": {"url": "/files/x.jpg"}}},
    ]
    collection = {"data": [item], "included": included}
    (single,) = split_collection(collection)
    assert {r["id"] for r in single["included"]} == {uid["id"], "t1", "t2", media_ref["id"], "f1"}
    (rec,) = run(drupal_raw(single))
    assert rec["authors"] == ["Test Author"]
    assert rec["tags"] == ["Alpha", "Beta"] and rec["categories"] == ["alpha", "beta"]
    assert rec["media"] == [
        {
            "url": "https://my-drupal.com/files/x.jpg",
            "type": "image",
            "caption": "Alt text",
            "width": 800,
            "height": 600,
        }
    ]


# --- feeds -----------------------------------------------------------------------------------


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


# --- MIND ------------------------------------------------------------------------------------


def test_mind_all_rows() -> None:
    lines = data("mind/news.tsv").read_bytes().splitlines(keepends=True)
    assert len(lines) == 2000
    ids = set()
    with_entities = 0
    for line in lines:
        cols = line.decode("utf-8").rstrip("\r\n").split("\t")
        (rec,) = run(mind_raw(line))
        ids.add(rec["content_id"])
        assert rec["source_id"] == cols[0] and rec["kind"] == "mind.news"
        assert rec["title"] == " ".join(cols[3].split())
        assert rec["summary"] == " ".join(cols[4].split()) and rec["body"] == ""
        assert rec["source_categories"] == [c for c in dict.fromkeys([cols[1], cols[2]]) if c]
        assert rec["tags"] == [cols[2]]
        assert rec["categories"] == TOPO.map_categories("mind", [cols[1]])
        assert rec["language_hint"] == "en" and rec["published_at"] is None
        assert rec["url"] == (cols[5] or None)
        expected = {e["WikidataId"] for col in (cols[6], cols[7]) for e in json.loads(col or "[]")}
        got = [e["wikidata_id"] for e in rec["entities"]]
        assert len(got) == len(set(got)) and set(got) == expected
        assert all(e["origin"] == "source" for e in rec["entities"])
        with_entities += bool(got)
    assert len(ids) == 2000 and with_entities > 1000
    foodanddrink = next(line for line in lines if line.split(b"\t")[1] == b"foodanddrink")
    assert run(mind_raw(foodanddrink))[0]["categories"] == ["food-and-drink"]


def test_mind_bad_rows() -> None:
    line = data("mind/news.tsv").read_bytes().splitlines()[0]
    for bad in (
        b"\t".join(line.split(b"\t")[:7]),
        line + b"\textra",
        b"\t" + line.split(b"\t", 1)[1],
    ):
        with pytest.raises(RejectedInput) as exc:
            normalise(mind_raw(bad), TOPO)
        assert exc.value.code == "bad_tsv_row"
    with pytest.raises(RejectedInput) as exc:
        normalise(mind_raw(b"\xff\xfe" + line), TOPO)
    assert exc.value.code == "invalid_encoding"


# --- dispatch --------------------------------------------------------------------------------


def test_dispatch_errors() -> None:
    raw = mind_raw(b"x")
    with pytest.raises(RejectedInput) as exc:
        normalise(raw | {"kind": "joomla.article"}, TOPO)
    assert exc.value.code == "unknown_kind"
    with pytest.raises(RejectedInput) as exc:
        normalise(raw | {"op": "truncate"}, TOPO)
    assert exc.value.code == "unknown_op"
    for payload, code in ((b"{not json", "invalid_json"), (b"\xc3\x28{}", "invalid_encoding")):
        for kind in ("wordpress.post", "drupal.node"):
            with pytest.raises(RejectedInput) as exc:
                normalise(raw | {"kind": kind, "payload": payload}, TOPO)
            assert exc.value.code == code


_PREFIXES = st.sampled_from(
    [
        b"",
        b"{",
        b'{"data": {"type": "node--article", "id": "x", "attributes": {"title": ',
        b'<?xml version="1.0"?><rss version="2.0"><channel><item><title>',
        b"<feed ",
        b"N1\tnews\t",
    ]
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), prefix=_PREFIXES, tail=st.binary(max_size=400))
def test_arbitrary_payload_only_rejects(kind: str, prefix: bytes, tail: bytes) -> None:
    raw = make_raw(
        kind, prefix + tail, source="s", brand="b", content_type="application/xml", origin="fuzz"
    )
    try:
        records = normalise(raw, TOPO)
    except RejectedInput:
        return
    for rec in records:
        codec("Content").encode(rec)
