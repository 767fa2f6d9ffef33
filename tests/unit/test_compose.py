"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine in CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from feedpipe.settings import Settings

REPO = Path(__file__).resolve().parent.parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("topics", "worker", "api", "collector", "replay")
OBSERVABILITY = ("prometheus", "grafana")
DEPLOY = REPO / "deploy"


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: environment must be a mapping"
    return {str(k): str(v) for k, v in env.items()}


def test_services_and_images() -> None:
    assert set(SERVICES) == {"kafka", "redis", *APP_SERVICES, *OBSERVABILITY}
    from ops.infra.kafka import pinned_version

    # the compose broker is the same release as the local one (infra/kafka/pom.xml)
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{pinned_version()}"
    assert SERVICES["redis"]["image"].startswith("redis:7")
    for name in APP_SERVICES:
        svc = SERVICES[name]
        assert svc["build"] == ".", name
        assert svc["command"][0] == "feedpipe", name
    assert SERVICES["topics"]["command"] == ["feedpipe", "topics", "apply"]
    assert SERVICES["worker"]["command"] == ["feedpipe", "worker"]
    assert SERVICES["api"]["command"] == ["feedpipe", "api"]
    assert SERVICES["collector"]["command"] == ["feedpipe", "collector"]
    assert SERVICES["replay"]["command"] == ["feedpipe", "replay"]
    assert SERVICES["replay"]["profiles"] == ["replay"]
    assert all("profiles" not in SERVICES[s] for s in SERVICES if s != "replay")


