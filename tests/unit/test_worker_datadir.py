"""The worker's Faust data directory lives under the settings' state_dir (streams/app.py), so a
worker or a test run leaves no ``<app id>-data`` folder in the current directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from feedpipe import settings as settings_module
from streams.app import create_app


def test_faust_data_goes_under_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, state = tmp_path / "checkout", tmp_path / "state" / "not-yet"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FEEDPIPE_STATE_DIR", str(state))
    monkeypatch.setenv("FEEDPIPE_APP_ID", "feedpipe-datadir-test")
    settings_module.settings.cache_clear()
    try:
        app = create_app()
        asyncio.run(app.on_first_start())  # where Faust creates its directories
    finally:
        settings_module.settings.cache_clear()
    assert list(cwd.iterdir()) == []
    assert app.conf.datadir == state / "feedpipe-datadir-test-data"
    assert (state / "feedpipe-datadir-test-data" / "v1" / "tables").is_dir()
