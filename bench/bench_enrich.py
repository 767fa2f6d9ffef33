"""Benchmark streams.metadata.enrich on the MIND news rows (read in place, never copied).

Usage: ``python bench/bench_enrich.py [--repeat N] [--baseline-root DIR]``. Prints rows, seconds
and rows/s for each pass (the first pass after warm_up() included), the language counts, and the
margin of the best pass over the target load: 2,000 items a day per brand for 12 brands,
24,000 items/day = 0.278 items/s. With ``--baseline-root`` (a checkout of an older commit, e.g.
a git worktree), the same benchmark is first run in a subprocess against that checkout's code
(same interpreter and data) and the ratio after/before is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
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


TARGET_ITEMS_PER_DAY = 2_000 * 12
"""Target load: 2,000 items a day per brand for 12 brands."""


def run(repeat: int) -> float:
    """Enrich the MIND rows ``repeat`` times; print each pass; return the best items/s."""
    rows = mind_contents()
    t0 = time.perf_counter()
    warm_up()
    print(f"warm_up: {time.perf_counter() - t0:.2f} s")
    now = datetime.now(UTC)
    best = 0.0
    for i in range(repeat):
        t0 = time.perf_counter()
        out = [enrich(c, now) for c in rows]
        dt = time.perf_counter() - t0
        best = max(best, len(out) / dt)
        print(f"pass {i + 1}: {len(out)} rows in {dt:.2f} s = {len(out) / dt:.0f} rows/s")
    print("languages:", Counter(e["language"] for e in out).most_common(5))
    return best


def baseline(root: Path, repeat: int) -> float:
    """Best items/s of this benchmark run against the code of checkout ``root`` (a subprocess
    with ``PYTHONPATH=root``, this interpreter, the same data directory)."""
    env = {**os.environ, "PYTHONPATH": str(root), "FEEDPIPE_DATA_DIR": str(settings().data_dir)}
    proc = subprocess.run(
        [sys.executable, __file__, "--repeat", str(repeat), "--print-best"],
        cwd=root, env=env, capture_output=True, text=True, check=True,
    )
    print(proc.stdout.rstrip())
    return float(proc.stdout.strip().splitlines()[-1].split()[-1])


def main() -> None:
    """Run the benchmark (and the baseline) and print the rates and margins."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline-root", type=Path, default=None)
    ap.add_argument("--print-best", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    before = None
    if args.baseline_root is not None:
        print(f"== before: {args.baseline_root}")
        before = baseline(args.baseline_root, args.repeat)
        print("== after: this checkout")
    after = run(args.repeat)
    target = TARGET_ITEMS_PER_DAY / 86_400
    if args.print_best:
        print(f"best {after:.3f}")
        return
    print(f"after: {after:.1f} items/s = {after * 86_400:,.0f} items/day; "
          f"margin over {TARGET_ITEMS_PER_DAY:,} items/day: {after / target:,.0f}x")
    if before is not None:
        print(f"before: {before:.1f} items/s; after/before = {after / before:.3f}")


if __name__ == "__main__":
    main()
