"""Reading a freshly created topic: its partitions may have no leader for a moment after the
session's topics were applied, and ``get_watermark_offsets`` then fails with
NOT_LEADER_FOR_PARTITION."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from pipeline import high_watermarks

NO_LEADER = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)


def led_high_watermarks(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """:func:`pipeline.high_watermarks`, retried every 0.5 s for up to ``timeout_s`` seconds
    while a partition has no leader yet; other errors are raised at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return high_watermarks(bootstrap, topic)
        except KafkaException as exc:
            if exc.args[0].code() not in NO_LEADER or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
