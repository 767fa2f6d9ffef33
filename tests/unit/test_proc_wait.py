"""ops.infra._proc.wait_ready, the one wait loop of every local process start (no process:
the conditions are plain callables)."""

from __future__ import annotations

import pytest

from ops.infra._proc import InfraError, wait_ready


def test_returns_once_ready() -> None:
    polls = iter([False, False, True])
    wait_ready(lambda: next(polls), 60.0, failed=lambda why: why, interval_s=0.0)
    assert next(polls, None) is None  # polled exactly three times


def test_an_exited_process_fails_at_once_with_its_message() -> None:
    checks: list[str] = []

    def exited() -> bool:
        checks.append("exited")
        return True

    with pytest.raises(InfraError, match=r"^worker exited: log$"):
        wait_ready(lambda: False, 60.0, exited=exited, failed=lambda why: f"worker {why}: log")
    assert checks == ["exited"]


def test_a_process_that_never_answers_times_out() -> None:
    with pytest.raises(InfraError, match=r"^timeout$"):
        wait_ready(lambda: False, 0.0, failed=lambda why: why, interval_s=0.0)
