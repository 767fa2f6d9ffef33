"""One rule per CMS: the same post (or Drupal node) sent through every path into the pipeline
gives the same op, key and source_id, and normalises to the same status.

Paths: the replay file reader (connectors.files.cms), the pollers' item functions
(connectors.wordpress.post_event, connectors.drupal.item_events), the webhook body splitting
(connectors.webhook.bodies.body_events), the CDC row conversion (connectors.cdc.wp_posts, WordPress
only) and the normaliser (streams.normalisers.normalise). Pure: no Kafka.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.cdc.wp_posts import cdc_to_raw_event
from connectors.drupal import item_events
from connectors.files.cms import drupal_events, wordpress_events
from connectors.webhook.bodies import body_events
from connectors.wordpress import post_event
from feedpipe.cms import drupal, wordpress
from feedpipe.ids import content_id
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.normalisers import normalise

SOURCE = "rules-src"
BRAND = "frontity"  # a brand declared in topology.yaml
ORIGIN = "test:rules"
TOPO = topology()

# WordPress REST "Posts" reference and register_post_status: publish is the only public status.
WP_STATUSES = ["publish", "future", "draft", "pending", "private", "trash", "auto-draft", "inherit"]


def wp_post(status: str | None) -> dict[str, Any]:
    post: dict[str, Any] = {
        "id": 4711,
        "date_gmt": "2024-03-01T10:00:00",
        "modified_gmt": "2024-03-02T11:30:00",
        "slug": "rules",
        "type": "post",
        "link": "https://example.org/?p=4711",
        "title": {"rendered": "One rule per CMS"},
        "content": {"rendered": "<p>Body text.</p>"},
        "excerpt": {"rendered": "<p>Summary.</p>"},
    }
    if status is not None:
        post["status"] = status
    return post


def wp_row(post: dict[str, Any]) -> dict[str, Any]:
    """The ``wp_posts`` row the post is stored as (what Debezium captures)."""
    return {
        "ID": post["id"],
        "post_type": post["type"],
        "post_status": post.get("status"),
        "post_name": post["slug"],
        "guid": post["link"],
        "post_title": post["title"]["rendered"],
        "post_content": post["content"]["rendered"],
        "post_excerpt": post["excerpt"]["rendered"],
        "post_date_gmt": post["date_gmt"].replace("T", " "),
        "post_modified_gmt": post["modified_gmt"].replace("T", " "),
    }


def normalised_status(event: dict[str, Any]) -> str:
    (record,) = normalise(codec("RawCmsEvent").decode(codec("RawCmsEvent").encode(event)), TOPO)
    assert record["content_id"] == content_id(SOURCE, event["source_id"])
    return str(record["status"])


def wordpress_paths(post: dict[str, Any], tmp_path: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """(key, raw event) of ``post`` by every path."""
    file = tmp_path / "posts.json"
    file.write_bytes(orjson.dumps([post]))
    (replayed,) = wordpress_events(file, SOURCE, BRAND)
    polled = post_event(post, SOURCE, BRAND, ORIGIN, "page1#0")
    (pushed,) = body_events(wordpress.KIND, orjson.dumps([post]), SOURCE, BRAND, ORIGIN)
    change = {"op": "u", "before": None, "after": wp_row(post), "source": {"table": "wp_posts"}}
    captured = cdc_to_raw_event(orjson.dumps(change), SOURCE, BRAND)
    assert isinstance(captured, tuple)
    return {
        "replay": (replayed.key, replayed.record),
        "poller": (polled.key, polled.record),
        "webhook": (pushed.key, pushed.record),
        "cdc": captured,
    }


@pytest.mark.parametrize("status", WP_STATUSES)
def test_wordpress_status_rule_is_the_same_on_every_path(status: str, tmp_path: Path) -> None:
    post = wp_post(status)
    public = status == "publish"
    expected_op = "upsert" if public else "delete"
    paths = wordpress_paths(post, tmp_path)
    for name, (key, event) in paths.items():
        assert key == f"{SOURCE}:4711", name
        assert (event["source_id"], event["op"], event["kind"]) == (
            "4711",
            expected_op,
            "wordpress.post",
        ), name
        assert normalised_status(event) == ("published" if public else "unpublished"), name
    # replay, poller and webhook publish the same bytes: the same event id, deduplicated
    same_bytes = [paths[p][1] for p in ("replay", "poller", "webhook")]
    assert len({e["payload"] for e in same_bytes}) == 1
    assert len({e["event_id"] for e in same_bytes}) == 1
    # the normaliser reads the post's own status too, even from an event marked upsert
    upsert = {**paths["poller"][1], "op": "upsert"}
    assert normalised_status(upsert) == ("published" if public else "unpublished")


def test_wordpress_post_without_status_is_public(tmp_path: Path) -> None:
    post = wp_post(None)
    for name, (_, event) in wordpress_paths(post, tmp_path).items():
        if name == "cdc":
            continue  # a wp_posts row always has a post_status
        assert event["op"] == "upsert", name
        assert normalised_status(event) == "published", name


def test_wordpress_delete_response_is_a_delete(tmp_path: Path) -> None:
    response = {"deleted": True, "previous": wp_post("publish")}
    file = tmp_path / "deleted.json"
    file.write_bytes(orjson.dumps(response))
    (replayed,) = wordpress_events(file, SOURCE, BRAND)
    polled = post_event(response, SOURCE, BRAND, ORIGIN, "page1#0")
    (pushed,) = body_events(wordpress.KIND, orjson.dumps(response), SOURCE, BRAND, ORIGIN)
    for event in (replayed.record, polled.record, pushed.record):
        assert (event["source_id"], event["op"]) == ("4711", "delete")
        assert normalised_status(event) == "unpublished"


def drupal_collection(status: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "title": "Eine Regel",
        "created": "2024-03-01T10:00:00+00:00",
        "changed": "2024-03-02T11:30:00+00:00",
        "langcode": "de",
        "body": {"processed": "<p>Text.</p>", "summary": "Kurz."},
    }
    if status is not None:
        attributes["status"] = status
    node = {
        "type": "node--article",
        "id": "5f1c0b9e-0000-4000-8000-000000000001",
        "attributes": attributes,
        "relationships": {"uid": {"data": {"type": "user--user", "id": "u1"}}},
    }
    return {
        "data": [node],
        "included": [
            {"type": "user--user", "id": "u1", "attributes": {"display_name": "Autorin"}},
            {"type": "user--user", "id": "u2", "attributes": {"display_name": "Unused"}},
        ],
    }


@pytest.mark.parametrize(("status", "public"), [(True, True), (None, True), (False, False)])
def test_drupal_status_rule_is_the_same_on_every_path(
    status: Any, public: bool, tmp_path: Path
) -> None:
    doc = drupal_collection(status)
    uuid = doc["data"][0]["id"]
    file = tmp_path / "collection.json"
    file.write_bytes(orjson.dumps(doc))
    (replayed,) = drupal_events(file, SOURCE, BRAND)
    ((polled, _),) = item_events(doc, SOURCE, BRAND, ORIGIN)
    (pushed,) = body_events(drupal.KIND, orjson.dumps(doc), SOURCE, BRAND, ORIGIN)
    events = {"replay": replayed, "poller": polled, "webhook": pushed}
    expected_op = "upsert" if public else "delete"
    for name, item in events.items():
        assert item.key == f"{SOURCE}:{uuid}", name
        assert (item.record["source_id"], item.record["op"]) == (uuid, expected_op), name
        assert normalised_status(item.record) == ("published" if public else "unpublished")
        # one item's document carries only the included resources it references
        included = orjson.loads(item.record["payload"])["included"]
        assert [r["id"] for r in included] == ["u1"], name
    assert len({i.record["event_id"] for i in events.values()}) == 1
