"""Shared helpers of the live CMS connector tests (``test_http_connectors_*``): :class:`Tap`
(what reached ``cms.raw`` since it was created), the real WordPress and Drupal payloads, and
:func:`spec` (a uniquely named test source with millisecond back-offs). The fixtures that use
them (``producer``, ``tap``, ``server``) are in this directory's ``conftest.py``.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import orjson
from pipeline import consume_all, high_watermarks

from connectors.config import LiveSourceSpec
from feedpipe.wire.codec import codec

WP = "/wp-json/wp/v2/posts"
DRUPAL = "/jsonapi/node/article"
TOPIC = "cms.raw"
PASSWORD_ENV = "FEEDPIPE_TEST_WP_APP_PASSWORD"


# -- Kafka -------------------------------------------------------------------------------------
class Tap:
    """Reads the cms.raw records written after its creation (per-partition high watermarks)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.start = self._watermarks()

    def _watermarks(self) -> dict[int, int]:
        return high_watermarks(self.bootstrap, TOPIC)

    def records(self, source: str) -> list[dict[str, Any]]:
        """Decoded records of ``source`` between the start and the current high watermarks."""
        decode = codec("RawCmsEvent").decode
        out: list[dict[str, Any]] = []
        for msg in consume_all(self.bootstrap, TOPIC, self.start):
            rec = decode(msg.value())
            if rec["source"] == source:
                rec["_key"] = msg.key()
                out.append(rec)
        return out


# -- data --------------------------------------------------------------------------------------
def wp_posts(data_dir: Path) -> list[dict[str, Any]]:
    """The 3 real posts of wordpress/frontity/posts.json (ids 1, 83, 112)."""
    posts = orjson.loads((data_dir / "wordpress/frontity/posts.json").read_bytes())
    assert [p["id"] for p in posts] == [1, 83, 112]
    return copy.deepcopy(posts)


def drupal_items(data_dir: Path) -> list[dict[str, Any]]:
    """The 8 real node--article resources (all with the same ``changed`` second)."""
    doc = orjson.loads(
        (data_dir / "drupal/drupal-kit/jsonapi_article_collection.json").read_bytes()
    )
    assert len(doc["data"]) == 8
    return copy.deepcopy(doc["data"])


def spec(kind: str, url: str, cursor_dir: Path, **kw: Any) -> LiveSourceSpec:
    """A test source: unique name, fast back-offs (ms), short timeouts."""
    base: dict[str, Any] = {
        "name": f"t-{kind}-{uuid.uuid4().hex[:8]}",
        "kind": kind,
        "brand": "test-brand",
        "url": url,
        "schedule_s": 0.05,
        "per_host_rps": 1000,
        "timeout_s": 0.5,
        "cursor_dir": cursor_dir,
        "page_size": 1,
        "retry_attempts": 3,
        "retry_initial_s": 0.01,
        "retry_max_s": 0.05,
        "retry_after_cap_s": 5,
        "fail_threshold": 2,
        "max_backoff_s": 120,
    }
    base.update(kw)
    return LiveSourceSpec(**base)


def wp_ts(post: dict[str, Any]) -> str:
    """modified_gmt - 1 s as the connector sends it (modified_after is exclusive)."""
    from datetime import UTC, datetime, timedelta

    t = datetime.fromisoformat(post["modified_gmt"]).replace(tzinfo=UTC) - timedelta(seconds=1)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def ids_of(records: list[dict[str, Any]]) -> list[str | None]:
    return [r["source_id"] for r in records]


def by_id(records: list[dict[str, Any]], source_id: str) -> list[dict[str, Any]]:
    """Records of one item, in publish order (one key -> one partition)."""
    return [r for r in records if r["source_id"] == source_id]
