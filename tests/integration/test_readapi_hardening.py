"""Read endpoint input hardening against a real Redis: hostile path and query values are refused
with 4xx before any Redis command carries them (proven with Redis MONITOR), oversize requests
are refused (through a real uvicorn server, so the HTTP parser is in the loop), and the
OpenAPI-described parameters fuzzed with hypothesis never give a 5xx."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readapi_support import Tokens, World
from starlette.testclient import TestClient

from readapi.app import create_app
from readapi.gateway import MAX_HEADER_BYTES, MAX_PATH_BYTES, MAX_QUERY_BYTES

pytestmark = pytest.mark.integration

MARK = "zq7hostile"
"""Put in every hostile value, so a Redis command that carried one is easy to spot."""
HOSTILE = [
    f"{MARK}*",
    f"{MARK}:x",
    f"{MARK}{{x}}",
    f"{MARK}\n",
    f"{MARK}\r\nSET a b",
    f"{MARK}\x00",
    f"{MARK}é",
    f"{MARK}\u202e",
    f"{MARK}" + "a" * 900,  # past safe_id's 128 characters, under the gateway's path limit
    f"{MARK}..",
    f"..{MARK}",
    f"{MARK} x",
    f"{MARK}%",
    f"{MARK}?",
]


@pytest.fixture(scope="module")
def client(redis_url: str, world: World, tokens: Tokens) -> Iterator[TestClient]:
    application = create_app(redis_url, default_brand=world.brand_a, keys_path=tokens.path)
    with TestClient(application) as c:
        yield c


class Monitor:
    """Every command Redis executes while active (Redis MONITOR on a dedicated connection)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[str] = []
        self.stop_token = f"monitor-stop-{uuid.uuid4().hex}"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        r = redis.Redis.from_url(self.url)
        with r.monitor() as m:
            self._ready.set()
            for cmd in m.listen():
                text = str(cmd.get("command", ""))
                if self.stop_token in text:
                    return
                self.commands.append(text)

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._ready.wait(10)
        # MONITOR is acknowledged before listen starts: sync on a first marker command
        r = redis.Redis.from_url(self.url)
        start = f"monitor-start-{uuid.uuid4().hex}"
        r.echo(start)
        for _ in range(200):
            if any(start in c for c in self.commands):
                break
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        redis.Redis.from_url(self.url).echo(self.stop_token)
        self._thread.join(10)
        assert not self._thread.is_alive()


def _routes(world: World) -> list[tuple[str, str]]:
    """(path template with {v}, API key kind) for every route taking a path value."""
    return [
        ("/v1/feeds/{v}", "feeds"),
        ("/v1/content/{v}", "feeds"),
        ("/v1/profiles/{v}", "profiles"),
        ("/v1/experiments/{v}", "admin"),
    ]


def _key(tokens: Tokens, kind: str) -> dict[str, str]:
    return {"X-API-Key": getattr(tokens, kind)}


def test_hostile_values_are_refused_before_redis(
    client: TestClient, redis_url: str, world: World, tokens: Tokens
) -> None:
    statuses: list[tuple[str, int]] = []
    with Monitor(redis_url) as mon:
        for value in HOSTILE:
            quoted = quote(value, safe="")
            for template, kind in _routes(world):
                path = template.format(v=quoted)
                statuses.append((path, client.get(path, headers=_key(tokens, kind)).status_code))
            for param in ("brand", "cursor", "limit", "explain"):
                path = f"/v1/feeds/{world.user}?{param}={quoted}"
                statuses.append((path, client.get(path, headers=_key(tokens, "feeds")).status_code))
            path = f"/v1/trending?brand={quoted}"
            statuses.append((path, client.get(path, headers=_key(tokens, "feeds")).status_code))
        assert mon.commands, "MONITOR saw nothing: the check would prove nothing"
    assert [(p, s) for p, s in statuses if not 400 <= s < 500] == []
    assert [c for c in mon.commands if MARK in c] == []


def test_valid_requests_do_reach_redis(
    client: TestClient, redis_url: str, world: World, tokens: Tokens
) -> None:
    # the control for the test above: a valid id does show up in MONITOR
    with Monitor(redis_url) as mon:
        assert (
            client.get(f"/v1/feeds/{world.user}", headers=_key(tokens, "feeds")).status_code == 200
        )
    assert any(world.user in c for c in mon.commands)


