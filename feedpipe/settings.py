"""Where things run: the one settings object, read from the environment (prefix FEEDPIPE_).

| variable | default | meaning |
|---|---|---|
| FEEDPIPE_KAFKA_BOOTSTRAP | 127.0.0.1:19092 | Kafka bootstrap servers |
| FEEDPIPE_KAFKA_REPLICATION_FACTOR | 1 | replicas of a topic topology.yaml gives none |
| FEEDPIPE_REDIS_URL | redis://127.0.0.1:16379/0 | Redis URL |
| FEEDPIPE_DATA_DIR | ../shared/data beside the checkout | real input data, read in place |
| FEEDPIPE_STATE_DIR | .feedpipe/ in the checkout | local broker/Redis state, logs, jars |
| FEEDPIPE_API_HOST / _PORT | 127.0.0.1 / 8080 | read endpoint bind address |
| FEEDPIPE_API_KEYS_FILE | <state>/api-keys.json | API key hashes, scopes, rates (apikeys) |
| FEEDPIPE_API_CORS_ORIGINS | (empty: CORS off) | comma-separated browser origins allowed, or * |
| FEEDPIPE_API_REDIS_TIMEOUT_MS | 250 | read endpoint's Redis socket/connect timeout, ms |
| FEEDPIPE_API_BREAKER_FAILURES | 5 | consecutive Redis failures that open the circuit |
| FEEDPIPE_API_BREAKER_RESET_S | 5.0 | seconds the circuit stays open before a trial call |
| FEEDPIPE_API_CACHE_MAX_AGE_S | 5 | Cache-Control max-age of feeds, s (CDN s-maxage is 2x) |
| FEEDPIPE_API_ACCESS_LOG | true | one JSON log line per request (logger readapi.access) |
| FEEDPIPE_API_WORKERS | 1 | read endpoint processes on the port (each: 1/N of a key's rate) |
| FEEDPIPE_COLLECTOR_HOST / _PORT | 127.0.0.1 / 8070 | event collector bind address |
| FEEDPIPE_COLLECTOR_WORKERS | 1 | event collector processes on the port |
| FEEDPIPE_COLLECTOR_CORS_ORIGINS | (empty: CORS off) | browser origins that may post events, or * |
| FEEDPIPE_COLLECTOR_URL | http://<host>:<port> | collector URL the /demo page posts to |
| FEEDPIPE_COLLECTOR_ACK_TIMEOUT_S | 10.0 | seconds the collector waits for Kafka's ack |
| FEEDPIPE_WORKER_WEB_PORT | 6066 | Faust worker web (metrics) port |
| FEEDPIPE_WORKER_WEB_HOST | 127.0.0.1 | worker web bind (/metrics); 0.0.0.0 in compose |
| FEEDPIPE_APP_ID | feedpipe | Faust app id (consumer group prefix) |
| FEEDPIPE_SCHEMA_BASE_REF | HEAD | git ref the schema compatibility check compares with |
| FEEDPIPE_KAFKA_SECURITY_PROTOCOL | PLAINTEXT | PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL |
| FEEDPIPE_KAFKA_SASL_MECHANISM | (none) | PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 |
| FEEDPIPE_KAFKA_SASL_USERNAME | (none) | SASL user name |
| FEEDPIPE_KAFKA_SASL_PASSWORD[_FILE] | (none) | SASL password (secret) |
| FEEDPIPE_KAFKA_SSL_CAFILE | (none) | PEM CA bundle that signed the brokers' certificates |
| FEEDPIPE_KAFKA_SSL_CERTFILE / _KEYFILE | (none) | PEM client certificate and key (mutual TLS) |
| FEEDPIPE_KAFKA_SSL_KEY_PASSWORD[_FILE] | (none) | password of the client key (secret) |
| FEEDPIPE_REDIS_CLUSTER | 0 | 1: the URL names a node of a Redis Cluster (docs/redis-keys.md) |
| FEEDPIPE_REDIS_USERNAME | (none) | Redis ACL user (AUTH username password) |
| FEEDPIPE_REDIS_PASSWORD[_FILE] | (none) | Redis AUTH password (secret) |
| FEEDPIPE_REDIS_SSL_CAFILE | (none) | PEM CA bundle for a ``rediss://`` URL |
| FEEDPIPE_REDIS_SSL_CERTFILE / _KEYFILE | (none) | PEM client certificate and key (rediss) |

Secrets (``[_FILE]`` rows) are read from the variable itself or, when ``<VAR>_FILE`` is set, from
that file (trailing newline dropped; the form Docker and Kubernetes secrets mount), and are held
as pydantic ``SecretStr``: ``repr``, ``str`` and logs show ``**********``. The connectors'
per-source secrets (webhook HMAC secrets, HTTP auth passwords) are named in connectors.yaml and
read with :func:`secret_from_env` (same ``_FILE`` rule). docs/security.md has the set-up.
The client factories take their connection options from :meth:`Settings.kafka_config`
(confluent-kafka), :meth:`Settings.aiokafka_config` (aiokafka, Faust) and
:meth:`Settings.redis_kwargs` (redis-py).

Nothing else in feedpipe calls ``os.getenv`` for configuration.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedpipe.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECRET_KAFKA_KEYS = frozenset({"sasl.password", "ssl.key.password"})
"""librdkafka properties holding secrets: drop them before showing a client config."""


class Settings(BaseSettings):
    """Environment settings (see the module docstring for each variable)."""

    model_config = SettingsConfigDict(env_prefix="FEEDPIPE_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_replication_factor: int = 1
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_cluster: bool = False
    data_dir: Path = ROOT.parent / "shared" / "data"
    state_dir: Path = ROOT / ".feedpipe"
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_keys_file: Path | None = None
    api_cors_origins: str = ""
    api_redis_timeout_ms: int = 250
    api_breaker_failures: int = 5
    api_breaker_reset_s: float = 5.0
    api_cache_max_age_s: int = 5
    api_access_log: bool = True
    api_workers: int = 1
    collector_host: str = "127.0.0.1"
    collector_port: int = 8070
    collector_workers: int = 1
    collector_cors_origins: str = ""
    collector_url: str = ""
    collector_ack_timeout_s: float = 10.0
    worker_web_port: int = 6066
    worker_web_host: str = "127.0.0.1"
    app_id: str = "feedpipe"
    log_level: str = "info"
    schema_base_ref: str = "HEAD"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_key_password_file: Path | None = None
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_password_file: Path | None = None
    redis_ssl_cafile: Path | None = None
    redis_ssl_certfile: Path | None = None
    redis_ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _secret_files(self) -> Settings:
        """Fill each secret from its ``*_file`` (if set) and check the Kafka security set-up.

        Raises:
            ValueError: both a secret and its file are set, the file is unreadable, or SASL
                is selected without mechanism/username/password (pydantic wraps it).
        """
        for name in ("kafka_sasl_password", "kafka_ssl_key_password", "redis_password"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"FEEDPIPE_{name.upper()} and its _FILE are both set")
            setattr(self, name, SecretStr(_read_secret(path, f"FEEDPIPE_{name.upper()}_FILE")))
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"FEEDPIPE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "FEEDPIPE_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD (or _PASSWORD_FILE)"
            )
        return self

    def collector_public_url(self) -> str:
        """The collector URL a browser posts to: ``collector_url``, else
        ``http://<collector_host>:<collector_port>`` (``127.0.0.1`` for a 0.0.0.0 bind)."""
        if self.collector_url:
            return self.collector_url.rstrip("/")
        host = "127.0.0.1" if self.collector_host in ("0.0.0.0", "") else self.collector_host
        return f"http://{host}:{self.collector_port}"

    def kafka_config(self, bootstrap: str | None = None) -> dict[str, Any]:
        """librdkafka (confluent-kafka) properties: ``bootstrap.servers`` (``bootstrap`` or the
        setting) and, when set, ``security.protocol``, ``sasl.*`` and ``ssl.*`` (names from
        librdkafka CONFIGURATION.md). Holds the plain secrets: pass it to a client, never log
        it (see :data:`SECRET_KAFKA_KEYS`)."""
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap or self.kafka_bootstrap}
        if self.kafka_security_protocol == "PLAINTEXT":
            return conf
        conf["security.protocol"] = self.kafka_security_protocol
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None  # checked by the validator
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        for key, value in (
            ("ssl.ca.location", self.kafka_ssl_cafile),
            ("ssl.certificate.location", self.kafka_ssl_certfile),
            ("ssl.key.location", self.kafka_ssl_keyfile),
        ):
            if value is not None:
                conf[key] = str(value)
        if self.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        return conf

    def aiokafka_config(self) -> dict[str, Any]:
        """aiokafka client keyword arguments for the same set-up as :meth:`kafka_config`
        (``security_protocol``, ``sasl_*``, ``ssl_context`` built by
        ``aiokafka.helpers.create_ssl_context``); ``bootstrap_servers`` is left to the caller.
        Holds the plain secrets: never log it."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        kw: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None  # checked by the validator
            kw["sasl_mechanism"] = self.kafka_sasl_mechanism
            kw["sasl_plain_username"] = self.kafka_sasl_username
            kw["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
                certfile=str(self.kafka_ssl_certfile) if self.kafka_ssl_certfile else None,
                keyfile=str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                password=(
                    self.kafka_ssl_key_password.get_secret_value()
                    if self.kafka_ssl_key_password
                    else None
                ),
            )
        return kw

    def redis_kwargs(self) -> dict[str, Any]:
        """redis-py ``from_url`` / connection-pool keyword arguments: ``username``/``password``
        (AUTH) when set, and for a ``rediss://`` URL the TLS files (``ssl_ca_certs``,
        ``ssl_certfile``, ``ssl_keyfile``; certificates are verified, redis-py's default).
        Holds the plain password: never log it.

        Raises:
            ConfigError: TLS files are set but the URL is not ``rediss://``.
        """
        kw: dict[str, Any] = {}
        if self.redis_username:
            kw["username"] = self.redis_username
        if self.redis_password is not None:
            kw["password"] = self.redis_password.get_secret_value()
        tls = {
            "ssl_ca_certs": self.redis_ssl_cafile,
            "ssl_certfile": self.redis_ssl_certfile,
            "ssl_keyfile": self.redis_ssl_keyfile,
        }
        if any(v is not None for v in tls.values()):
            if not self.redis_url.startswith("rediss://"):
                raise ConfigError(
                    "FEEDPIPE_REDIS_SSL_* are set but FEEDPIPE_REDIS_URL is not rediss://"
                )
            kw.update({k: str(v) for k, v in tls.items() if v is not None})
        return kw


def _read_secret(path: Path, var: str) -> str:
    """The secret in ``path`` (UTF-8, one trailing newline dropped).

    Raises:
        ValueError: the file cannot be read or is empty.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{var}: cannot read {path}: {exc}") from exc
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"{var}: {path} is empty")
    return text


def secret_from_env(name: str) -> SecretStr | None:
    """A secret named in configuration: environment variable ``name``, or the file named by
    ``<name>_FILE`` (one trailing newline dropped); None when neither is set or it is empty.

    Raises:
        ConfigError: both are set, or the file cannot be read or is empty.
    """
    value = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if value and path:
        raise ConfigError(f"{name} and {name}_FILE are both set")
    if path:
        try:
            return SecretStr(_read_secret(Path(path), f"{name}_FILE"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    return SecretStr(value) if value else None


@cache
def settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
