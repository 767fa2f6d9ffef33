"""Headless Chromium for the tests of the pages the read endpoint serves (test_ops_page.py,
test_demo_page.py)."""

from __future__ import annotations

import shutil

import pytest


def chromium() -> str:
    """Path of the chromium binary; fails the test when none is installed."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium not installed: apt-get install -y chromium (.ci/run does it)")
