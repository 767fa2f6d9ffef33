"""Where things run: the one settings object, read from the environment (prefix FEEDPIPE_).

| variable | default | meaning |
|---|---|---|
| FEEDPIPE_KAFKA_BOOTSTRAP | 127.0.0.1:19092 | Kafka bootstrap servers |
| FEEDPIPE_REDIS_URL | redis://127.0.0.1:16379/0 | Redis URL |
| FEEDPIPE_DATA_DIR | ../shared/data beside the checkout | real input data, read in place |
| FEEDPIPE_STATE_DIR | .feedpipe/ in the checkout | local broker/Redis state, logs, jars |
| FEEDPIPE_API_HOST / _PORT | 127.0.0.1 / 8080 | read endpoint bind address |
| FEEDPIPE_API_KEYS_FILE | <state>/api-keys.json | API key hashes, scopes, rates (readapi.keys) |
| FEEDPIPE_API_CORS_ORIGINS | (empty: CORS off) | comma-separated browser origins allowed, or * |
| FEEDPIPE_API_REDIS_TIMEOUT_MS | 250 | read endpoint's Redis socket/connect timeout, ms |
| FEEDPIPE_API_BREAKER_FAILURES | 5 | consecutive Redis failures that open the circuit |
| FEEDPIPE_API_BREAKER_RESET_S | 5.0 | seconds the circuit stays open before a trial call |
| FEEDPIPE_API_CACHE_MAX_AGE_S | 5 | Cache-Control max-age of feeds, s (CDN s-maxage is 2x) |
| FEEDPIPE_API_ACCESS_LOG | true | one JSON log line per request (logger readapi.access) |
| FEEDPIPE_API_WORKERS | 1 | read endpoint processes on the port (each: 1/N of a key's rate) |
| FEEDPIPE_WORKER_WEB_PORT | 6066 | Faust worker web (metrics) port |
| FEEDPIPE_WORKER_WEB_HOST | 127.0.0.1 | worker web bind (/metrics); 0.0.0.0 in compose |
| FEEDPIPE_APP_ID | feedpipe | Faust app id (consumer group prefix) |

Nothing else in feedpipe calls ``os.getenv`` for configuration.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Environment settings (see the module docstring for each variable)."""

    model_config = SettingsConfigDict(env_prefix="FEEDPIPE_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    redis_url: str = "redis://127.0.0.1:16379/0"
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
    worker_web_port: int = 6066
    worker_web_host: str = "127.0.0.1"
    app_id: str = "feedpipe"
    log_level: str = "info"


@cache
def settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
