"""The asyncio clients' hiredis command packer (feedpipe/store/client.py): the same RESP bytes
as redis-py's own packer, redis-py's errors for arguments it rejects, and the class on every
kind of asyncio client."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from feedpipe.store.client import HiredisConnection, async_client

COMMANDS = [
    ("SET", "fp:k", b"\x00\xff value", "EX", 60),
    ("ZADD", "fp:z", 1.5, "a", -0.1, "b", 1e300, "c", 5e-324, "d", float("inf"), "e"),
    ("EVAL", "return 0", 2, "k1", "k2", 2**70, -(2**63)),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", b"x"),
    ("SET", "fp:é", "日本" * 5000),
    ("HSET", "fp:h", "f", memoryview(b"view"), "g", bytearray(b"array")),
    ("PING",),
]


@pytest.mark.parametrize("args", COMMANDS)
def test_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    ours = b"".join(HiredisConnection().pack_command(*args))
    theirs = b"".join(aioredis.Connection().pack_command(*args))
    assert ours == theirs


def test_pipeline_packing_same_bytes() -> None:
    ours = b"".join(HiredisConnection().pack_commands(COMMANDS))
    theirs = b"".join(aioredis.Connection().pack_commands(COMMANDS))
    assert ours == theirs


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_rejected_arguments_raise_data_error(bad: object) -> None:
    with pytest.raises(DataError):
        HiredisConnection().pack_command("SET", "k", bad)


def test_other_encoding_goes_through_redis_py() -> None:
    conn = HiredisConnection(encoding="latin-1")
    packed = b"".join(conn.pack_command("SET", "k", "é"))
    assert packed == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n"


def test_single_redis_client_uses_it() -> None:
    r = async_client("redis://127.0.0.1:1/0", cluster=False)
    assert r.connection_pool.connection_class is HiredisConnection


def test_tls_url_keeps_redis_py_class() -> None:
    r = async_client("rediss://127.0.0.1:1/0", cluster=False)
    assert r.connection_pool.connection_class is aioredis.SSLConnection


def test_cluster_client_nodes_use_it() -> None:
    rc = async_client("redis://127.0.0.1:1", cluster=True)
    assert rc.nodes_manager.connection_kwargs["connection_class"] is HiredisConnection
    nodes = [*rc.startup_nodes, *rc.nodes_manager.startup_nodes.values()]
    assert nodes and all(n.connection_class is HiredisConnection for n in nodes)
