"""MIND files (Microsoft News Dataset): ``news.tsv`` rows -> ``mind.news`` raw CMS events,
``behaviors.tsv`` rows -> ``feedpipe.ReaderEvent`` records (history clicks, impressions, clicks).

A malformed behaviour row becomes a :class:`connectors.records.Malformed` (the replay publishes
it as a dead letter), never a partial set of events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from connectors.records import Keyed, Malformed
from feedpipe import ids
from feedpipe.cms.events import cms_event

NEWS_KIND: Final = "mind.news"
MIND_TIME_FORMAT: Final = "%m/%d/%Y %I:%M:%S %p"  # "11/12/2019 2:14:46 PM" (MIND README)
MIND_COLUMNS: Final = 5
_SHOWN: Final = ("impression",)
_CLICKED: Final = ("impression", "click")  # a clicked entry was shown first


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without ``\\n`` or ``\\r\\n``); no item for the empty text
    after a final newline."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines, start=1):
        yield n, line[:-1] if line.endswith(b"\r") else line


def mind_news_events(path: Path, source: str, brand: str) -> Iterator[Keyed]:
    """One ``mind.news`` RawCmsEvent per line of a MIND ``news.tsv``.

    ``payload`` is the raw line (no newline), ``content_type`` ``text/tab-separated-values``,
    ``source_id`` the first column (the news id; None for a line whose first column is empty,
    which the normaliser rejects), key ``"<source>:<source_id>"``.

    Raises:
        OSError: the file cannot be read.
    """
    origin = str(path)
    for n, line in _lines(path.read_bytes()):
        first = line.split(b"\t", 1)[0].decode("utf-8", "replace").strip()
        source_id = first or None
        fallback = f"{path.name}:{n}"
        yield Keyed(
            f"{source}:{source_id or fallback}",
            cms_event(
                kind=NEWS_KIND,
                source=source,
                brand=brand,
                source_id=source_id,
                payload=line,
                content_type="text/tab-separated-values",
                origin=origin,
                fallback_id=fallback,
            ),
        )



# -- behaviours -> feedpipe.ReaderEvent ------------------------------------------------------
class _BadRow(Exception):
    def __init__(self, code: str, reason: str, user_id: str | None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class _Row:
    impression_id: str
    user_id: str
    time: datetime
    history: list[str]
    impressions: list[tuple[str, bool]]


def parse_mind_time(text: str) -> datetime:
    """Parse a MIND time (``"11/12/2019 2:14:46 PM"``, US format, no zone) as UTC.

    MIND gives no time zone; treating it as UTC is this project's convention.

    Raises:
        ValueError: not in that format.
    """
    return datetime.strptime(text.strip(), MIND_TIME_FORMAT).replace(tzinfo=UTC)


def _parse_row(line: bytes) -> _Row:
    """Parse one behaviors.tsv row. Raises _BadRow(code, reason, user_id)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadRow("bad_encoding", f"row is not UTF-8: {exc}", None) from None
    cols = text.split("\t")
    if len(cols) != MIND_COLUMNS:
        raise _BadRow(
            "bad_columns", f"expected {MIND_COLUMNS} tab-separated columns, got {len(cols)}", None
        )
    impression_id, user_id, time_s, history_s, impressions_s = (c.strip() for c in cols)
    if not user_id:
        raise _BadRow("missing_user", "empty user_id", None)
    if not impression_id:
        raise _BadRow("missing_impression_id", "empty impression_id", user_id)
    try:
        when = parse_mind_time(time_s)
    except ValueError:
        raise _BadRow(
            "bad_time", f"time {time_s!r} is not 'M/D/YYYY h:mm:ss AM/PM'", user_id
        ) from None
    impressions: list[tuple[str, bool]] = []
    for entry in impressions_s.split():
        news_id, sep, label = entry.rpartition("-")
        if not sep or not news_id or label not in ("0", "1"):
            raise _BadRow(
                "bad_label", f"impression entry {entry!r} is not '<news id>-<0|1>'", user_id
            )
        impressions.append((news_id, label == "1"))
    return _Row(impression_id, user_id, when, history_s.split(), impressions)


