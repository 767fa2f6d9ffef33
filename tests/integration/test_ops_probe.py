"""The worker's lag probe runs in a child process (feedpipe/monitoring/exporter.py ProbeProcess): a
crash of the child (librdkafka can abort a process when the broker restarts) costs one probe of
ERR rows, never the worker, and the next probe starts a new child. Real broker, real SIGKILL."""

from __future__ import annotations

import os
import signal

import pytest

from feedpipe.kafka.topics import TopicChange
from feedpipe.monitoring.exporter import ProbeProcess

pytestmark = pytest.mark.integration


def test_probe_child_killed_then_replaced(
    kafka_bootstrap: str, topics_applied: list[TopicChange]
) -> None:
    probe = ProbeProcess(kafka_bootstrap, timeout_s=5.0, deadline_s=3.0)
    groups = {"feedpipe-probe-test": ["reader.events"]}
    try:
        rows = probe.probe(groups)
        assert [r.partition for r in rows] == [0, 1, 2, 3]
        assert all(r.sample.error is None and r.sample.end >= 0 for r in rows)
        first = probe._proc.pid
        os.kill(first, signal.SIGKILL)  # what an abort() in librdkafka does to the child
        probe._proc.join(5)
        again = probe.probe(groups)  # a dead child is replaced before the next probe
        assert [r.partition for r in again] == [0, 1, 2, 3]
        assert all(r.sample.error is None for r in again)
        second = probe._proc.pid
        assert second != first and probe.restarts == 2
        os.kill(second, signal.SIGSTOP)  # a hung child: no answer within deadline_s
        hung = probe.probe(groups)
        assert len(hung) == 1 and hung[0].sample.error is not None
        assert "lag probe process failed" in hung[0].sample.error
        assert probe._proc is None  # killed
        third = probe.probe(groups)
        assert [r.partition for r in third] == [0, 1, 2, 3] and probe.restarts == 3
    finally:
        probe.close()
