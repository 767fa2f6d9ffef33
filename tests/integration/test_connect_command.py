"""`feedpipe connect` runs every kind declared in a connectors.yaml, as a real process:
an RSS poller (real feed over real HTTP), the signed webhook receiver, and a Debezium CDC
consumer; all publish to the real cms.raw; Ctrl-C (SIGINT) stops them cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pipeline import consume_all, free_port, high_watermarks

from connectors.simulator import FixtureServer
from connectors.webhook.signature import sign
from feedpipe.kafka.topics import TopicChange
from feedpipe.settings import ROOT
from feedpipe.wire.codec import codec

pytestmark = pytest.mark.integration
SECRET_ENV = "FEEDPIPE_TEST_CONNECT_SECRET"


def _cms_raw_since(bootstrap: str, start: dict[int, int]) -> list[dict[str, Any]]:
    decode = codec("RawCmsEvent").decode
    return [decode(m.value()) for m in consume_all(bootstrap, "cms.raw", start)]


def test_connect_runs_pollers_webhooks_and_cdc(
    kafka_bootstrap: str, topics_applied: list[TopicChange], data_dir: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    cdc_topic = f"cdc.wordpress.wp_posts.connect-{tag}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(cdc_topic, 1, 1)]).values():
        fut.result(30)
    port = free_port()
    feed = (data_dir / "feeds/realworld/rsparser__macworld.rss").read_bytes()
    with FixtureServer() as server:
        server.set_feed("macworld", feed, "application/rss+xml")
        cfg = {
            "sources": [
                {
                    "name": f"rss-{tag}",
                    "kind": "rss",
                    "brand": "feeds",
                    "url": f"{server.base}/feeds/macworld",
                    "schedule_s": 0.5,
                    "cursor_dir": str(tmp_path),
                }
            ],
            "webhooks": {
                "port": port,
                "sources": [
                    {
                        "name": f"hook-{tag}",
                        "kind": "wordpress.post",
                        "brand": "frontity",
                        "secret_env": SECRET_ENV,
                    }
                ],
            },
            "cdc": [{"name": f"cdc-{tag}", "brand": "frontity", "topic": cdc_topic}],
        }
        path = tmp_path / "connectors.yaml"
        path.write_bytes(orjson.dumps(cfg))  # JSON is YAML
        start = high_watermarks(kafka_bootstrap, "cms.raw")
        env = {**os.environ, SECRET_ENV: "s3cret", "FEEDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap}
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "connect", "--config", str(path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            post = orjson.loads((data_dir / "wordpress/frontity/post-60.json").read_bytes())
            body = orjson.dumps(post)
            deadline = time.monotonic() + 60
            status = None
            while status != 202:
                assert time.monotonic() < deadline and proc.poll() is None, "receiver not up"
                ts = int(time.time())
                try:
                    status = httpx.post(
                        f"http://127.0.0.1:{port}/v1/webhooks/hook-{tag}",
                        content=body,
                        headers={
                            "X-Feedpipe-Timestamp": str(ts),
                            "X-Feedpipe-Signature": sign(b"s3cret", ts, body),
                            "Content-Type": "application/json",
                        },
                        timeout=5,
                    ).status_code
                except httpx.TransportError:
                    time.sleep(0.3)
            row = {
                "ID": 7,
                "post_author": 1,
                "post_date_gmt": 1709634030000,
                "post_content": "<p>Body</p>",
                "post_title": "From the binlog",
                "post_excerpt": "",
                "post_status": "publish",
                "post_name": "from-binlog",
                "post_modified_gmt": 1709634031000,
                "guid": "https://blog.example.org/?p=7",
                "post_type": "post",
            }
            p = Producer({"bootstrap.servers": kafka_bootstrap})
            p.produce(
                cdc_topic,
                key=b"7",
                value=orjson.dumps(
                    {
                        "before": None,
                        "after": row,
                        "op": "c",
                        "ts_ms": 1709634031000,
                        "source": {"connector": "mysql", "db": "wordpress", "table": "wp_posts"},
                    }
                ),
            )
            assert p.flush(10) == 0
            sources: set[str] = set()
            while sources != {f"rss-{tag}", f"hook-{tag}", f"cdc-{tag}"}:
                assert time.monotonic() < deadline, f"only {sources} reached cms.raw"
                sources = {r["source"] for r in _cms_raw_since(kafka_bootstrap, start)}
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    recs = [r for r in _cms_raw_since(kafka_bootstrap, start) if r["source"].endswith(tag)]
    kinds = {r["source"]: r["kind"] for r in recs}
    assert kinds == {
        f"rss-{tag}": "feed.document",
        f"hook-{tag}": "wordpress.post",
        f"cdc-{tag}": "wordpress.post",
    }
    assert sum(r["source"] == f"rss-{tag}" for r in recs) == 1  # unchanged feed: once
    assert f"rss-{tag}" in text and f"cdc-{tag}" in text  # per-source metrics printed