def test_env_names_are_settings_fields() -> None:
    fields = {f"FEEDPIPE_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        env = _env(name)
        assert set(env) <= fields, f"{name}: unknown variables {set(env) - fields}"
        assert env["FEEDPIPE_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["FEEDPIPE_REDIS_URL"] == "redis://redis:6379/0"
        assert env["FEEDPIPE_API_HOST"] == "0.0.0.0"
        # the values parse as the Settings types
        Settings.model_validate({k.removeprefix("FEEDPIPE_").lower(): v for k, v in env.items()})


def test_kafka_is_kraft_single_node_without_auto_create() -> None:
    env = _env("kafka")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    listener_names = {entry.split(":")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
    mapped = {
        entry.split(":")[0] for entry in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    }
    assert listener_names <= mapped


def test_host_ports_match_local_defaults() -> None:
    """The host-side ports equal the local-stack defaults, so the host CLI reaches the stack."""
    defaults = Settings.model_fields
    kafka_port = str(defaults["kafka_bootstrap"].default).rsplit(":", 1)[1]
    redis_port = urlsplit(str(defaults["redis_url"].default)).port
    assert f"127.0.0.1:{kafka_port}:{kafka_port}" in SERVICES["kafka"]["ports"]
    assert f"127.0.0.1:{redis_port}:6379" in SERVICES["redis"]["ports"]
    assert f"127.0.0.1:{defaults['api_port'].default}:8080" in SERVICES["api"]["ports"]
    port = defaults["collector_port"].default
    assert f"127.0.0.1:{port}:{port}" in SERVICES["collector"]["ports"]


def test_collector_shares_the_api_keys_and_scales_like_the_webhook_receiver() -> None:
    """The collector binds all interfaces, runs several processes on its port, checks keys in
    the file the read endpoint uses (one volume), and allows the read endpoint's origin (the
    /demo page posts events to it)."""
    api, col = _env("api"), _env("collector")
    assert col["FEEDPIPE_COLLECTOR_HOST"] == "0.0.0.0"
    assert int(col["FEEDPIPE_COLLECTOR_WORKERS"]) >= 2
    assert col["FEEDPIPE_API_KEYS_FILE"] == api["FEEDPIPE_API_KEYS_FILE"]
    keys_dir = col["FEEDPIPE_API_KEYS_FILE"].rsplit("/", 1)[0]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in SERVICES["collector"]["volumes"]}
    assert mounts[keys_dir] in [str(v).split(":")[0] for v in SERVICES["api"]["volumes"]]
    assert f"http://127.0.0.1:{SERVICES['api']['ports'][0].split(':')[1]}" in col[
        "FEEDPIPE_COLLECTOR_CORS_ORIGINS"
    ].split(",")
    collector_port = SERVICES["collector"]["ports"][0].split(":")[1]
    assert api["FEEDPIPE_COLLECTOR_URL"] == f"http://127.0.0.1:{collector_port}"


def test_ordering_and_data_mount() -> None:
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    worker_deps = SERVICES["worker"]["depends_on"]
    assert worker_deps["topics"]["condition"] == "service_completed_successfully"
    assert worker_deps["redis"]["condition"] == "service_healthy"
    assert "../shared/data:/data:ro" in SERVICES["replay"]["volumes"]
    assert _env("replay")["FEEDPIPE_DATA_DIR"] == "/data"


def test_dockerfile_installs_the_lock_and_the_project() -> None:
    text = (REPO / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == ["FROM python:3.11-slim"]
    assert "pip install -r requirements.lock" in text
    assert "pip install --no-deps -e ." in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".feedpipe", ".git"} <= set(ignored)
    lock = (REPO / "requirements.lock").read_text().splitlines()
    pins = [line for line in lock if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins), "requirements.lock must pin every line"


# -- Prometheus and Grafana ----------------------------------------------------------------------


def _mounts(service: str) -> dict[str, str]:
    """Container path -> host path (relative to the repo) of a service's bind mounts."""
    out: dict[str, str] = {}
    for v in SERVICES[service].get("volumes", []):
        host, container, *_ = str(v).split(":")
        if host.startswith("."):
            out[container] = host
    return out


def test_observability_images_are_pinned() -> None:
    import re

    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", SERVICES["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", SERVICES["grafana"]["image"])
    for name in OBSERVABILITY:
        for container, host in _mounts(name).items():
            assert (REPO / host).exists(), f"{name}: {host} (-> {container}) missing"


def test_prometheus_scrapes_worker_and_api_where_they_listen() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    mounted = _mounts("prometheus")["/etc/prometheus/prometheus.yml"]
    assert (REPO / mounted).resolve() == (DEPLOY / "prometheus.yml").resolve()
    targets = {
        job["job_name"]: (job.get("metrics_path", "/metrics"), t)
        for job in cfg["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    assert set(targets) == {"worker", "api", "collector"}
    worker_env = _env("worker")
    worker_port = worker_env.get(
        "FEEDPIPE_WORKER_WEB_PORT", str(Settings.model_fields["worker_web_port"].default)
    )
    # the worker binds all interfaces in compose, or Prometheus cannot reach it
    assert worker_env["FEEDPIPE_WORKER_WEB_HOST"] == "0.0.0.0"
    assert targets["worker"] == ("/metrics", f"worker:{worker_port}")
    api_container_port = SERVICES["api"]["ports"][0].rsplit(":", 1)[1]
    assert targets["api"] == ("/metrics", f"api:{api_container_port}")
    collector_port = SERVICES["collector"]["ports"][0].rsplit(":", 1)[1]
    assert targets["collector"] == ("/metrics", f"collector:{collector_port}")
    for job in ("worker", "api", "collector"):
        assert job in SERVICES["prometheus"]["depends_on"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    import json

    mounts = _mounts("grafana")
    prov = REPO / mounts["/etc/grafana/provisioning"]
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    assert urlsplit(source["url"]).hostname == "prometheus"
    assert urlsplit(source["url"]).port == 9090
    (provider,) = yaml.safe_load((prov / "dashboards" / "feedpipe.yml").read_text())["providers"]
    dash_dir = provider["options"]["path"]
    assert dash_dir in mounts, "the dashboards folder is not mounted where the provider looks"
    dashboards = list((REPO / mounts[dash_dir]).glob("*.json"))
    assert dashboards
    for path in dashboards:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def _defined_metric_names() -> set[str]:
    from feedpipe.monitoring.metrics import metric_names
    from readapi.app import create_app

    api = create_app("redis://127.0.0.1:1/0", require_keys=False)
    names = metric_names() | metric_names(api.state.registry)
    # histograms expose _bucket/_sum/_count, counters _total: add them for families not yet
    # observed (a labelled family has no samples until first use)
    out = set(names)
    for n in names:
        out |= {f"{n}_bucket", f"{n}_sum", f"{n}_count", f"{n}_total"}
    return out


def test_dashboard_panels_use_metrics_the_code_defines() -> None:
    import json
    import re

    defined = _defined_metric_names()
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "feedpipe.json").read_text())
    titles = set()
    used: set[str] = set()
    for panel in dash["panels"]:
        titles.add(panel["title"])
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            names = set(re.findall(r"\b((?:feedpipe|kafka)_[a-z0-9_]+)\b", t["expr"]))
            assert names, t["expr"]
            assert names <= defined, f"{panel['title']}: undefined {names - defined}"
            used |= names
    # the dashboard's panels: throughput, DLQ by reason, processing time, freshness, lag in offsets
    # and seconds, Redis errors, API latency, fallbacks, time to feed
    for required in (
        "feedpipe_events_in_total",
        "feedpipe_events_out_total",
        "feedpipe_dlq_records_total",
        "feedpipe_batch_processing_seconds_bucket",
        "feedpipe_event_processing_seconds_bucket",
        "feedpipe_freshness_seconds_bucket",
        "kafka_consumergroup_lag",
        "kafka_consumergroup_lag_seconds",
        "feedpipe_redis_errors_total",
        "feedpipe_api_request_duration_seconds_bucket",
        "feedpipe_api_feed_fallbacks_total",
        "feedpipe_publish_to_candidate_seconds_bucket",
        "feedpipe_click_to_feed_seconds_bucket",
    ):
        assert required in used, required
    assert len(titles) == len(dash["panels"]), "duplicate panel titles"
