"""streams.normalisers, Drupal JSON:API nodes (``drupal.node``) on the real drupal-kit files:
collection splitting, article fields, unpublished nodes, JSON:API error and non-article
documents, and relationships resolved through ``included``.

Expected values are computed at test time from the files themselves (no data is copied here).
Helpers: ``normalisers_support``.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from normalisers_support import TOPO, _assert_clean, data, drupal_raw, run

from feedpipe.cms.drupal import split_collection
from feedpipe.errors import RejectedInput
from feedpipe.ids import content_id
from streams.normalisers import normalise


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


def test_drupal_other_node_bundles_normalised_other_resources_refused() -> None:
    """A real article served as another bundle (``node--recipe``) is a node like any other;
    a taxonomy term is not a node."""
    doc = _drupal("jsonapi_article_detail.json")
    recipe = copy.deepcopy(doc)
    recipe["data"]["type"] = "node--recipe"
    (item,) = normalise(drupal_raw(recipe), TOPO)
    (article,) = normalise(drupal_raw(doc), TOPO)
    assert item["title"] == article["title"] and item["body"] == article["body"]
    term = copy.deepcopy(doc)
    term["data"]["type"] = "taxonomy_term--tags"
    with pytest.raises(RejectedInput) as exc:
        normalise(drupal_raw(term), TOPO)
    assert exc.value.code == "not_an_article" and "node--<bundle>" in exc.value.reason
