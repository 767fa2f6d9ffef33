"""streams.normalisers, MIND news rows (``mind.news``): every row of the real mind/news.tsv
(fields, categories, entities) and malformed rows (column count, empty id, encoding).

Expected values are computed at test time from the file itself (no data is copied here).
Helpers: ``normalisers_support``.
"""

from __future__ import annotations

import json

import pytest
from normalisers_support import TOPO, data, mind_raw, run

from feedpipe.errors import RejectedInput
from streams.normalisers import normalise


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
