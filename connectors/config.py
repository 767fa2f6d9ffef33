"""Live CMS sources declared in ``connectors.yaml`` (repository root), not in code.

File shape::

    sources:
      - name: newsroom-wp            # configured source name: part of every content_id
        kind: wordpress              # wordpress | drupal | rss
        brand: newsroom
        url: https://newsroom.example/wp-json
        schedule_s: 60               # poll interval, seconds
        auth:                        # optional (WordPress application password)
          username: feedpipe-bot
          password_env: NEWSROOM_WP_APP_PASSWORD   # the NAME of an env variable
        per_host_rps: 2              # requests per second to this host
        timeout_s: 10                # per-request timeout
        cursor_dir: /var/lib/feedpipe/cursors      # optional

Secrets never live in the file: ``auth.password_env`` names the environment variable holding the
password, read only when the connector starts (:meth:`AuthSpec.password`). Every model forbids
unknown keys; errors raise :class:`feedpipe.errors.ConfigError` naming the file.

What ``url`` means per kind:

- ``wordpress``: the REST API root (``https://host/wp-json``); posts are read from
  ``{url}/wp/v2/posts``.
- ``drupal``: the site root (``https://host``); nodes are read from
  ``{url}[/{language}]/jsonapi/node/{bundle}`` for each of ``resource_types`` (default
  ``[node--article]``) and from ``{url}[/{language}]/jsonapi/views/{view}/{display}`` for each
  of ``views`` (the JSON:API Views module), e.g.::

      - name: kitchen-drupal-es
        kind: drupal
        url: https://kitchen.example
        language: es                         # /es/jsonapi/... (Drupal language prefix)
        resource_types: [node--article, node--recipe]
        views: [featured_articles/page_1]
- ``rss``: the feed document itself (RSS 2.0, RSS 1.0/RDF, Atom or JSON Feed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from feedpipe.errors import ConfigError
from feedpipe.settings import ROOT, secret_from_env, settings

CONNECTORS_PATH = ROOT / "connectors.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NODE_TYPE = re.compile(r"^node--[a-z0-9_]+$")
_VIEW = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+$")
_LANG_PREFIX = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthSpec(_Strict):
    """HTTP Basic credentials; for WordPress an application password (WordPress >= 5.6,
    "Application Passwords", developer.wordpress.org/rest-api/using-the-rest-api/authentication/).

    Attributes:
        username: the user name.
        password_env: name of the environment variable holding the password (never the secret).
    """

    username: str = Field(min_length=1)
    password_env: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    def password(self) -> str:
        """The secret, read from the environment now: variable ``password_env``, or the file
        named by ``<password_env>_FILE`` (:func:`feedpipe.settings.secret_from_env`).

        Raises:
            ConfigError: the variable is unset or empty, or both it and its _FILE are set.
        """
        value = secret_from_env(self.password_env)
        if value is None:
            raise ConfigError(f"environment variable {self.password_env} (auth password) is unset")
        return value.get_secret_value()


class LiveSourceSpec(_Strict):
    """One live source (see the module docstring for ``url`` per kind).

    Attributes:
        name: source name (letters, digits, ``._-``); part of content ids and cursor file names.
        kind: ``wordpress`` | ``drupal`` | ``rss``.
        brand: brand the content belongs to (selects taxonomy and ranking weights).
        url: http(s) URL (see module docstring).
        schedule_s: seconds between the start of one successful poll and the next.
        auth: optional Basic credentials (WordPress application password).
        per_host_rps: request rate limit for the URL's host, requests/s (token bucket; sources
            sharing a host share the bucket, at the lowest configured rate).
        timeout_s: per-request timeout (connect, read, write, pool), seconds.
        cursor_dir: directory of the cursor file ``<name>.json``; default
            ``<FEEDPIPE_STATE_DIR>/cursors``; a relative path is relative to the config file.
        page_size: items per request (WordPress ``per_page`` max 100; Drupal ``page[limit]``
            max 50, the JSON:API module's cap).
        include: Drupal ``include`` relationships (default tags and author).
        resource_types: Drupal node resource types to poll (``node--<bundle>``, default
            ``[node--article]``); each has its own cursor.
        views: Drupal JSON:API Views displays to poll (``<view id>/<display id>``).
        language: Drupal path prefix of a language (``es`` -> ``/es/jsonapi/...``).
        retry_attempts: attempts per request (1 = no retry) on timeouts, connection errors,
            truncated/invalid bodies, 429 and 5xx.
        retry_initial_s / retry_max_s: exponential back-off with full jitter between attempts
            (tenacity ``wait_random_exponential``: uniform in [0, min(max, initial * 2^n)]).
        retry_after_cap_s: a server's ``Retry-After`` is honoured up to this many seconds.
        fail_threshold: consecutive failed polls after which the source is reported failing.
        max_backoff_s: a failing source is polled at most once per this many seconds.
    """

    name: str
    kind: Literal["wordpress", "drupal", "rss"]
    brand: str = Field(min_length=1)
    url: str
    schedule_s: float = Field(default=300.0, gt=0)
    auth: AuthSpec | None = None
    per_host_rps: float = Field(default=2.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    cursor_dir: Path | None = None
    page_size: int = Field(default=50, ge=1, le=100)
    include: list[str] = Field(default_factory=lambda: ["field_tags", "uid"])
    resource_types: list[str] = Field(default_factory=lambda: ["node--article"])
    views: list[str] = Field(default_factory=list)
    language: str | None = None
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    retry_after_cap_s: float = Field(default=120.0, ge=0)
    fail_threshold: int = Field(default=3, ge=1)
    max_backoff_s: float = Field(default=900.0, gt=0)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"source name {v!r}: use letters, digits, '.', '_' or '-'")
        return v

    @field_validator("url")
    @classmethod
    def _url_ok(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"url {v!r} is not an absolute http(s) URL")
        return v

    @model_validator(mode="after")
    def _kind_rules(self) -> LiveSourceSpec:
        if self.kind == "drupal" and self.page_size > 50:
            raise ValueError(f"source {self.name}: Drupal JSON:API caps page_size at 50")
        drupal_only = self.views or self.language or self.resource_types != ["node--article"]
        if drupal_only and self.kind != "drupal":
            raise ValueError(
                f"source {self.name}: resource_types, views and language are Drupal settings"
            )
        for t in self.resource_types:
            if not _NODE_TYPE.match(t):
                raise ValueError(f"source {self.name}: resource type {t!r} is not node--<bundle>")
        for v in self.views:
            if not _VIEW.match(v):
                raise ValueError(f"source {self.name}: view {v!r} is not <view id>/<display id>")
        if self.language is not None and not _LANG_PREFIX.match(self.language):
            raise ValueError(f"source {self.name}: language prefix {self.language!r}")
        if not self.resource_types and not self.views:
            raise ValueError(f"source {self.name}: no resource_types and no views to poll")
        if len(set(self.resource_types)) != len(self.resource_types):
            raise ValueError(f"source {self.name}: a resource type is listed twice")
        if self.auth is not None and self.kind == "rss":
            raise ValueError(f"source {self.name}: auth is supported for wordpress/drupal only")
        return self

    def cursor_path(self) -> Path:
        """``<cursor_dir>/<name>.json`` (cursor_dir default ``<state_dir>/cursors``)."""
        base = self.cursor_dir if self.cursor_dir is not None else settings().state_dir / "cursors"
        return base / f"{self.name}.json"


class WebhookSourceSpec(_Strict):
    """A push source served by the webhook receiver (connectors/webhook/).

    Attributes:
        name: source name (URL path ``/v1/webhooks/{name}``; part of content ids).
        kind: how bodies are read: ``wordpress.post`` | ``drupal.node``.
        brand: brand of the content.
        secret_env: NAME of the environment variable holding the HMAC-SHA256 secret.
        tolerance_s: accepted clock distance of the signed timestamp, seconds.
        max_body_bytes: largest accepted body, bytes.
    """

    name: str = Field(pattern=_NAME.pattern)
    kind: Literal["wordpress.post", "drupal.node"]
    brand: str = Field(min_length=1)
    secret_env: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    tolerance_s: int = Field(default=300, ge=1)
    max_body_bytes: int = Field(default=1 << 20, ge=1)


class WebhooksSpec(_Strict):
    """The webhook receiver: where it listens (loopback unless told), how many receiver
    processes share the port (``workers``, see :class:`connectors.webhook.server.WebhookConnector`)
    and its sources."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    ack_timeout_s: float = Field(default=10.0, gt=0)
    workers: int = Field(default=1, ge=1, le=64)
    sources: list[WebhookSourceSpec] = Field(default_factory=list)


class CdcSourceSpec(_Strict):
    """A Debezium ``wp_posts`` change topic consumed by :mod:`connectors.cdc`.

    Attributes:
        name: source name (part of content ids).
        brand: brand of the content.
        topic: the Debezium topic (``<topic.prefix>.<db>.wp_posts``).
        post_types: ``post_type`` values published (others are skipped and counted).
    """

    name: str = Field(pattern=_NAME.pattern)
    brand: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    post_types: list[str] = Field(default_factory=lambda: ["post"])


class ConnectorsConfig(BaseModel):
    """Everything ``connectors.yaml`` declares: pollers, webhook sources, CDC topics."""

    model_config = ConfigDict(frozen=True)

    sources: list[LiveSourceSpec]
    webhooks: WebhooksSpec
    cdc: list[CdcSourceSpec]

    def names(self) -> list[str]:
        """Every declared source name, pollers first."""
        return (
            [s.name for s in self.sources]
            + [w.name for w in self.webhooks.sources]
            + [c.name for c in self.cdc]
        )


class ConnectorsFile(_Strict):
    """The whole ``connectors.yaml``: ``sources:`` (names unique; may be empty)."""

    sources: list[LiveSourceSpec] = Field(default_factory=list)
    webhooks: WebhooksSpec = Field(default_factory=WebhooksSpec)
    cdc: list[CdcSourceSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ConnectorsFile:
        seen: set[str] = set()
        names = [s.name for s in self.sources] + [w.name for w in self.webhooks.sources]
        for name in names + [c.name for c in self.cdc]:
            if name in seen:
                raise ValueError(f"source name {name!r} is declared twice")
            seen.add(name)
        return self


def load_sources(path: Path = CONNECTORS_PATH) -> list[LiveSourceSpec]:
    """Load and validate the polled live sources of ``path`` (``load_config(path).sources``).

    A relative ``cursor_dir`` is resolved against the file's directory. An empty file or
    ``sources: []`` gives ``[]``.

    Raises:
        ConfigError: unreadable file, invalid YAML or a validation error; the message names
            the file (and pydantic's message names the field).
    """
    return load_config(path).sources


def load_config(path: Path = CONNECTORS_PATH) -> ConnectorsConfig:
    """Load and validate the whole of ``path``: pollers, webhook receiver, CDC topics.

    Raises:
        ConfigError: as :func:`load_sources`.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = ConnectorsFile.model_validate(data if data is not None else {})
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    base = path.resolve().parent
    sources = [
        s.model_copy(update={"cursor_dir": base / s.cursor_dir})
        if s.cursor_dir is not None and not s.cursor_dir.is_absolute()
        else s
        for s in parsed.sources
    ]
    return ConnectorsConfig(sources=sources, webhooks=parsed.webhooks, cdc=parsed.cdc)


def select_sources(specs: list[LiveSourceSpec], names: list[str] | None) -> list[LiveSourceSpec]:
    """``specs`` restricted to ``names`` (in the given order); all of them for None.

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    if names is None:
        return list(specs)
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown live sources {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]
