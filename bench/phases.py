"""CPU time of the click path split by phase, from the process's own counters (bench helper).

:func:`install` wraps the click path's phase functions (by module attribute, so the same
hooks work on any checkout of the tree) with ``time.process_time`` counters. Phases nest
exclusively: a phase's time excludes the phases called inside it (e.g. ``redis`` is the
writer's time minus the fold, ranking and encoding it calls). ``process_time`` counts every
thread of the process, so librdkafka's and the delivery settler's threads land in the phase
that was running, or in ``other`` (consumer fetch and record parsing, commits, asyncio).

Phases: decode (Avro -> dicts, validation), fold (admission, profile update, signals),
rank (candidate scoring and feed documents), encode (profile and feed codecs, the UserFeed
record's build, Avro outputs), redis (reads, the MULTI/EXEC, the watermark, republish),
produce (queueing output records).
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

PHASES = ("decode", "fold", "rank", "encode", "redis", "produce")
CPU: dict[str, float] = dict.fromkeys(PHASES, 0.0)
OUT_BYTES: dict[str, int] = {}
"""Output topic -> bytes of the keys and values sent (broker and network load)."""
_STACK: list[list[float]] = []  # [start, nested] per running phase


def _enter() -> None:
    _STACK.append([time.process_time(), 0.0])


def _leave(phase: str) -> None:
    start, nested = _STACK.pop()
    spent = time.process_time() - start
    CPU[phase] += spent - nested
    if _STACK:
        _STACK[-1][1] += spent


def timed(phase: str, fn: Any) -> Any:
    """``fn`` (sync or coroutine function) counting its exclusive CPU into ``phase``."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrap(*args: Any, **kwargs: Any) -> Any:
            _enter()
            try:
                return await fn(*args, **kwargs)
            finally:
                _leave(phase)

        return awrap

    @functools.wraps(fn)
    def wrap(*args: Any, **kwargs: Any) -> Any:
        _enter()
        try:
            return fn(*args, **kwargs)
        finally:
            _leave(phase)

    return wrap


class _TimedCodec:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.encode = timed("encode", inner.encode)
        self.decode = inner.decode


def install() -> None:
    """Wrap the phase functions of the checkout on ``sys.path`` (missing names are skipped,
    so an older or newer tree is measured with what it has)."""
    from streams.clickpath import consumer, fold, path, publish, write

    hooks = [
        (path, "decode", "decode"),
        (write, "fold", "fold"),
        (fold, "rank_users", "rank"),
        (fold, "rank_feeds", "rank"),
        (fold, "feed_json", "rank"),
        (fold, "rank_plan", "rank"),
        (write, "encode_profile", "encode"),
        (write, "encode_feed", "encode"),
        (publish, "user_feed_record", "encode"),
        (write, "apply", "redis"),
        (publish, "republish", "redis"),
        (publish, "release_arrived", "redis"),
        (consumer, "held_partitions", "redis"),
    ]
    for mod, name, phase in hooks:
        if hasattr(mod, name):
            setattr(mod, name, timed(phase, getattr(mod, name)))
    real_codec = publish.codec
    cache: dict[str, _TimedCodec] = {}

    def codec(subject: str) -> Any:
        got = cache.get(subject)
        if got is None:
            got = cache[subject] = _TimedCodec(real_codec(subject))
        return got

    publish.codec = codec  # type: ignore[attr-defined]
    real_init = path.ClickPath.__init__

    def init(self: Any, send: Any, *args: Any, **kwargs: Any) -> None:
        async def counted(topic: str, key: bytes | None, value: bytes | None) -> Any:
            OUT_BYTES[topic] = OUT_BYTES.get(topic, 0) + len(key or b"") + len(value or b"")
            return await send(topic, key, value)

        real_init(self, timed("produce", counted), *args, **kwargs)

    path.ClickPath.__init__ = init  # type: ignore[method-assign]
