"""Benchmark streams.metadata.enrich on the MIND news rows (read in place, never copied).

Usage: ``python bench/bench_enrich.py [--repeat N]``. Prints rows, seconds and rows/s for each
pass (the first pass after warm_up() included), and the language counts.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from feedpipe.ids import content_id
from feedpipe.settings import settings
from feedpipe.topology import topology
from streams.metadata import enrich, warm_up


def mind_contents() -> list[dict[str, Any]]:
    """MIND news.tsv rows as minimal feedpipe.Content dicts (title, abstract, categories, entities).

    Raises:
        FileNotFoundError: the data directory has no mind/news.tsv.
    """
    path = settings().data_dir / "mind" / "news.tsv"
    out = []
    with path.open(encoding="utf-8", newline="") as fh:
        for nid, cat, sub, title, abstract, url, t_ent, a_ent in csv.reader(
            fh, delimiter="\t", quoting=csv.QUOTE_NONE
        ):
            ents = [
                {"label": e["Label"], "type": e.get("Type"), "wikidata_id": e.get("WikidataId"),
                 "confidence": e.get("Confidence"), "origin": "source"}
                for e in json.loads(t_ent or "[]") + json.loads(a_ent or "[]")
            ]
            out.append({
                "content_id": content_id("mind", nid), "source": "mind", "source_id": nid,
                "kind": "mind.news", "brand": "mind", "status": "published", "title": title,
                "summary": abstract, "body": "", "url": url or None, "authors": [],
                "published_at": None, "updated_at": None,
                "categories": topology().map_categories("mind", [cat, sub]),
                "source_categories": [cat, sub], "tags": [], "language_hint": None, "media": [],
                "entities": ents, "ingest_warnings": [], "content_hash": "", "raw_event_id": "",
            })
    return out


def main() -> None:
    """Run the benchmark and print the rates."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rows = mind_contents()
    t0 = time.perf_counter()
    warm_up()
    print(f"warm_up: {time.perf_counter() - t0:.2f} s")
    now = datetime.now(UTC)
    for i in range(args.repeat):
        t0 = time.perf_counter()
        out = [enrich(c, now) for c in rows]
        dt = time.perf_counter() - t0
        print(f"pass {i + 1}: {len(out)} rows in {dt:.2f} s = {len(out) / dt:.0f} rows/s")
    print("languages:", Counter(e["language"] for e in out).most_common(5))


if __name__ == "__main__":
    main()
