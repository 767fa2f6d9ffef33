"""``feedpipe inspect`` of a URL: the capture is fetched over real HTTP (the CMS simulator on
127.0.0.1) and gives the same outcomes as the file, each naming the URL as its origin."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.simulator import FixtureServer
from ops.inspect import inspect_file, inspect_target

pytestmark = pytest.mark.integration
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_url_capture_matches_file(server: FixtureServer, data_dir: Path) -> None:
    path = data_dir / "feeds/realworld/feedjira__HuffPostCanada.xml"
    url = server.set_feed("huffpost.xml", path.read_bytes(), "application/rss+xml")
    got = list(inspect_target(url, now=NOW))
    want = list(inspect_file(path, now=NOW))
    assert [o["result"] for o in got] == ["enriched"] * len(want) and want
    assert all(o["origin"] == url for o in got)
    for g, w in zip(got, want, strict=True):
        assert g["record"]["content"]["title"] == w["record"]["content"]["title"]
        assert g["record"]["topics"] == w["record"]["topics"]
