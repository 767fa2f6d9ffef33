"""Shared settings, strategies and checks of the property-based tests (hypothesis),
``test_properties_*``: every normaliser and decoder, fed arbitrary bytes or arbitrary JSON,
returns a value or raises the project's documented rejection error, which the stage turns into a
DLQ record with a reason. Nothing else may escape (a crash of a worker). Each test module lists
the entry points it fuzzes in its docstring:

* ``test_properties_streams``: normalisers, the normalise and enrich stages, the click path;
* ``test_properties_connectors``: CDC, webhook bodies, the WordPress poller, replay file readers;
* ``test_properties_codec``: Avro decoding;
* ``test_properties_readapi``: stored feeds and the read endpoint's parsing.

Runs are deterministic (``derandomize=True``: the same examples on every run, as CI needs).
``FEEDPIPE_FUZZ_EXPLORE=N`` (tests only) switches to random exploration with N times the examples,
to look for new failures locally; any failure found is then pinned in its test module with
``@example``. Every test takes its settings from :func:`prop`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from feedpipe.errors import RejectedInput
from feedpipe.ids import event_id
from feedpipe.topology import topology
from feedpipe.wire.codec import codec
from streams.normalisers import normalise

TOPO = topology()
_EXPLORE = int(os.environ.get("FEEDPIPE_FUZZ_EXPLORE", "0") or 0)

F = TypeVar("F", bound=Callable[..., Any])


def prop(n: int) -> Callable[[F], F]:
    """hypothesis settings of the ``test_properties_*`` modules: ``n`` examples, no deadline,
    derandomized (or ``n * FEEDPIPE_FUZZ_EXPLORE`` random examples when exploring)."""
    return settings(
        max_examples=n * _EXPLORE if _EXPLORE else n,
        deadline=None,
        derandomize=not _EXPLORE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- strategies ---------------------------------------------------------------------------------
_HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "*",
        ":",
        "{",
        "}",
        "\n",
        "\r\n",
        "\x00",
        "..",
        "é",
        "\U0001f600",
        "\ud7ff",
        "1e999",
        "-0",
        "NaN",
        "null",
        "true",
        "<",
        "&amp;",
        "\ufeff",
        "0" * 300,
    ]
)


_TEXT = st.one_of(st.text(max_size=40), _HOSTILE_TEXT)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)


JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=5),
    max_leaves=25,
)
"""Arbitrary JSON values (orjson-serialisable: 64-bit ints, finite floats)."""


def _obj(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with the named members (each present or not, any JSON or a typical value)
    plus arbitrary extra members: reaches deeper into a normaliser than fully random JSON."""
    return st.fixed_dictionaries(
        {}, optional={k: st.one_of(v, JSON) for k, v in fields.items()}
    ).flatmap(lambda d: st.dictionaries(_TEXT, JSON, max_size=2).map(lambda extra: {**extra, **d}))


_DATE = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()), st.sampled_from(["2024-13-45T99:00", "0000"])
)


_RENDERED = st.one_of(_TEXT, st.fixed_dictionaries({"rendered": _TEXT}))


WP_POST = _obj(
    {
        "id": st.one_of(st.integers(-(2**63), 2**63 - 1), _TEXT),
        "title": _RENDERED,
        "content": _RENDERED,
        "excerpt": _RENDERED,
        "link": _TEXT,
        "status": st.sampled_from(["publish", "draft", "trash", "private", "x"]),
        "date_gmt": _DATE,
        "modified_gmt": _DATE,
        "lang": _TEXT,
        "deleted": st.booleans(),
        "_embedded": _obj(
            {
                "author": st.lists(_obj({"name": _TEXT}), max_size=2),
                "wp:term": st.lists(st.lists(_obj({"name": _TEXT, "taxonomy": _TEXT}))),
                "wp:featuredmedia": st.lists(
                    _obj({"source_url": _TEXT, "media_type": _TEXT, "mime_type": _TEXT})
                ),
            }
        ),
    }
)


DRUPAL_NODE = _obj(
    {
        "type": st.sampled_from(["node--article", "node--page", "taxonomy_term--tags"]),
        "id": _TEXT,
        "attributes": _obj(
            {
                "title": _TEXT,
                "status": st.booleans(),
                "created": _DATE,
                "changed": _DATE,
                "langcode": _TEXT,
                "body": _obj({"value": _TEXT, "processed": _TEXT, "summary": _TEXT}),
                "path": _obj({"alias": _TEXT}),
            }
        ),
        "relationships": _obj(
            {
                "field_tags": _obj({"data": st.lists(_obj({"type": _TEXT, "id": _TEXT}))}),
                "uid": _obj({"data": _obj({"type": _TEXT, "id": _TEXT})}),
            }
        ),
        "links": _obj({"self": _obj({"href": _TEXT})}),
    }
)


JSONAPI_DOC = _obj(
    {
        "data": st.one_of(DRUPAL_NODE, st.lists(DRUPAL_NODE, max_size=3)),
        "included": st.lists(DRUPAL_NODE, max_size=3),
        "errors": st.lists(_obj({"detail": _TEXT, "title": _TEXT})),
    }
)


def raw_event(
    kind: str,
    payload: bytes,
    op: str = "upsert",
    source_id: str | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """A decoded RawCmsEvent as a connector builds it."""
    return {
        "event_id": event_id("fuzz", source_id or "o", len(payload)),
        "kind": kind,
        "op": op,
        "source": "fuzz",
        "brand": "fuzz",
        "source_id": source_id,
        "content_type": content_type,
        "payload": payload,
        "origin": "fuzz",
        "emitted_at": datetime(2024, 1, 1, tzinfo=UTC),
    }


def normalise_or_reject(raw: dict[str, Any]) -> None:
    """``normalise`` returns encodable Content records or raises RejectedInput."""
    try:
        records = normalise(raw, TOPO)
    except RejectedInput as exc:
        assert exc.code and exc.reason
        return
    for rec in records:
        codec("Content").encode(rec)  # a SerializationError here is a normaliser bug
