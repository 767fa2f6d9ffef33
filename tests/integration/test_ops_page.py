"""The ops page in headless Chromium against a running pipeline (real Kafka, Redis, worker and
read endpoint): it shows live non-zero numbers, then says clearly that the snapshot is stale
once the worker stopped. Screenshots are kept in tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from browser_support import chromium
from pipeline import drain, running_pipeline

from connectors.replay import replay_all
from feedpipe.kafka.lag import pipeline_groups
from feedpipe.topology import topology
from ops import services

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SOURCES = ["frontity-wp", "feeds-edge"]  # real WordPress posts + feed files with rejects (DLQ)


def browse(url: str, *extra: str) -> str:
    """Load ``url`` headless; let its scripts run 8 s of virtual time; return stdout."""
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1400,1300", "--virtual-time-budget=8000", *extra, url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def kpi(dom: str, name: str) -> str:
    m = re.search(rf'id="kpi-{name}">([^<]*)<', dom)
    assert m, f"kpi-{name} missing"
    return m.group(1)


def number(text: str) -> float:
    return float(text.replace(",", "")) if text not in ("", "\u2013") else float("nan")


def wait_snapshot(base: str, pred: object, timeout_s: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    doc: dict[str, object] = {}
    while time.monotonic() < deadline:
        doc = httpx.get(f"{base}/v1/ops/snapshot?history=10", timeout=5).json()
        if callable(pred) and pred(doc):
            return doc
        time.sleep(0.5)
    raise AssertionError(f"snapshot condition not met in {timeout_s} s: {str(doc)[:500]}")


def test_ops_page_shows_live_numbers_then_stale(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, data_dir: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with running_pipeline(kafka_bootstrap, redis_url, tmp_path) as s:
        base = f"http://{s.api_host}:{s.api_port}"
        published = replay_all(topology(), data_dir, SOURCES, bootstrap=s.kafka_bootstrap)
        assert sum(m.published for m in published.values()) > 0
        drain(s.kafka_bootstrap, s.app_id)
        doc = wait_snapshot(
            base,
            lambda d: bool(d["snapshot"])
            and d["snapshot"]["agents"].get("enrich", {}).get("events_in", 0) > 0
            and d["snapshot"]["dlq_total"] > 0
            and len(d["history"]) >= 3,
        )
        snap = doc["snapshot"]
        assert isinstance(snap, dict)
        assert doc["stale"] is False

        dom = browse(f"{base}/ops", "--dump-dom")
        assert 'data-live="1"' in dom
        assert 'id="stale" class="on"' not in dom
        assert number(kpi(dom, "events")) >= snap["agents"]["enrich"]["events_in"]
        assert number(kpi(dom, "dlq")) >= 1
        assert number(kpi(dom, "lag")) >= 0
        assert re.search(r'<span id="status" class="(OK|WARN)">(OK|WARN)</span>', dom), (
            "consumer lag status badge not rendered"
        )
        # charts drew lines, the DLQ table names a real reason, the lag table lists partitions
        assert dom.count("<polyline") >= 4
        reasons = {d["reason"] for d in snap["dlq"]}
        assert any(f">{r}<" in dom for r in reasons)
        groups = pipeline_groups(s.app_id)  # the Faust group and the click path's group
        parts = sum(topology().topics[t].partitions for ts in groups.values() for t in ts)
        assert len(re.findall(r"<tr><td>[a-z.]+</td><td>\d+</td>", dom)) == parts
        browse(f"{base}/ops", f"--screenshot={ARTIFACTS / 'ops-page-live.png'}")
        assert (ARTIFACTS / "ops-page-live.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # the worker stops: the API keeps serving the last snapshot, flagged stale
        services.stop(services.worker_service(s), s)
        wait_snapshot(base, lambda d: d["stale"] is True)
        dom = browse(f"{base}/ops", "--dump-dom")
        assert 'id="stale" class="on"' in dom
        assert "STALE: the last snapshot is" in dom
        assert 'data-live="0"' in dom
        browse(f"{base}/ops", f"--screenshot={ARTIFACTS / 'ops-page-stale.png'}")
