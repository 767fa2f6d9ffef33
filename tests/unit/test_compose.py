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
APP_SERVICES = ("topics", "worker", "api", "replay")


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: environment must be a mapping"
    return {str(k): str(v) for k, v in env.items()}


def test_services_and_images() -> None:
    assert set(SERVICES) == {"kafka", "redis", *APP_SERVICES}
    from feedpipe.infra.kafka import pinned_version

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
