"""The input of the fault scenarios: the streamed MIND behaviours subset, the poison records
and the WordPress posts of the connector-kill scenario."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from feedpipe.topology import SourceSpec, topology

HUGE_BYTES = 900_000  # under the broker's default 1 MiB message.max.bytes
WP_POSTS = 120  # posts of the connector-kill scenario (24 pages of 5)
WP_DELAY_S = 0.15  # per-request delay of the simulated CMS, so the kill lands mid-pagination


def poison_topics() -> dict[str, str]:
    """``{input topic: its DLQ}`` of every stage of topology.yaml ``stages``: each input gets
    the poison records, and the stage's DLQ must receive them."""
    return {s.input: s.dead_letters() for s in topology().stages.values()}


def behaviors_subset(data_dir: Path, rows: int, into: Path) -> SourceSpec:
    """Write the first ``rows`` lines of ``<data_dir>/mind/behaviors.tsv`` to
    ``<into>/mind/behaviors.tsv`` (a scratch copy under the suite's state directory, never in
    the repository) and return a replay source reading it (data dir = ``into``).

    Raises:
        FileNotFoundError: the MIND behaviours file is missing.
    """
    src = data_dir / "mind" / "behaviors.tsv"
    lines = src.read_bytes().splitlines(keepends=True)[:rows]
    target = into / "mind" / "behaviors.tsv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(lines))
    base = next(s for s in topology().sources if s.kind == "mind.behaviors")
    return base.model_copy(update={"name": "faults-behaviors", "path": "mind/behaviors.tsv"})


POISON_KEY_PREFIX = b"poison-"


def poison_records(good: bytes) -> list[tuple[bytes, bytes]]:
    """The four poison records built from ``good`` (a valid record of the topic, Confluent
    framing), keyed ``poison-<kind>``: the same body under an unregistered schema id, the
    record cut in half (truncated Avro), a ~900 KB payload of random bytes, and the record
    with invalid UTF-8 bytes in its first string (same length, so the framing stays valid)."""
    import struct

    return [
        (POISON_KEY_PREFIX + b"schema-id", struct.pack(">bI", 0, 987_654) + good[5:]),
        (POISON_KEY_PREFIX + b"truncated", good[: max(6, len(good) // 2)]),
        (POISON_KEY_PREFIX + b"huge", os.urandom(HUGE_BYTES)),
        (POISON_KEY_PREFIX + b"utf8", good[:5] + _invalid_utf8_body(good[5:])),
    ]


def _invalid_utf8_body(body: bytes) -> bytes:
    """``body`` with its first string's bytes replaced by invalid UTF-8 (same length, so the
    Avro framing stays valid): the first run of >= 4 printable ASCII bytes gets 0xff 0xfe."""
    b = bytearray(body)
    run = 0
    for i, ch in enumerate(b):
        run = run + 1 if 32 <= ch < 127 else 0
        if run == 4:
            b[i - 3 : i - 1] = b"\xff\xfe"
            return bytes(b)
    return bytes(b) + b"\xff"


def wp_posts(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """``n`` WordPress posts made from the 3 real ones of ``wordpress/frontity/posts.json``:
    copies with ids 10001.., one second apart in ``modified_gmt``, titles numbered.

    Raises:
        FileNotFoundError: the shared WordPress payload is missing.
    """
    import copy
    from datetime import datetime, timedelta

    real = orjson.loads((data_dir / "wordpress" / "frontity" / "posts.json").read_bytes())
    base = datetime(2024, 1, 1)
    out = []
    for i in range(n):
        p = copy.deepcopy(real[i % len(real)])
        p["id"] = 10_001 + i
        stamp = (base + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S")
        p["modified_gmt"] = p["date_gmt"] = p["modified"] = p["date"] = stamp
        p["slug"] = f"{p.get('slug', 'post')}-{i}"
        if isinstance(p.get("title"), dict):
            p["title"]["rendered"] = f"{p['title'].get('rendered', '')} ({i})"
        out.append(p)
    return out