def mind_behavior_events(
    path: Path, content_source: str = "mind", spacing_s: int = 60
) -> Iterator[Keyed | Malformed]:
    """ReaderEvents from a MIND ``behaviors.tsv``, keyed by user_id, in file order.

    Columns: impression_id, user_id, time (see :func:`parse_mind_time`), history (clicked news
    ids, oldest first), impressions (``"N123-1 N456-0"``, 1 = clicked).

    Per row, in this order:

    1. the first time a user appears in the file, their history as past clicks (type
       ``click``, origin ``history``) with ``occurred_at = anchor - (len(history) - i) *
       spacing_s`` seconds (i = 0-based index; ``spacing_s`` = topology
       ``profiles.history_click_spacing_s``), event_id ``ids.event_id("mind-history", user_id,
       news_id, i)``. ``anchor`` is the user's *earliest* impression time in the file (rows
       are a random sample, not in time order), so with ``spacing_s > 0`` every history click
       is strictly before all of the user's impressions. MIND repeats the same history on every
       row of a user, so later rows do not re-emit it;
    2. one ``impression`` per entry at position p (0-based), origin ``live``, event_id
       ``ids.event_id("mind", impression_id, news_id, p, "impression")``, and for a label 1 a
       ``click`` at the same ``occurred_at`` (event_id ending ``"click"``).

    ``content_id = ids.content_id(content_source, news_id)``, ``source_item_id = news_id``.
    A malformed row (column count, empty user/impression id, time, label, encoding) yields a
    :class:`Malformed` instead, and none of its events (the row is all or nothing).

    Raises:
        OSError: the file cannot be read.
    """
    parsed: list[tuple[int, bytes, _Row | _BadRow]] = []
    anchors: dict[str, datetime] = {}  # each user's earliest impression time
    for n, line in _lines(path.read_bytes()):
        try:
            row = _parse_row(line)
        except _BadRow as bad:
            parsed.append((n, line, bad))
            continue
        parsed.append((n, line, row))
        seen = anchors.get(row.user_id)
        if seen is None or row.time < seen:
            anchors[row.user_id] = row.time

    cids: dict[str, str] = {}

    def cid(news_id: str) -> str:
        c = cids.get(news_id)
        if c is None:
            c = cids[news_id] = ids.content_id(content_source, news_id)
        return c

    # ids.event_id(*parts) is sha256 hex of the parts joined by "\x1f"; inlined with the row's
    # constant prefix (same bytes, checked against ids.event_id in tests/unit/test_replay.py).
    sha256 = hashlib.sha256
    history_done: set[str] = set()
    for n, line, parsed_row in parsed:
        if isinstance(parsed_row, _BadRow):
            err = parsed_row
            yield Malformed(err.code, err.reason, line, f"{path}:{n}", err.user_id)
            continue
        row = parsed_row
        user = row.user_id
        if user not in history_done:
            history_done.add(user)
            anchor = anchors[user]
            count = len(row.history)
            hist_prefix = f"mind-history\x1f{user}\x1f"
            for i, news_id in enumerate(row.history):
                yield Keyed(
                    user,
                    {
                        "event_id": sha256(f"{hist_prefix}{news_id}\x1f{i}".encode()).hexdigest(),
                        "type": "click",
                        "user_id": user,
                        "content_id": cid(news_id),
                        "source_item_id": news_id,
                        "occurred_at": anchor - timedelta(seconds=(count - i) * spacing_s),
                        "impression_id": None,
                        "position": None,
                        "dwell_ms": None,
                        "origin": "history",
                    },
                )
        imp = row.impression_id
        when = row.time
        prefix = f"mind\x1f{imp}\x1f"
        for p, (news_id, clicked) in enumerate(row.impressions):
            content = cid(news_id)
            for kind in _CLICKED if clicked else _SHOWN:
                yield Keyed(
                    user,
                    {
                        "event_id": sha256(
                            f"{prefix}{news_id}\x1f{p}\x1f{kind}".encode()
                        ).hexdigest(),
                        "type": kind,
                        "user_id": user,
                        "content_id": content,
                        "source_item_id": news_id,
                        "occurred_at": when,
                        "impression_id": imp,
                        "position": p,
                        "dwell_ms": None,
                        "origin": "live",
                    },
                )
