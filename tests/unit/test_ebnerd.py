"""The EB-NeRD reader (ops/evaluate/ebnerd.py) on small parquet files written here in the
ebnerd-benchmark schema, with and without the optional columns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedpipe.errors import ConfigError
from feedpipe.topology import topology
from ops.evaluate import evaluate
from ops.evaluate.ebnerd import is_ebnerd, read_ebnerd

T = dt.datetime(2023, 5, 20, 8, 0, 0)

ARTICLES = {
    "article_id": [1, 2, 3, 4],
    "title": ["Fodboldklubben vandt finalen", "Regeringen fremlægger ny finanslov",
              "Fodboldlandsholdet vandt igen", "Vejret bliver varmt i weekenden"],
    "subtitle": ["Stor sejr i Parken", "Skatter og afgifter", "Sejr i Parken", "Sol og sommer"],
    "body": ["Klubben vandt finalen efter forlænget spilletid.", "Finansloven blev fremlagt.",
             "Landsholdet vandt kampen.", "Det bliver varmt."],
    "published_time": [T - dt.timedelta(hours=h) for h in (30, 20, 2, 50)],
    "category_str": ["sport", "nyheder", "sport", "vejret"],
    "topics": [["fodbold"], ["politik"], ["fodbold"], []],
}


def _write(folder: Path, full: bool = True) -> Path:
    split = folder / "train"
    split.mkdir(parents=True)
    arts = dict(ARTICLES)
    if not full:
        for col in ("body", "published_time", "topics", "subtitle"):
            del arts[col]
    pq.write_table(pa.table(arts), folder / "articles.parquet")
    times = [T + dt.timedelta(hours=h) for h in range(6)]
    beh = {
        "impression_id": list(range(100, 106)),
        "article_id": [None] * 6,
        "impression_time": times,
        "read_time": [10.0] * 6,
        "article_ids_inview": [[1, 2, 3, 4]] * 5 + [[]],
        "article_ids_clicked": [[3], [3], [1], [3], [3], []],
        "user_id": [7, 8, 7, 9, 8, 7],
        "session_id": [1, 2, 3, 4, 5, 6],
    }
    pq.write_table(pa.table(beh), split / "behaviors.parquet")
    if full:
        hist = {
            "user_id": [7, 8, 9],
            "impression_time_fixed": [[T - dt.timedelta(days=2), T - dt.timedelta(days=3)]] * 3,
            "scroll_percentage_fixed": [[50.0, 60.0]] * 3,
            "article_id_fixed": [[1, 3], [3, 1], [2, 4]],
            "read_time_fixed": [[5.0, 6.0]] * 3,
        }
        pq.write_table(pa.table(hist), split / "history.parquet")
    return split


def test_reader_maps_the_schema(tmp_path: Path) -> None:
    split = _write(tmp_path)
    assert is_ebnerd(split) and not is_ebnerd(tmp_path)
    imps, bad, metas, texts, published = read_ebnerd(split, topology())
    assert list(bad) == [6]  # the row with an empty in-view list
    first = imps[0]
    assert (first.impression_id, first.user_id, first.candidates, first.labels) == (
        "100", "7", ("1", "2", "3", "4"), (0, 0, 1, 0))
    assert first.at_ms == int(T.replace(tzinfo=dt.UTC).timestamp() * 1000)
    assert first.history == ("3", "1")  # ordered by impression_time_fixed, oldest first
    assert metas["1"].categories == ("sport",) and "fodbold" in metas["1"].topics
    assert published["3"] == int((T - dt.timedelta(hours=2)).replace(tzinfo=dt.UTC)
                                 .timestamp() * 1000)
    assert texts["1"] and texts["3"]
    # Danish stemming: the two football articles share stems, not the weather one.
    shared = set(texts["1"]) & set(texts["3"])
    assert shared and not set(texts["1"]) & set(texts["4"])


def test_evaluate_uses_publication_times_and_runs_without_optional_columns(
        tmp_path: Path) -> None:
    split = _write(tmp_path / "full")
    r = evaluate(split, tmp_path / "unused.tsv", n_boot=20)
    assert r.coverage.evaluated == 5 and r.coverage.malformed == 1
    # Article 3 (published 2 h before) is clicked in 4 of 5 impressions: recency from
    # published_time ranks it first there; article 1 (30 h) is third of four in the fifth.
    assert r.rows["baseline:recency"]["auc"][0] == pytest.approx((4 * 1.0 + 1 / 3) / 5)
    assert any(n.startswith("learned:") for n in r.rows)

    bare = _write(tmp_path / "bare", full=False)
    r2 = evaluate(bare, tmp_path / "unused.tsv", n_boot=20)
    assert r2.coverage.evaluated == 5
    assert r2.coverage.histories_with_metadata == 0  # no history.parquet
    _, _, metas, texts, published = read_ebnerd(bare, topology())
    assert published == {} and metas["1"].published_at is None and texts["1"]


def test_reader_refuses_missing_files_and_columns(tmp_path: Path) -> None:
    split = _write(tmp_path)
    (tmp_path / "articles.parquet").unlink()
    with pytest.raises(ConfigError, match=r"articles\.parquet"):
        read_ebnerd(split, topology())
    pq.write_table(pa.table({"article_id": [1]}), tmp_path / "articles.parquet")
    pq.write_table(pa.table({"impression_id": [1]}), split / "behaviors.parquet")
    with pytest.raises(ConfigError, match="missing column"):
        read_ebnerd(split, topology())
