"""API keys of the read endpoint and the event collector: random tokens, stored only as SHA-256
hashes, each with scopes and a token-bucket rate limit; and the one check of a request's key
(:class:`KeyAuthority`) both HTTP services use.

Keys file (JSON, path ``settings().api_keys_file``, default ``<state_dir>/api-keys.json``)::

    {"keys": [{"key_id": "k_3f9a1c2b", "name": "frontend", "sha256": "<64 hex>",
               "scopes": ["feeds:read"], "rate_per_s": 100.0, "burst": 200,
               "created_at": "2024-05-01T12:00:00Z"}]}

A token looks like ``fpk_<key_id>_<43 urlsafe chars>`` (256 random bits from :mod:`secrets`); it
is printed once by ``feedpipe apikey create`` and never written anywhere by that command. A
plain (unsalted, fast) SHA-256 is enough here because the token has 256 bits of entropy: there is
nothing to brute-force, unlike a password (OWASP Password Storage Cheat Sheet, which asks for a
slow KDF only for low-entropy secrets). Clients send the token as ``X-API-Key: <token>`` or
``Authorization: Bearer <token>``.

Scopes: ``feeds:read`` (feeds, content, trending), ``profiles:read`` (profiles: personal data),
``events:write`` (``POST /v1/events`` of the event collector, connectors/collector/), ``admin``
(A/B results, operator routes; implies every other scope).

Token bucket (Turner, "New directions in communications", IEEE Comm. Mag. 1986; the usual
GCRA-equivalent form): a bucket of ``burst`` tokens refilled at ``rate_per_s``; a request takes
one token or is refused with the wait until one token is available. Single-threaded asyncio
objects (one process): no locks.

The development key (:func:`ensure_dev_key`) is the one exception to "only the hash is stored":
``feedpipe up`` keeps its token in ``<state_dir>/dev-api-key`` (mode 0600) so that a restarted
local stack reuses it and can print how to call the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

SCOPES = ("feeds:read", "profiles:read", "events:write", "admin")
"""Every scope a key can hold; ``admin`` implies the others."""
DEFAULT_RATE_PER_S = 100.0
"""Default sustained rate of a new key, requests/s (token refill rate)."""
DEFAULT_BURST = 200
"""Default bucket size of a new key, requests."""
DEV_KEY_NAME = "dev"
DEV_RATE_PER_S = 5000.0
DEV_BURST = 10000
TOKEN_PREFIX = "fpk_"
RELOAD_INTERVAL_S = 1.0
"""How often a running service checks the keys file's mtime, s (a new key works within ~1 s)."""

log = logging.getLogger("feedpipe.apikeys")


class KeyFileError(ValueError):
    """The keys file is unreadable or malformed (the message names the file and the problem)."""


@dataclass(frozen=True)
class ApiKey:
    """One stored key: no token, only its SHA-256 hex digest.

    Attributes:
        key_id: public id (``k_`` + 8 hex), logged with each request.
        name: free text label.
        sha256: hex digest of the UTF-8 token.
        scopes: subset of :data:`SCOPES`.
        rate_per_s: token-bucket refill rate, requests/s (> 0).
        burst: bucket capacity, requests (>= 1).
        created_at: ISO-8601 UTC.
    """

    key_id: str
    name: str
    sha256: str
    scopes: tuple[str, ...]
    rate_per_s: float = DEFAULT_RATE_PER_S
    burst: int = DEFAULT_BURST
    created_at: str = field(
        default_factory=lambda: (
            datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
    )

    def allows(self, scope: str) -> bool:
        """True when the key holds ``scope`` or ``admin``."""
        return scope in self.scopes or "admin" in self.scopes


def hash_token(token: str) -> str:
    """SHA-256 hex digest of ``token`` (UTF-8)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _validate(key: ApiKey, path: Path) -> ApiKey:
    unknown = set(key.scopes) - set(SCOPES)
    if unknown:
        raise KeyFileError(f"{path}: key {key.key_id}: unknown scopes {sorted(unknown)}")
    if not key.rate_per_s > 0 or key.burst < 1:
        raise KeyFileError(f"{path}: key {key.key_id}: rate_per_s must be > 0 and burst >= 1")
    if len(key.sha256) != 64:
        raise KeyFileError(f"{path}: key {key.key_id}: sha256 must be 64 hex characters")
    return key


def load_keys(path: Path) -> list[ApiKey]:
    """Keys stored in ``path``; ``[]`` when the file does not exist.

    Raises:
        KeyFileError: unreadable JSON, a missing field, an unknown scope, a bad rate.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc
    try:
        doc = orjson.loads(raw)
        return [
            _validate(
                ApiKey(
                    key_id=str(k["key_id"]),
                    name=str(k.get("name", "")),
                    sha256=str(k["sha256"]),
                    scopes=tuple(k["scopes"]),
                    rate_per_s=float(k.get("rate_per_s", DEFAULT_RATE_PER_S)),
                    burst=int(k.get("burst", DEFAULT_BURST)),
                    created_at=str(k.get("created_at", "")),
                ),
                path,
            )
            for k in doc["keys"]
        ]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, KeyFileError):
            raise
        raise KeyFileError(f"{path}: malformed keys file: {type(exc).__name__}: {exc}") from exc


