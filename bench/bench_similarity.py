"""Benchmark the learned ranker's live ``similarity`` column: one chunk of readers against the
MIND catalogue, :func:`feedpipe.model.interest.similarity_rows` (one sparse product, what
``rank_users`` runs) against :func:`feedpipe.model.text.similarity` per reader (the
evaluation's per-user function) in the same run, and the interest update of one click
(:func:`feedpipe.model.interest.add_read`: decode, add, keep 32 terms, encode).

Usage: ``python bench/bench_similarity.py [--users 512] [--reads 20] [--repeat 5]``.

Data: news.tsv (read in place) title + abstract encoded with :func:`feedpipe.model.text.encode`
(English); each synthetic reader's interest is the forward-decayed sum of ``--reads`` random
items (seeded). Prints the median seconds per chunk of each form, their ratio, the largest
difference between the two forms' values, and microseconds per ``add_read``.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from feedpipe.model import interest  # noqa: E402
from feedpipe.model.text import SparseVec, encode, similarity  # noqa: E402
from feedpipe.settings import settings  # noqa: E402


def news_vectors() -> list[SparseVec]:
    """The text vectors of news.tsv's title + abstract (English)."""
    path = settings().data_dir / "mind" / "news.tsv"
    with path.open(encoding="utf-8", newline="") as fh:
        return [encode(row[3:5], "en") for row in csv.reader(fh, delimiter="\t",
                                                             quoting=csv.QUOTE_NONE)]


def main() -> None:
    """Run the measurement (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--reads", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(13)
    items = news_vectors()
    profiles = []
    clicks = 0
    t_add = 0.0
    for _ in range(args.users):
        p: dict[str, Any] = {"landmark_ms": 0, "half_life_s": 7 * 86_400.0}
        for j in range(args.reads):
            t0 = time.perf_counter()
            interest.add_read(p, rng.choice(items), j * 3_600_000)
            t_add += time.perf_counter() - t0
            clicks += 1
        profiles.append(interest.interest_of(p))
    matrix = interest.text_index(items)
    batch, loop = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        rows = interest.similarity_rows(profiles, matrix)
        batch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = np.array([similarity(v, items) for v in profiles])
        loop.append(time.perf_counter() - t0)
    b, lo = statistics.median(batch), statistics.median(loop)
    print(f"{args.users} readers x {len(items)} items: similarity_rows {b * 1e3:.1f} ms "
          f"({b / args.users * 1e6:.1f} us/reader), per-reader text.similarity {lo * 1e3:.1f} ms "
          f"({lo / args.users * 1e6:.1f} us/reader): {lo / b:.1f}x; "
          f"max |difference| {np.abs(rows - ref).max():.2e}")
    print(f"add_read: {t_add / clicks * 1e6:.1f} us per click ({clicks} clicks); stored "
          f"interest {statistics.mean(len(interest.pack(v)) for v in profiles):.0f} characters")


if __name__ == "__main__":
    main()
