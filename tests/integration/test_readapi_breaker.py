"""The Redis circuit breaker for real: a redis-server process of its own is stopped, frozen
(SIGSTOP: slow, not down) and restarted while the read endpoint serves feeds.

While Redis is unavailable, feeds come from the in-memory trending snapshot (200, ``stale``),
never a 5xx; after the restart the personalised level comes back by itself. Waits are polls
with generous deadlines; nothing asserts on wall time.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from feedpipe.apikeys import create_key
from feedpipe.store.keys import keys
from ops.infra import RedisServer
from readapi.app import create_app

pytestmark = pytest.mark.integration

BRAND = "brk"
USER = "reader-1"
NOW_MS = 1_700_000_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(url: str) -> None:
    k = keys()
    r = redis.Redis.from_url(url)
    for n in range(1, 6):
        cid = f"brk-c{n}"
        doc = {"content_id": cid, "brand": BRAND, "title": f"Item {n}", "url": f"https://e.test/{n}",
               "summary": "s", "categories": ["x"], "published_at": NOW_MS - n}
        r.set(k.content(cid), orjson.dumps(doc))
    r.set(
        k.feed(USER),
        orjson.dumps(
            {
                "user_id": USER,
                "generated_at": NOW_MS,
                "ranker": "affinity",
                "profile_version": 1,
                "items": [
                    {"content_id": "brk-c1", "brand": BRAND, "rank": 1, "score": 0.9},
                    {"content_id": "brk-c2", "brand": BRAND, "rank": 2, "score": 0.8},
                ],
            }
        ),
    )
    r.set(k.trending_epoch(BRAND, 0), 7)
    r.zadd(k.trending(BRAND, 7, 0), {"brk-c3": 3.0, "brk-c4": 2.0, "brk-c5": 1.0})
    r.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "state", port=_free_port())
    url = server.start()
    _seed(url)
    try:
        yield server
    finally:
        pid = server.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def api(own_redis: RedisServer, tmp_path: Path) -> Iterator[TestClient]:
    keys_path = tmp_path / "keys.json"
    _, token = create_key(keys_path, "t", ["admin"], 10_000, 10_000)
    app = create_app(
        own_redis.url,
        default_brand=BRAND,
        keys_path=keys_path,
        breaker_failures=3,
        breaker_reset_s=1.0,
        redis_timeout_ms=200,
    )
    with TestClient(app, headers={"X-API-Key": token}) as c:
        yield c


def _until(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _feed(api: TestClient) -> Any:
    resp = api.get(f"/v1/feeds/{USER}")
    assert resp.status_code == 200, resp.text  # never a 5xx while a snapshot exists
    return resp


def _metric(api: TestClient, name: str) -> float:
    total = 0.0
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_redis_stopped_and_restarted(api: TestClient, own_redis: RedisServer) -> None:
    body = _feed(api).json()
    assert body["source"] == "personalised"
    assert [i["content_id"] for i in body["items"]] == ["brk-c1", "brk-c2"]
    assert api.get("/readyz").json()["snapshots"] >= 1

    own_redis.stop()  # the real redis-server process exits
    assert own_redis.pid() is None

    first = _feed(api)
    doc = first.json()
    assert (doc["source"], doc["reason"], doc["stale"]) == (
        "trending_snapshot",
        "redis_unavailable",
        True,
    )
    assert first.headers["x-feed-source"] == "trending_snapshot"
    assert [i["content_id"] for i in doc["items"]] == ["brk-c3", "brk-c4", "brk-c5"]
    assert doc["snapshot_at"] is not None

    # Three consecutive failures open the circuit: later requests fail fast with the reason.
    opened = _until(
        lambda: (r := _feed(api)).json()["reason"] == "circuit_open" and r, "circuit open"
    )
    assert opened.headers["x-feed-fallback-reason"] == "circuit_open"
    assert api.get("/healthz").json()["circuit"] in ("open", "half_open")
    ready = api.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
    assert _metric(api, "feedpipe_api_redis_errors_total") >= 3
    assert _metric(api, "feedpipe_api_redis_circuit_opened_total") >= 1
    # A brand without a snapshot has no ladder level left: 503 with Retry-After.
    none = api.get(f"/v1/feeds/{USER}", params={"brand": "nosnapshot"})
    assert none.status_code == 503
    assert int(none.headers["retry-after"]) >= 1
    # Non-feed routes fail fast too.
    assert api.get("/v1/content/brk-c1").status_code == 503

    own_redis.start()  # same data (append-only file)

    back = _until(
        lambda: _feed(api).json()["source"] == "personalised", "personalised after restart"
    )
    assert back
    assert api.get("/healthz").json()["circuit"] == "closed"
    assert api.get("/readyz").json()["status"] == "ready"
    assert api.get("/v1/content/brk-c1").status_code == 200


def test_redis_frozen_times_out_then_recovers(api: TestClient, own_redis: RedisServer) -> None:
    assert _feed(api).json()["source"] == "personalised"
    pid = own_redis.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # slow, not down: connections hang until the socket timeout
    try:
        doc = _feed(api).json()
        assert (doc["source"], doc["reason"]) == ("trending_snapshot", "redis_unavailable")
        _until(lambda: _feed(api).json()["reason"] == "circuit_open", "circuit open")
        assert _metric(api, 'feedpipe_api_redis_errors_total{kind="timeout"}') >= 1
    finally:
        os.kill(pid, signal.SIGCONT)
    _until(lambda: _feed(api).json()["source"] == "personalised", "personalised after SIGCONT")
    assert api.get("/healthz").json()["circuit"] == "closed"
