"""streams.normalisers, WordPress posts (``wordpress.post``) on the real Frontity REST API files:
field mapping, known values of post 60, status/delete/tombstone handling, WordPress error
documents, determinism and the scope of ``content_hash``.

Expected values are computed at test time from the files themselves (no data is copied here).
Helpers: ``normalisers_support``.
"""

from __future__ import annotations

import copy
import html
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from normalisers_support import TOPO, _assert_clean, data, run, wp_raw

from feedpipe.cms.wordpress import split_posts
from feedpipe.errors import RejectedInput
from feedpipe.ids import content_id
from streams.normalisers import normalise


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
