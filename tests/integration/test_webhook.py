"""Webhook receiver on a real uvicorn server (127.0.0.1, free port) and a real Kafka broker.

Bodies are the real CMS payloads of the shared data directory (WordPress post, Drupal
article, Drupal error documents), signed as a push CMS would; every accepted event is read
back from ``cms.raw``. Topics may already hold records, so each test reads only the offsets
after the high watermarks taken before its requests.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pipeline import consume_all, high_watermarks

from connectors.webhook.app import create_webhook_app
from connectors.webhook.server import WebhookConnector
from connectors.webhook.signature import sign, verify_signature
from connectors.webhook.sources import WebhookSource
from feedpipe.errors import ConfigError
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.kafka.topics import TopicChange
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration

TOPIC = "cms.raw"
WP_SECRET_ENV = "FEEDPIPE_TEST_WEBHOOK_WP_SECRET"
DRUPAL_SECRET_ENV = "FEEDPIPE_TEST_WEBHOOK_DRUPAL_SECRET"
WP_SECRET = b"wp-test-secret-\xc3\xa9".decode()  # non-ASCII on purpose
DRUPAL_SECRET = "drupal-test-secret"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def sources() -> Iterator[dict[str, WebhookSource]]:
    mp = pytest.MonkeyPatch()
    mp.setenv(WP_SECRET_ENV, WP_SECRET)
    mp.setenv(DRUPAL_SECRET_ENV, DRUPAL_SECRET)
    try:
        yield {
            "wp-push": WebhookSource("wp-push", "wordpress.post", "frontity", WP_SECRET_ENV),
            "drupal-push": WebhookSource(
                "drupal-push", "drupal.node", "umami", DRUPAL_SECRET_ENV, max_body_bytes=MAX_BODY
            ),
        }
    finally:
        mp.undo()


@contextmanager
def serve(
    sources: dict[str, WebhookSource], producer: IdempotentProducer, ack_timeout_s: float = 15.0
) -> Iterator[str]:
    """Run a WebhookConnector on 127.0.0.1:<free port> in a thread; yields its base URL."""
    conn = WebhookConnector(sources, port=0, producer=producer, ack_timeout_s=ack_timeout_s)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            conn.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not conn.started.is_set():
        assert not errors, errors
        assert time.monotonic() < deadline, "webhook server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{conn.port}"
    finally:
        conn.stop()
        thread.join(20)
        assert not thread.is_alive()
        assert not errors, errors


@pytest.fixture(scope="module")
def base_url(sources: dict[str, WebhookSource], producer: IdempotentProducer) -> Iterator[str]:
    with serve(sources, producer) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def signed_headers(body: bytes, secret: str, ts: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if ts is None else ts
    return {
        "X-Feedpipe-Timestamp": str(stamp),
        "X-Feedpipe-Signature": sign(secret.encode(), stamp, body),
        "Content-Type": "application/json",
    }


def watermarks(bootstrap: str) -> dict[int, int]:
    return high_watermarks(bootstrap, TOPIC)


def read_events(bootstrap: str, start: dict[int, int], event_ids: set[str]) -> dict[str, Any]:
    """Decoded cms.raw records (with their Kafka key) found after ``start`` by event id; every
    id must be there (the receiver answers once Kafka acknowledged)."""
    decode = codec("RawCmsEvent").decode
    found: dict[str, Any] = {}
    for msg in consume_all(bootstrap, TOPIC, start):
        rec = decode(msg.value())
        if rec["event_id"] in event_ids:
            found[rec["event_id"]] = {**rec, "_key": msg.key()}
    assert set(found) == event_ids, f"missing {event_ids - set(found)} on {TOPIC}"
    return found


# -- signature scheme (pure) -----------------------------------------------------------------
def test_signature_scheme_matches_openssl_recipe() -> None:
    # printf '%s' '1700000000.{"id":1}' | openssl dgst -sha256 -hmac 'k' -> documented value
    import hashlib
    import hmac

    body = b'{"id":1}'
    expected = "sha256=" + hmac.new(b"k", b'1700000000.{"id":1}', hashlib.sha256).hexdigest()
    assert sign(b"k", 1700000000, body) == expected
    assert verify_signature(b"k", "1700000000", body, expected)
    assert verify_signature(b"k", "1700000000", body, "sha256=00," + expected)  # rotation
    assert not verify_signature(b"k", "1700000001", body, expected)
    assert not verify_signature(b"k", "1700000000", body + b" ", expected)
    assert not verify_signature(b"other", "1700000000", body, expected)
    assert not verify_signature(b"k", "1700000000", body, "sha256=é")


def test_missing_secret_env_is_a_config_error(producer: IdempotentProducer) -> None:
    src = WebhookSource("x", "wordpress.post", "b", "FEEDPIPE_TEST_UNSET_SECRET_VARIABLE")
    os.environ.pop(src.secret_env, None)
    with pytest.raises(ConfigError, match="FEEDPIPE_TEST_UNSET_SECRET_VARIABLE"):
        create_webhook_app({"x": src}, producer)


# -- accepted events reach Kafka -----------------------------------------------------------
def test_wordpress_post_is_acked_and_in_kafka(
    client: httpx.Client, kafka_bootstrap: str, data_dir: Path
) -> None:
    body = (data_dir / "wordpress" / "frontity" / "post-60.json").read_bytes()
    start = watermarks(kafka_bootstrap)
    r = client.post("/v1/webhooks/wp-push", content=body, headers=signed_headers(body, WP_SECRET))
    assert r.status_code == 202, r.text
    event_id = r.json()["event_id"]
    assert r.json()["event_ids"] == [event_id]
    rec = read_events(kafka_bootstrap, start, {event_id})[event_id]
    post = orjson.loads(body)
    assert rec["payload"] == body  # the CMS's own bytes, unchanged
    assert rec["kind"] == "wordpress.post" and rec["op"] == "upsert"
    assert rec["source"] == "wp-push" and rec["brand"] == "frontity"
    assert rec["source_id"] == str(post["id"])
    assert rec["_key"] == f"wp-push:{post['id']}".encode()
    assert rec["origin"].endswith("/v1/webhooks/wp-push")


def test_same_delivery_twice_has_the_same_event_id(client: httpx.Client, data_dir: Path) -> None:
    body = (data_dir / "wordpress" / "frontity" / "post-60.json").read_bytes()
    ids = [
        client.post(
            "/v1/webhooks/wp-push", content=body, headers=signed_headers(body, WP_SECRET)
        ).json()["event_id"]
        for _ in range(2)
    ]
    assert ids[0] == ids[1]


def test_wordpress_list_and_delete(
    client: httpx.Client, kafka_bootstrap: str, data_dir: Path
) -> None:
    posts = orjson.loads((data_dir / "wordpress" / "frontity" / "posts.json").read_bytes())[:3]
    trashed = {"deleted": True, "previous": {**posts[0], "status": "trash"}}
    body = orjson.dumps(posts)
    start = watermarks(kafka_bootstrap)
    r = client.post("/v1/webhooks/wp-push", content=body, headers=signed_headers(body, WP_SECRET))
    assert r.status_code == 202, r.text
    assert r.json()["count"] == 3
    del_body = orjson.dumps(trashed)
    r2 = client.post(
        "/v1/webhooks/wp-push", content=del_body, headers=signed_headers(del_body, WP_SECRET)
    )
    assert r2.status_code == 202, r2.text
    wanted = set(r.json()["event_ids"]) | {r2.json()["event_id"]}
    found = read_events(kafka_bootstrap, start, wanted)
    assert sorted(rec["source_id"] for rec in found.values() if rec["op"] == "upsert") == sorted(
        str(p["id"]) for p in posts
    )
    deleted = found[r2.json()["event_id"]]
    assert deleted["op"] == "delete" and deleted["source_id"] == str(posts[0]["id"])


def test_drupal_detail_is_acked_and_in_kafka(
    client: httpx.Client, kafka_bootstrap: str, data_dir: Path
) -> None:
    body = (data_dir / "drupal" / "drupal-kit" / "jsonapi_article_detail.json").read_bytes()
    start = watermarks(kafka_bootstrap)
    r = client.post(
        "/v1/webhooks/drupal-push", content=body, headers=signed_headers(body, DRUPAL_SECRET)
    )
    assert r.status_code == 202, r.text
    rec = read_events(kafka_bootstrap, start, {r.json()["event_id"]})[r.json()["event_id"]]
    assert rec["kind"] == "drupal.node" and rec["payload"] == body
    assert rec["source_id"] == orjson.loads(body)["data"]["id"]
    assert rec["content_type"] == "application/vnd.api+json"


# -- refused requests ------------------------------------------------------------------------
def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    reason = r.json()["reason"]
    assert isinstance(reason, str) and reason
    return reason


def test_unknown_source_is_404(client: httpx.Client) -> None:
    body = b'{"id": 1}'
    r = client.post("/v1/webhooks/nope", content=body, headers=signed_headers(body, WP_SECRET))
    _error(r, 404, "unknown_source")


def test_missing_and_bad_signatures_are_401(client: httpx.Client) -> None:
    body = b'{"id": 1, "title": {"rendered": "x"}}'
    _error(client.post("/v1/webhooks/wp-push", content=body), 401, "missing_signature")
    wrong_secret = signed_headers(body, DRUPAL_SECRET)
    r = client.post("/v1/webhooks/wp-push", content=body, headers=wrong_secret)
    _error(r, 401, "bad_signature")
    tampered = signed_headers(body, WP_SECRET)
    r = client.post("/v1/webhooks/wp-push", content=body + b" ", headers=tampered)
    _error(r, 401, "bad_signature")
    # the timestamp is part of the signed text: changing it breaks the signature
    moved = {**tampered, "X-Feedpipe-Timestamp": str(int(time.time()) + 1)}
    _error(client.post("/v1/webhooks/wp-push", content=body, headers=moved), 401, "bad_signature")
    bad_ts = {**tampered, "X-Feedpipe-Timestamp": "yesterday"}
    _error(client.post("/v1/webhooks/wp-push", content=body, headers=bad_ts), 400, "bad_timestamp")


def test_stale_and_future_timestamps_are_401(client: httpx.Client) -> None:
    body = b'{"id": 1}'
    for skew in (-301, 301, -86400):
        headers = signed_headers(body, WP_SECRET, int(time.time()) + skew)
        reason = _error(
            client.post("/v1/webhooks/wp-push", content=body, headers=headers),
            401,
            "stale_timestamp",
        )
        assert "tolerance 300 s" in reason


def test_body_over_limit_is_413(client: httpx.Client) -> None:
    big = b'{"id": 1, "x": "' + b"a" * MAX_BODY + b'"}'
    headers = signed_headers(big, DRUPAL_SECRET)
    r = client.post("/v1/webhooks/drupal-push", content=big, headers=headers)
    assert f"> limit {MAX_BODY}" in _error(r, 413, "body_too_large")  # from Content-Length

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = client.post("/v1/webhooks/drupal-push", content=chunks(), headers=headers)
    assert "transfer-encoding" in {k.lower() for k in r.request.headers}
    _error(r, 413, "body_too_large")


def test_invalid_json_is_400(client: httpx.Client) -> None:
    body = b'{"id": 1, "title": '
    r = client.post("/v1/webhooks/wp-push", content=body, headers=signed_headers(body, WP_SECRET))
    _error(r, 400, "invalid_json")


def test_json_that_is_not_a_post_is_422(client: httpx.Client) -> None:
    for body, code in [
        (b'{"title": "no id"}', "missing_id"),
        (b"[]", "not_a_post"),
        (b"42", "not_a_post"),
        (b'{"code": "rest_post_invalid_id", "message": "Invalid post ID."}', "wordpress_error"),
    ]:
        r = client.post(
            "/v1/webhooks/wp-push", content=body, headers=signed_headers(body, WP_SECRET)
        )
        _error(r, 422, code)


@pytest.mark.parametrize("name", ["jsonapi_include_error.json", "jsonapi_multiple_errors.json"])
def test_drupal_error_documents_are_422_with_detail(
    client: httpx.Client, data_dir: Path, name: str
) -> None:
    body = (data_dir / "drupal" / "drupal-kit" / name).read_bytes()
    r = client.post(
        "/v1/webhooks/drupal-push", content=body, headers=signed_headers(body, DRUPAL_SECRET)
    )
    reason = _error(r, 422, "jsonapi_error")
    for err in orjson.loads(body)["errors"]:
        assert err["detail"] in reason


def test_drupal_misspelt_error_document_is_422(client: httpx.Client, data_dir: Path) -> None:
    # the real jsonapi_index_error.json spells its member "errros": neither data nor errors
    body = (data_dir / "drupal" / "drupal-kit" / "jsonapi_index_error.json").read_bytes()
    r = client.post(
        "/v1/webhooks/drupal-push", content=body, headers=signed_headers(body, DRUPAL_SECRET)
    )
    assert "errros" in _error(r, 422, "not_an_article")


def test_drupal_index_is_422(client: httpx.Client, data_dir: Path) -> None:
    body = (data_dir / "drupal" / "drupal-kit" / "jsonapi_index.json").read_bytes()
    r = client.post(
        "/v1/webhooks/drupal-push", content=body, headers=signed_headers(body, DRUPAL_SECRET)
    )
    _error(r, 422, "not_an_article")


def test_metrics_count_rejections(client: httpx.Client) -> None:
    body = b'{"id": 1}'
    client.post("/v1/webhooks/wp-push", content=body, headers=signed_headers(body, DRUPAL_SECRET))
    metrics = client.get("/metrics").json()
    assert metrics["wp-push"]["rejected"]["bad_signature"] >= 1
    assert metrics["wp-push"]["published"] >= 1
    assert client.get("/healthz").json() == {"ok": True}


# -- broker down ------------------------------------------------------------------------------
def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def test_broker_down_is_503(sources: dict[str, WebhookSource], data_dir: Path) -> None:
    dead = IdempotentProducer(
        f"127.0.0.1:{_dead_port()}",
        client_id="test-webhook-dead",
        config={"message.timeout.ms": 4000, "reconnect.backoff.max.ms": 200, "log_level": 0},
    )
    body = (data_dir / "wordpress" / "frontity" / "post-60.json").read_bytes()
    with (
        serve(sources, dead, ack_timeout_s=1.0) as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        r = c.post("/v1/webhooks/wp-push", content=body, headers=signed_headers(body, WP_SECRET))
        reason = _error(r, 503, "kafka_unavailable")
        assert "acknowledge" in reason
    # the queued message then fails its delivery (message.timeout.ms): counted, never silent
    deadline = time.monotonic() + 20
    while dead.failed == 0:
        assert time.monotonic() < deadline, "delivery failure was never reported"
        dead.poll(0.2)
    assert dead.acked == 0


def test_worker_processes_share_the_port(
    sources: dict[str, WebhookSource],
    kafka_bootstrap: str,
    topics_applied: list[TopicChange],
    data_dir: Path,
) -> None:
    """workers=2: two spawned receiver processes (own producers) accept on one SO_REUSEPORT
    port; every request is acknowledged, each event reaches Kafka, and the supervisor sums
    both workers' metrics."""
    posts = orjson.loads((data_dir / "wordpress" / "frontity" / "posts.json").read_bytes())
    bodies = [orjson.dumps(p) for p in posts[:8]]
    conn = WebhookConnector(sources, port=0, workers=2, bootstrap=kafka_bootstrap)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(conn.run()), daemon=True)
    thread.start()
    assert conn.started.wait(90), "webhook workers did not start"
    start = watermarks(kafka_bootstrap)
    ids: set[str] = set()
    for i in range(24):  # a new connection per request: the kernel spreads them
        with httpx.Client(base_url=f"http://127.0.0.1:{conn.port}", timeout=30) as c:
            body = bodies[i % len(bodies)]
            headers = signed_headers(body, WP_SECRET)
            r = c.post("/v1/webhooks/wp-push", content=body, headers=headers)
            assert r.status_code == 202, r.text
            ids.add(r.json()["event_id"])
    bad = b"{not json"
    with httpx.Client(base_url=f"http://127.0.0.1:{conn.port}", timeout=30) as c:
        r = c.post("/v1/webhooks/wp-push", content=bad, headers=signed_headers(bad, WP_SECRET))
        assert r.status_code == 400
    conn.stop()
    thread.join(60)
    assert not thread.is_alive() and result, "supervisor did not return"
    metrics = result[0]
    assert metrics.published == 24 and metrics.fetched == 25
    assert metrics.rejected == {"invalid_json": 1}
    assert set(read_events(kafka_bootstrap, start, ids)) == ids  # 8 distinct deliveries
