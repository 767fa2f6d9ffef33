"""Secrets (Kafka SASL, TLS key password, Redis AUTH, connector secrets) come from the environment
or ``*_FILE`` files, never show in reprs or logs, and reach the clients; Redis AUTH is proven
against the real test Redis (requirepass set for the test, then cleared)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from feedpipe.errors import ConfigError
from feedpipe.settings import Settings, secret_from_env

SECRET = "s3cr3t-Zq8-never-logged"


@pytest.fixture()
def sasl_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FEEDPIPE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("FEEDPIPE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("FEEDPIPE_KAFKA_SASL_USERNAME", "feedpipe")
    monkeypatch.setenv("FEEDPIPE_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("FEEDPIPE_REDIS_PASSWORD", SECRET)
    yield


def test_secrets_never_show_in_repr_str_dump_or_logs(
    sasl_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    s = Settings()
    log = logging.getLogger("feedpipe.test")
    with caplog.at_level(logging.DEBUG):
        log.info("settings %s / %r", s, s)
        log.info("dump %s", s.model_dump())
        log.info("json %s", s.model_dump_json())
    assert SECRET not in caplog.text
    assert "**********" in caplog.text
    # ... but the clients get them
    conf = s.kafka_config()
    assert conf["sasl.password"] == SECRET and conf["security.protocol"] == "SASL_PLAINTEXT"
    assert s.aiokafka_config()["sasl_plain_password"] == SECRET
    assert s.redis_kwargs()["password"] == SECRET


def test_connector_producer_config_keeps_no_secret(sasl_env: None) -> None:
    from feedpipe import settings as settings_mod
    from feedpipe.kafka.producer import IdempotentProducer

    settings_mod.settings.cache_clear()
    try:
        prod = IdempotentProducer("127.0.0.1:9", config={"log_level": 0})
        assert prod.config["sasl.username"] == "feedpipe"
        assert prod.config["security.protocol"] == "SASL_PLAINTEXT"
        assert SECRET not in repr(prod.config)
    finally:
        settings_mod.settings.cache_clear()


def test_faust_credentials_repr_hides_the_password(sasl_env: None) -> None:
    from streams.app import broker_credentials

    creds = broker_credentials(Settings())
    assert creds is not None and SECRET not in repr(creds)
    assert creds.password == SECRET  # type: ignore[union-attr]


def test_secret_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(SECRET + "\n")
    monkeypatch.setenv("FEEDPIPE_REDIS_PASSWORD_FILE", str(f))
    s = Settings()
    assert s.redis_password is not None and s.redis_password.get_secret_value() == SECRET
    monkeypatch.setenv("FEEDPIPE_REDIS_PASSWORD", "other")
    with pytest.raises(ValidationError, match="both set"):
        Settings()
    # connector secrets (webhook HMAC, HTTP auth) named in connectors.yaml: same _FILE rule
    monkeypatch.setenv("HOOK_SECRET_FILE", str(f))
    value = secret_from_env("HOOK_SECRET")
    assert value is not None and value.get_secret_value() == SECRET
    assert SECRET not in repr(value)
    monkeypatch.setenv("HOOK_SECRET", "x")
    with pytest.raises(ConfigError, match="both set"):
        secret_from_env("HOOK_SECRET")
    monkeypatch.setenv("EMPTY_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read"):
        secret_from_env("EMPTY_SECRET")


def test_sasl_without_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDPIPE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FEEDPIPE_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("FEEDPIPE_KAFKA_SASL_USERNAME", "u")
    with pytest.raises(ValidationError, match="SASL_SSL needs"):
        Settings()


def test_tls_settings_reach_the_clients(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEEDPIPE_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("FEEDPIPE_KAFKA_SSL_CAFILE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("FEEDPIPE_REDIS_URL", "rediss://cache.example:6380/0")
    monkeypatch.setenv("FEEDPIPE_REDIS_SSL_CAFILE", "/etc/ssl/certs/ca-certificates.crt")
    s = Settings()
    assert s.kafka_config()["ssl.ca.location"] == "/etc/ssl/certs/ca-certificates.crt"
    ctx = s.aiokafka_config()["ssl_context"]
    assert ctx.check_hostname  # aiokafka's create_ssl_context always verifies
    assert s.redis_kwargs()["ssl_ca_certs"] == "/etc/ssl/certs/ca-certificates.crt"
    pool = redis.ConnectionPool.from_url(s.redis_url, **s.redis_kwargs())
    assert pool.connection_class is redis.SSLConnection
    monkeypatch.setenv("FEEDPIPE_REDIS_URL", "redis://cache.example:6379/0")
    with pytest.raises(ConfigError, match="not rediss"):
        Settings().redis_kwargs()


def test_redis_auth_against_a_real_server(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.config_set("requirepass", SECRET)
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(redis_url).ping()
        monkeypatch.setenv("FEEDPIPE_REDIS_URL", redis_url)
        monkeypatch.setenv("FEEDPIPE_REDIS_PASSWORD", SECRET)
        s = Settings()
        assert redis.Redis.from_url(s.redis_url, **s.redis_kwargs()).ping()
    finally:
        redis.Redis.from_url(redis_url, password=SECRET).config_set("requirepass", "")
    assert admin.ping()
