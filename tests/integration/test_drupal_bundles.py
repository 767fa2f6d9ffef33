"""Drupal connector over real HTTP into real Kafka: several node bundles and a JSON:API Views
display behind a language prefix (``/es/jsonapi/...``), one cursor per endpoint, and a cursor
file of one bare cursor read as the ``jsonapi/node/article`` cursor.

Served by :class:`connectors.simulator.FixtureServer` from the real Umami articles; the
``node--recipe`` resources are those articles with another type and id (a bundle the shared
data does not hold). Fixtures: ``conftest.py``; helpers: ``http_connectors_support``."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import orjson
import pytest
from http_connectors_support import Tap, drupal_items, ids_of, spec

from connectors.config import LiveSourceSpec
from connectors.drupal import DrupalConnector, endpoint_paths
from connectors.simulator import FixtureServer
from feedpipe.kafka.producer import IdempotentProducer

pytestmark = pytest.mark.integration


def test_bundles_view_and_language_prefix(
    server: FixtureServer, tap: Tap, producer: IdempotentProducer, data_dir: Path, tmp_path: Path
) -> None:
    articles = drupal_items(data_dir)
    recipes = copy.deepcopy(articles[:3])
    for n, r in enumerate(recipes):
        r["type"], r["id"] = "node--recipe", f"recipe-{n}"
    featured = copy.deepcopy(articles[5:7])
    for n, r in enumerate(featured):
        r["id"] = f"featured-{n}"
    server.drupal_routes = {
        "/es/jsonapi/node/article": articles,
        "/es/jsonapi/node/recipe": recipes,
        "/es/jsonapi/views/featured/page_1": featured,
    }
    s = spec("drupal", server.base, tmp_path, page_size=3, language="es",
             resource_types=["node--article", "node--recipe"], views=["featured/page_1"])
    assert endpoint_paths(s) == [
        "es/jsonapi/node/article", "es/jsonapi/node/recipe", "es/jsonapi/views/featured/page_1"
    ]
    conn = DrupalConnector(s, producer=producer)
    conn.poll_safely()
    assert conn.metrics.consecutive_failures == 0, conn.metrics.last_error
    recs = tap.records(s.name)
    want = [i["id"] for i in articles + recipes + featured]
    assert Counter(ids_of(recs)) == Counter(dict.fromkeys(want, 1))
    types = Counter(orjson.loads(r["payload"])["data"]["type"] for r in recs)
    assert types == {"node--article": 10, "node--recipe": 3}
    view_q = server.requests_to("/es/jsonapi/views/featured/page_1")[0].query
    assert "sort" not in view_q and "filter[changed][value]" not in view_q
    saved = orjson.loads(s.cursor_path().read_bytes())
    assert set(saved["endpoints"]) == set(endpoint_paths(s))
    conn.stop()

    again = DrupalConnector(s, producer=producer)
    again.poll_safely()
    assert again.metrics.published == 0 and len(tap.records(s.name)) == len(want)
    again.stop()


def test_bare_cursor_is_the_article_cursor(
    server: FixtureServer, tap: Tap, producer: IdempotentProducer, data_dir: Path, tmp_path: Path
) -> None:
    articles = drupal_items(data_dir)
    server.drupal_items = articles
    s = spec("drupal", server.base, tmp_path, page_size=50)
    first = DrupalConnector(s, producer=producer)
    first.poll_safely()
    assert first.metrics.published == 8
    first.stop()
    bare = orjson.loads(s.cursor_path().read_bytes())["endpoints"]["jsonapi/node/article"]
    s.cursor_path().write_bytes(orjson.dumps(bare))
    second = DrupalConnector(s, producer=producer)
    second.poll_safely()
    assert second.metrics.published == 0, second.metrics.last_error
    assert len(tap.records(s.name)) == 8
    second.stop()


@pytest.mark.parametrize(
    "extra",
    [
        {"resource_types": ["article"]},
        {"resource_types": []},
        {"views": ["featured"]},
        {"language": "/es"},
        {"resource_types": ["node--page", "node--page"]},
    ],
)
def test_bad_drupal_settings_refused(extra: dict[str, object], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LiveSourceSpec(name="d", kind="drupal", brand="b", url="https://x.test", **extra)
    with pytest.raises(ValueError):
        LiveSourceSpec(name="w", kind="wordpress", brand="b", url="https://x.test",
                       views=["featured/page_1"])
