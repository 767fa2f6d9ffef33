"""EB-NeRD logs (Ekstra Bladet, RecSys Challenge 2024; the ebnerd-benchmark layout) read into the
evaluation's :class:`~ops.evaluate.data.Impression` rows and item features.

Layout (Kruse et al., "EB-NeRD: A Large-Scale Dataset for News Recommendation", RecSys
Challenge 2024): a split folder holds ``behaviors.parquet`` and ``history.parquet``;
``articles.parquet`` is in the split folder or its parent. Columns read:

* behaviors: ``impression_id``, ``user_id``, ``impression_time``, ``article_ids_inview``,
  ``article_ids_clicked`` (required);
* history (optional file): ``user_id``, ``article_id_fixed`` (clicks before the split, oldest
  first), ``impression_time_fixed`` (their times, used to order them when present);
* articles: ``article_id`` (required); ``title``, ``subtitle``, ``body`` (the text vector),
  ``published_time`` (recency), ``category_str``, ``topics`` (categories and topics), each used
  when present.

The history is the user's clicks before the split (fixed for the whole split), the same
meaning as MIND's history column, so the leak-free preparation
(:func:`~ops.evaluate.data.prepare`) applies unchanged.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from feedpipe.errors import ConfigError
from feedpipe.model.item import Meta
from feedpipe.model.text import SparseVec, encode
from feedpipe.topology import Topology, slug
from ops.evaluate.data import Impression

BEHAVIOR_COLUMNS = ("impression_id", "user_id", "impression_time", "article_ids_inview",
                    "article_ids_clicked")
"""Required columns of behaviors.parquet."""


def is_ebnerd(path: Path) -> bool:
    """True when ``path`` is a folder holding ``behaviors.parquet``."""
    return path.is_dir() and (path / "behaviors.parquet").is_file()


def _table(path: Path, required: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """Columns of a parquet file as Python lists.

    Raises:
        ConfigError: unreadable file, or a required column missing.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _ms(value: Any) -> int | None:
    """Epoch ms of a parquet timestamp (naive timestamps read as UTC); None if absent."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    return None


def _language(text: str) -> str | None:
    """ISO 639-1 code of ``text`` by py3langid (the enrichment's identifier); None if empty."""
    if not text.strip():
        return None
    import py3langid

    code, _ = py3langid.classify(text[:5000])
    return str(code)


def read_articles(path: Path, topo: Topology, brand: str
                  ) -> tuple[dict[str, Meta], dict[str, SparseVec], dict[str, int]]:
    """``(metas, text vectors, publication times in epoch ms)`` by article id (as a string).

    Categories: ``category_str`` through the brand taxonomy (``Topology.map_categories``; an
    unknown brand keeps the slug); topics: the categories plus ``topics`` as slugs. The text
    vector (:func:`feedpipe.model.text.encode`) uses title, subtitle and body, in the language
    py3langid detects.

    Raises:
        ConfigError: unreadable file or no ``article_id`` column.
    """
    cols = _table(path, ("article_id",))
    n = len(cols["article_id"])
    none: list[Any] = [None] * n
    metas: dict[str, Meta] = {}
    texts: dict[str, SparseVec] = {}
    published: dict[str, int] = {}
    for i in range(n):
        aid = cols["article_id"][i]
        if aid is None:
            continue
        key = str(aid)
        cat = cols.get("category_str", none)[i]
        raw = [str(cat)] if cat else []
        cats = (topo.map_categories(brand, raw) if brand in topo.brands
                else [s for s in map(slug, raw) if s])
        tops = list(dict.fromkeys([*cats, *(slug(str(t)) for t in cols.get("topics", none)[i]
                                             or ())]))
        pub = _ms(cols.get("published_time", none)[i])
        metas[key] = Meta(key, brand, tuple(cats), tuple(t for t in tops if t), pub)
        if pub is not None:
            published[key] = pub
        parts = [cols.get(c, none)[i] for c in ("title", "subtitle", "body")]
        strs = [str(p) for p in parts if p]
        texts[key] = encode(strs, _language(" ".join(strs[:2])))
    return metas, texts, published


def read_ebnerd(split: Path, topo: Topology, brand: str = "ebnerd"
                ) -> tuple[list[Impression], dict[int, str], dict[str, Meta],
                           dict[str, SparseVec], dict[str, int]]:
    """Read an EB-NeRD split folder.

    Returns ``(impressions, {row: reason} of rows not evaluated, metas, text vectors,
    publication times)``. A behaviors row without a user, time or in-view list is reported,
    not read; clicked ids not in view are ignored (they cannot be ranked).

    Raises:
        ConfigError: no behaviors.parquet or articles.parquet, unreadable files, required
            columns missing.
    """
    beh = _table(split / "behaviors.parquet", BEHAVIOR_COLUMNS)
    arts = split / "articles.parquet"
    if not arts.is_file():
        arts = split.parent / "articles.parquet"
    if not arts.is_file():
        raise ConfigError(f"{split}: no articles.parquet in the folder or its parent")
    metas, texts, published = read_articles(arts, topo, brand)
    history: dict[str, tuple[str, ...]] = {}
    hist_path = split / "history.parquet"
    if hist_path.is_file():
        hist = _table(hist_path, ("user_id", "article_id_fixed"))
        times = hist.get("impression_time_fixed", [None] * len(hist["user_id"]))
        for uid, ids, ts in zip(hist["user_id"], hist["article_id_fixed"], times, strict=True):
            ids = [str(a) for a in ids or () if a is not None]
            if ts and len(ts) == len(ids):
                order = sorted(range(len(ids)), key=lambda k: (_ms(ts[k]) or 0, k))
                ids = [ids[k] for k in order]
            history[str(uid)] = tuple(ids)
    out: list[Impression] = []
    bad: dict[int, str] = {}
    for row in range(len(beh["impression_id"])):
        uid = beh["user_id"][row]
        at = _ms(beh["impression_time"][row])
        inview = [str(a) for a in beh["article_ids_inview"][row] or () if a is not None]
        if uid is None or at is None or not inview:
            bad[row + 1] = "missing user_id, impression_time or article_ids_inview"
            continue
        clicked = {str(a) for a in beh["article_ids_clicked"][row] or ()}
        cands = tuple(dict.fromkeys(inview))
        out.append(Impression(str(beh["impression_id"][row]), str(uid), at,
                              history.get(str(uid), ()), cands,
                              tuple(int(c in clicked) for c in cands)))
    return out, bad, metas, texts, published