def _write_keys(path: Path, keys: list[ApiKey]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    body = orjson.dumps(
        {"keys": [{**asdict(k), "scopes": list(k.scopes)} for k in keys]},
        option=orjson.OPT_INDENT_2,
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
    os.replace(tmp, path)


def create_key(
    path: Path,
    name: str,
    scopes: list[str] | tuple[str, ...],
    rate_per_s: float = DEFAULT_RATE_PER_S,
    burst: int = DEFAULT_BURST,
) -> tuple[ApiKey, str]:
    """Create a key, append its hash to ``path`` (created with mode 0600); return (key, token).

    The token is returned once and not stored. Raises :class:`KeyFileError` for an unknown
    scope, a bad rate, or an unreadable existing file.
    """
    if not scopes:
        raise KeyFileError("a key needs at least one scope")
    key_id = "k_" + secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    key = _validate(
        ApiKey(key_id, name, hash_token(token), tuple(scopes), float(rate_per_s), int(burst)),
        path,
    )
    _write_keys(path, [*load_keys(path), key])
    return key, token


def revoke_key(path: Path, key_id: str) -> bool:
    """Remove ``key_id`` from ``path``; True if it was there."""
    keys = load_keys(path)
    kept = [k for k in keys if k.key_id != key_id]
    if len(kept) == len(keys):
        return False
    _write_keys(path, kept)
    return True


def keys_file(state_dir: Path, configured: Path | None) -> Path:
    """The keys file: ``configured`` (FEEDPIPE_API_KEYS_FILE) or ``<state_dir>/api-keys.json``."""
    return configured if configured is not None else state_dir / "api-keys.json"


def ensure_dev_key(state_dir: Path, path: Path) -> str:
    """Create or reuse the development key (all scopes); return its token.

    The token is kept in ``<state_dir>/dev-api-key`` (mode 0600); it is reused while its hash is
    still in ``path``, otherwise a new key is created.
    """
    token_file = state_dir / "dev-api-key"
    if token_file.exists():
        token = token_file.read_text().strip()
        digest = hash_token(token)
        if any(hmac.compare_digest(k.sha256, digest) for k in load_keys(path)):
            return token
    _, token = create_key(path, DEV_KEY_NAME, SCOPES, DEV_RATE_PER_S, DEV_BURST)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


class KeyStore:
    """Lookup of a presented token among the keys of a file, reloaded when the file changes.

    :meth:`lookup` hashes the token and finds it in a dict (constant time in the number of
    keys; the comparison of equal-length digests by dict lookup leaks nothing useful, since the
    attacker does not control the digest).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, ApiKey] = {}
        self._mtime: float | None = None
        self._loaded = False
        self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Re-read the file when its mtime moved; True if it was re-read.

        Raises :class:`KeyFileError` for a malformed file (the previous keys stay in force).
        """
        try:
            mtime: float | None = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if self._loaded and mtime == self._mtime:
            return False
        keys = load_keys(self.path)
        self._by_hash = {k.sha256: k for k in keys}
        self._mtime = mtime
        self._loaded = True
        return True

    def refresh(self) -> bool:
        """:meth:`reload_if_changed` for a running service: a reload is logged at INFO; a
        malformed file is logged at ERROR and the previous keys stay in force (never raises).

        Returns:
            True if the file was re-read.
        """
        try:
            changed = self.reload_if_changed()
        except KeyFileError as exc:
            log.error("api keys not reloaded (previous keys stay): %s", exc)
            return False
        if changed:
            log.info("api keys reloaded: %d keys", len(self))
        return changed

    async def watch(self, interval_s: float = RELOAD_INTERVAL_S) -> None:
        """:meth:`refresh` every ``interval_s`` seconds until cancelled (the collector runs it
        as a task of its lifespan; the read endpoint calls :meth:`refresh` from its own loop)."""
        while True:
            await asyncio.sleep(interval_s)
            self.refresh()

    def lookup(self, token: str) -> ApiKey | None:
        """The key whose hash matches ``token``, or None."""
        return self._by_hash.get(hash_token(token))

    def __len__(self) -> int:
        return len(self._by_hash)


class TokenBucket:
    """One key's bucket: ``burst`` tokens, refilled at ``rate_per_s`` tokens/s.

    Args:
        rate_per_s: refill rate, tokens/s (> 0).
        burst: capacity, tokens (>= 1); the bucket starts full.
        clock: monotonic clock in seconds.
    """

    __slots__ = ("_clock", "burst", "rate_per_s", "tokens", "updated")

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens (default one request): 0.0 when granted, else the seconds to wait
        until ``n`` are available (nothing is taken then). ``n`` above ``burst`` is never
        granted: callers cap it."""
        now = self._clock()
        tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if tokens >= n:
            self.tokens = tokens - n
            return 0.0
        self.tokens = tokens
        return (n - tokens) / self.rate_per_s


BEARER_REALM = (b"www-authenticate", b'Bearer realm="feedpipe"')


def presented_token(headers: Mapping[bytes, bytes]) -> bytes | None:
    """The token of ``X-API-Key: <token>`` or ``Authorization: Bearer <token>`` (lower-cased
    ASGI header names), or None."""
    raw = headers.get(b"x-api-key")
    if raw is None:
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            raw = auth[7:].strip()
    return raw or None


@dataclass
class Access:
    """Outcome of :meth:`KeyAuthority.check`: ``status`` 0 when granted, else 401 / 403 / 429
    with ``message`` and ``headers`` (``WWW-Authenticate`` or ``Retry-After``) to send."""

    key: ApiKey | None
    status: int = 0
    message: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class KeyAuthority:
    """A request's key checked against a :class:`KeyStore`: known, holding the scope, within
    its rate limit (one :class:`TokenBucket` per key).

    Args:
        keystore: the keys.
        workers: processes sharing the port. Buckets live in process memory, so each process
            enforces ``rate_per_s / workers`` with a burst of ``max(1, burst // workers)``:
            the kernel spreads connections over the processes (``SO_REUSEPORT``), so the sum
            approximates the key's limit.
    """

    def __init__(self, keystore: KeyStore, workers: int = 1) -> None:
        self.keystore = keystore
        self.workers = max(1, workers)
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: ApiKey) -> TokenBucket:
        """The key's bucket in this process (rebuilt when the key's rate or burst changed)."""
        b = self._buckets.get(key.key_id)
        rate = key.rate_per_s / self.workers
        burst = max(1, key.burst // self.workers)
        if b is None or b.rate_per_s != rate or b.burst != float(burst):
            b = self._buckets[key.key_id] = TokenBucket(rate, burst)
        return b

    def check(self, token: bytes | None, needed: str, cost: float = 1.0) -> Access:
        """Check ``token`` (from :func:`presented_token`) for scope ``needed``, taking ``cost``
        tokens from its bucket (capped at the bucket size).

        Returns:
            :class:`Access`: 401 for no or an unknown token, 403 for a key without the scope,
            429 with ``Retry-After`` (whole seconds, rounded up, >= 1) when the bucket is short.
        """
        if not token:
            return Access(None, 401, "missing API key (X-API-Key header)", [BEARER_REALM])
        key = self.keystore.lookup(token.decode("latin-1"))
        if key is None:
            return Access(None, 401, "unknown API key", [BEARER_REALM])
        if not key.allows(needed):
            return Access(key, 403, f"API key {key.key_id} lacks scope {needed}")
        b = self.bucket(key)
        wait = b.take(min(cost, b.burst))
        if wait > 0.0:
            retry = str(max(1, math.ceil(wait))).encode()
            msg = f"rate limit of key {key.key_id} exceeded"
            return Access(key, 429, msg, [(b"retry-after", retry)])
        return Access(key)
