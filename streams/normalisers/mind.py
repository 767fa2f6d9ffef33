"""MIND ``news.tsv`` rows -> Content drafts.

Column layout per the MIND dataset description (msnews.github.io, "MIND: Microsoft News
Dataset", and Wu et al., ACL 2020): news_id, category, subcategory, title, abstract, url,
title_entities, abstract_entities; the entity columns are JSON lists of
``{Label, Type, WikidataId, Confidence, OccurrenceOffsets, SurfaceForms}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from feedpipe.errors import RejectedInput
from streams.normalisers.common import Draft, decode_utf8
from streams.normalisers.text import collapse_whitespace, single_line

KIND = "mind.news"
COLUMNS = (
    "news_id",
    "category",
    "subcategory",
    "title",
    "abstract",
    "url",
    "title_entities",
    "abstract_entities",
)


def _entities(cell: str, column: str, warnings: list[str]) -> list[dict[str, Any]]:
    if not cell.strip():
        return []
    try:
        items = orjson.loads(cell)
    except orjson.JSONDecodeError as exc:
        warnings.append(f"{column}: not JSON ({exc}); entities dropped")
        return []
    if not isinstance(items, list):
        warnings.append(f"{column}: not a JSON list; entities dropped")
        return []
    out = []
    for e in items:
        if not isinstance(e, dict) or not isinstance(e.get("Label"), str) or not e["Label"].strip():
            warnings.append(f"{column}: entity without a label dropped")
            continue
        conf = e.get("Confidence")
        wid, typ = e.get("WikidataId"), e.get("Type")
        out.append(
            {
                "label": single_line(e["Label"]),
                "type": typ if isinstance(typ, str) and typ else None,
                "wikidata_id": wid if isinstance(wid, str) and wid else None,
                "confidence": float(conf)
                if isinstance(conf, int | float) and not isinstance(conf, bool)
                else None,
                "origin": "source",
            }
        )
    return out


def normalise_row(payload: bytes, deleting: bool) -> Draft:
    """One TSV row (UTF-8; a trailing newline allowed) -> :class:`Draft`.

    Entities of title and abstract are merged, deduplicated by Wikidata id (or by label when
    an entity has none), first occurrence kept.

    Raises:
        RejectedInput: ``empty_payload``, ``invalid_encoding``, ``bad_tsv_row`` (not 8
            columns, or an empty news_id).
    """
    line = decode_utf8(payload).rstrip("\r\n")
    cells = line.split("\t")
    if len(cells) != len(COLUMNS):
        raise RejectedInput(
            "bad_tsv_row", f"expected {len(COLUMNS)} tab-separated columns, got {len(cells)}"
        )
    row = dict(zip(COLUMNS, cells, strict=True))
    news_id = row["news_id"].strip()
    if not news_id:
        raise RejectedInput("bad_tsv_row", "empty news_id")
    warnings: list[str] = []
    entities: list[dict[str, Any]] = []
    seen: set[str] = set()
    for column in ("title_entities", "abstract_entities"):
        for ent in _entities(row[column], column, warnings):
            key = ent["wikidata_id"] or "label:" + ent["label"]
            if key not in seen:
                seen.add(key)
                entities.append(ent)
    category = single_line(row["category"])
    subcategory = single_line(row["subcategory"])
    url = row["url"].strip()
    return Draft(
        kind=KIND,
        source_id=news_id,
        title=single_line(row["title"]),
        summary=collapse_whitespace(row["abstract"]),
        body="",
        url=url or None,
        status="unpublished" if deleting else "published",
        source_categories=[category, subcategory],
        categories_from=[category],
        tags=[subcategory],
        language_hint="en",
        entities=entities,
        warnings=warnings,
    )
