"""Helpers of the event collector's integration tests (test_collector.py,
test_collector_schema.py): API keys of each kind and a collector served on a real uvicorn
server in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.collector.server import CollectorServer
from feedpipe.apikeys import create_key
from feedpipe.kafka.producer import IdempotentProducer

ORIGIN = "http://newsroom.example"
"""The CORS origin the served collector allows."""


@dataclass(frozen=True)
class Keys:
    """A keys file and the tokens in it: ``writer`` (events:write, 1,000/s), ``reader``
    (feeds:read only), ``slow`` (events:write, 0.01/s, burst 2)."""

    path: Path
    writer: str
    reader: str
    slow: str


def make_keys(path: Path) -> Keys:
    """Write the :class:`Keys` tokens to the keys file ``path``."""
    _, writer = create_key(path, "front end", ["events:write"], 1000.0, 1000)
    _, reader = create_key(path, "reader", ["feeds:read"])
    _, slow = create_key(path, "slow", ["events:write"], 0.01, 2)
    return Keys(path, writer, reader, slow)


@contextmanager
def serve(producer: IdempotentProducer, keys_path: Path, **kw: Any) -> Iterator[CollectorServer]:
    """A :class:`CollectorServer` on a free port (CORS origin :data:`ORIGIN`), running in a
    thread until the block ends; ``kw`` goes to the server."""
    srv = CollectorServer(producer, keys_path, cors_origins=[ORIGIN], **kw)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    assert srv.started.wait(20), "collector did not start"
    try:
        yield srv
    finally:
        srv.stop()
        thread.join(20)
        assert not thread.is_alive()
