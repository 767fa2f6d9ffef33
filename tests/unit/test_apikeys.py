"""The key check both HTTP services use (feedpipe/apikeys.py): token from the headers, scope,
token bucket with a cost."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from feedpipe.apikeys import (
    SCOPES,
    KeyAuthority,
    KeyStore,
    TokenBucket,
    create_key,
    presented_token,
)


def test_token_comes_from_x_api_key_or_bearer() -> None:
    assert presented_token({b"x-api-key": b"fpk_a"}) == b"fpk_a"
    assert presented_token({b"authorization": b"Bearer  fpk_b "}) == b"fpk_b"
    assert presented_token({b"authorization": b"bearer fpk_c"}) == b"fpk_c"
    assert presented_token({b"authorization": b"Basic eDp5"}) is None
    assert presented_token({b"x-api-key": b""}) is None
    assert presented_token({}) is None


def test_check_gives_401_403_429_and_grants(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, writer = create_key(path, "w", ["events:write"], rate_per_s=0.001, burst=3)
    _, reader = create_key(path, "r", ["feeds:read"])
    _, admin = create_key(path, "a", ["admin"])
    auth = KeyAuthority(KeyStore(path))
    assert "events:write" in SCOPES
    assert auth.check(None, "events:write").status == 401
    assert auth.check(b"fpk_unknown", "events:write").status == 401
    denied = auth.check(reader.encode(), "events:write")
    assert (denied.status, denied.key is not None) == (403, True)
    assert auth.check(admin.encode(), "events:write").status == 0  # admin implies it
    assert auth.check(writer.encode(), "events:write", cost=2).status == 0
    assert auth.check(writer.encode(), "events:write").status == 0
    limited = auth.check(writer.encode(), "events:write")
    assert limited.status == 429
    assert dict(limited.headers)[b"retry-after"] == b"1000"  # 1 token at 0.001/s


def test_bucket_cost_is_all_or_nothing() -> None:
    now = [0.0]
    bucket = TokenBucket(1.0, 5, clock=lambda: now[0])
    assert bucket.take(4) == 0.0
    assert bucket.take(2) == 1.0  # 1 left: 1 s until 2; nothing taken
    assert bucket.take(1) == 0.0
    now[0] = 3.0
    assert bucket.take(3) == 0.0


def test_refresh_keeps_the_previous_keys_on_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, token = create_key(path, "r", ["feeds:read"])
    store = KeyStore(path)
    assert not store.refresh()  # unchanged file: not re-read
    path.write_text("{not json")
    os.utime(path, (1, 1))  # make sure the mtime moves on coarse filesystems
    assert not store.refresh()  # logged, not raised
    assert store.lookup(token) is not None
    create_key(path.with_name("other.json"), "w", ["events:write"])
    path.write_bytes(path.with_name("other.json").read_bytes())
    os.utime(path, (2, 2))
    assert store.refresh()
    assert store.lookup(token) is None and len(store) == 1


def test_watch_refreshes_until_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    _, token = create_key(path, "r", ["feeds:read"])

    async def run() -> None:
        task = asyncio.create_task(store.watch(0.001))
        while store.lookup(token) is None:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(run(), 5.0))
