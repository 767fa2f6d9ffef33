"""Shared helpers of the ``test_normalise_*`` modules (streams.normalisers on the real shared
data, read in place; missing data fails loudly).

Builders of decoded RawCmsEvents per kind (as a connector builds them), :func:`run` (normalise,
then check every record against the Avro schema and its own hash) and :func:`_assert_clean`
(no markup or undecoded entity left in the text fields).
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from feedpipe.cms.events import Op, cms_event
from feedpipe.ids import content_id
from feedpipe.settings import settings
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.normalisers import content_hash, normalise

TOPO = topology()
TAG = re.compile(r"<[A-Za-z/!?][^>]*>")
ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z]+\d*);")


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