def test_body_on_get_is_refused(client: TestClient, world: World, tokens: Tokens) -> None:
    r = client.request(
        "GET", f"/v1/feeds/{world.user}", headers=_key(tokens, "feeds"), content=b"x" * 10
    )
    assert r.status_code == 413
    assert "body" in r.json()["error"]


@pytest.fixture(scope="module")
def server(redis_url: str, world: World, tokens: Tokens) -> Iterator[tuple[str, int]]:
    """The app behind a real uvicorn on a free port (the HTTP parser in the loop)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    application = create_app(redis_url, default_brand=world.brand_a, keys_path=tokens.path)
    srv = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning")
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(500):
        if srv.started:
            break
        time.sleep(0.01)
    assert srv.started
    yield "127.0.0.1", port
    srv.should_exit = True
    t.join(10)


def _raw_request(addr: tuple[str, int], head: bytes, body: bytes = b"") -> int:
    """Send a raw HTTP/1.1 request; the response status (0 when the server just closed)."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return 0
            data += chunk
    return int(data.split(b" ", 2)[1])


def _head(path: str, extra: str = "", token: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: t\r\nX-API-Key: {token}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("size", [MAX_PATH_BYTES + 1, 10_000, 100_000])
def test_huge_url_is_refused(server: tuple[str, int], tokens: Tokens, size: int) -> None:
    status = _raw_request(server, _head("/v1/feeds/" + "u" * size, token=tokens.feeds))
    assert 400 <= status < 500
    q = _raw_request(server, _head("/v1/trending?brand=" + "b" * size, token=tokens.feeds))
    assert 400 <= q < 500
    if size < 16_000:  # below the HTTP parser's own limit, this layer answers
        assert status == 414 and q == 414


@pytest.mark.parametrize("size", [MAX_HEADER_BYTES + 1, 100_000])
def test_huge_header_is_refused(server: tuple[str, int], tokens: Tokens, size: int) -> None:
    status = _raw_request(server, _head("/healthz", f"X-Pad: {'p' * size}\r\n", tokens.feeds))
    assert 400 <= status < 500
    if size < 16_000:
        assert status == 431


def test_body_on_get_is_refused_over_http(
    server: tuple[str, int], tokens: Tokens, world: World
) -> None:
    body = b"x" * 1000
    status = _raw_request(
        server,
        _head(f"/v1/feeds/{world.user}", f"Content-Length: {len(body)}\r\n", tokens.feeds),
        body,
    )
    assert status == 413
    chunked = _raw_request(
        server,
        _head(f"/v1/feeds/{world.user}", "Transfer-Encoding: chunked\r\n", tokens.feeds),
        b"3\r\nabc\r\n0\r\n\r\n",
    )
    assert chunked == 413


def test_limits_leave_room_for_every_valid_request(
    client: TestClient, world: World, tokens: Tokens
) -> None:
    longest_id = "u" * 128
    r = client.get(
        f"/v1/feeds/{longest_id}?limit=100&brand={'b' * 128}&explain=true"
        "&cursor=personalised.99999.99999",
        headers=_key(tokens, "feeds"),
    )
    assert r.status_code == 200
    assert len(f"limit=100&brand={'b' * 128}&explain=true") < MAX_QUERY_BYTES


_QUERY = st.dictionaries(
    st.sampled_from(["limit", "brand", "explain", "cursor"]),
    st.one_of(st.text(max_size=30), st.sampled_from(["1", "100", "true", "latest.0.0"])),
    max_size=4,
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(["/v1/feeds/{v}", "/v1/content/{v}", "/v1/profiles/{v}"]),
    value=st.one_of(st.text(min_size=1, max_size=40), st.just("U1")),
    query=_QUERY,
)
def test_fuzzed_parameters_never_give_5xx(
    client: TestClient, tokens: Tokens, route: str, value: str, query: dict[str, str]
) -> None:
    path = route.format(v=quote(value, safe=""))
    r = client.get(path, params=query, headers=_key(tokens, "admin"))
    assert r.status_code < 500, (path, query, r.text)
    if r.status_code >= 400:
        assert r.json()["error"]
