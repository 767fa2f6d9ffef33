"""Where things run: the one settings object, read from the environment (prefix FEEDPIPE_).

| variable | default | meaning |
|---|---|---|
| FEEDPIPE_KAFKA_BOOTSTRAP | 127.0.0.1:19092 | Kafka bootstrap servers |
| FEEDPIPE_REDIS_URL | redis://127.0.0.1:16379/0 | Redis URL |
| FEEDPIPE_DATA_DIR | ../shared/data beside the checkout | real input data, read in place |
| FEEDPIPE_STATE_DIR | .feedpipe/ in the checkout | local broker/Redis state, logs, jars |
| FEEDPIPE_API_HOST / _PORT | 127.0.0.1 / 8080 | read endpoint bind address |
| FEEDPIPE_WORKER_WEB_PORT | 6066 | Faust worker web (metrics) port |
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
    worker_web_port: int = 6066
    app_id: str = "feedpipe"
    log_level: str = "info"


@cache
def settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
