"""HTTP plumbing shared by the polling connectors (WordPress, Drupal, feeds) and their runner.

- :class:`HttpClient`: one shared :class:`httpx.Client` (thread-safe connection pool) with a
  per-host token-bucket rate limit and retries through tenacity: exponential back-off with full
  jitter (``wait_random_exponential``) on timeouts, connection errors, invalid (e.g. truncated)
  JSON bodies, 429 and 5xx; a server's ``Retry-After`` (delta-seconds or HTTP-date, RFC 9110
  section 10.2.3) is honoured up to a cap. Other 4xx are not retried: :class:`RequestRejected`
  carries the body's own explanation (JSON:API ``errors[].detail``, WordPress ``message``).
- :class:`PollingConnector`: base class of a live source: a poll loop on the source's schedule,
  publishing ``feedpipe.RawCmsEvent`` records to ``cms.raw``, a cursor persisted only after the
  producer flushed (so it never runs ahead of Kafka), and a failure state: after
  ``fail_threshold`` consecutive failed polls the source is reported failing (log at ERROR,
  :attr:`LiveSourceMetrics.failing`) and polled at most once per ``max_backoff_s``.
- :class:`KeysetCursor`: the "last modification time + ids already published at that time"
  cursor of the WordPress and Drupal connectors (see :mod:`connectors.wordpress`).
- :func:`run_sources`: every configured source in its own thread, one shared producer, until a
  stop event is set.
"""

from __future__ import annotations

import abc
import email.utils
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import orjson
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from connectors.base import Connector, ConnectorMetrics
from connectors.config import LiveSourceSpec
from connectors.replay import CMS_SUBJECT, CMS_TOPIC, Keyed
from feedpipe.errors import FeedpipeError
from feedpipe.jsonapi import errors_reason
from feedpipe.kafka.producer import DeliveryError, IdempotentProducer
from feedpipe.settings import settings
from feedpipe.wire.codec import codec

log = logging.getLogger("feedpipe.connectors")

USER_AGENT: Final = "feedpipe-connector/1.0"
DETAIL_MAX_CHARS: Final = 500
BODY_KEPT_BYTES: Final = 64 * 1024
BACKOFF_JITTER: Final = 0.1  # failing sources wait max_backoff_s * U(1, 1.1): no thundering herd


# -- errors ------------------------------------------------------------------------------------
class HttpError(FeedpipeError):
    """A request to a source failed.

    Attributes:
        code: short reason code used in metrics (e.g. ``timeout``, ``http_503``,
            ``jsonapi_error``).
        url: the request URL.
        status: HTTP status, when a response arrived.
        detail: the server's explanation (from the body), when any.
        body: the response body (first :data:`BODY_KEPT_BYTES` bytes), b"" without one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        url: str,
        status: int | None = None,
        detail: str = "",
        body: bytes = b"",
    ) -> None:
        super().__init__(f"{code}: {message} ({url})")
        self.code = code
        self.url = url
        self.status = status
        self.detail = detail
        self.body = body[:BODY_KEPT_BYTES]


class TransientError(HttpError):
    """Worth retrying: timeout, connection error, invalid/truncated body, 429 or 5xx.

    Attributes:
        retry_after: the server's ``Retry-After`` in seconds (None without one).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        url: str,
        status: int | None = None,
        detail: str = "",
        body: bytes = b"",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, message, url=url, status=status, detail=detail, body=body)
        self.retry_after = retry_after


class RequestRejected(HttpError):
    """The source refused the request (4xx other than 429) or answered with an error document
    (e.g. a JSON:API ``errors`` document); not retried. ``detail`` quotes the document."""


class InvalidResponse(HttpError):
    """A well-formed answer that is not what the endpoint promises (e.g. a JSON:API document
    with neither ``data`` nor ``errors``); not retried."""


class Interrupted(HttpError):
    """The request was abandoned because the connector is stopping."""


# -- error bodies ------------------------------------------------------------------------------
def error_detail(body: bytes) -> str:
    """The explanation an error body carries, for error messages.

    JSON:API (jsonapi.org/format/1.0/#error-objects): ``"<status> <title>: <detail>"`` per
    error joined by ``"; "``; WordPress REST (``{"code", "message", "data": {"status"}}``):
    ``"<code>: <message>"``; anything else: the body's text, whitespace collapsed, cut at
    :data:`DETAIL_MAX_CHARS` characters ("" for an empty body).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, list) and errors:
            return errors_reason(errors)[:DETAIL_MAX_CHARS]
        if "code" in doc and "message" in doc:
            return f"{doc.get('code')}: {doc.get('message')}"[:DETAIL_MAX_CHARS]
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:DETAIL_MAX_CHARS]


def jsonapi_errors(body: bytes) -> list[Any] | None:
    """The ``errors`` list of a JSON:API error document, or None when ``body`` is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    return errors if isinstance(errors, list) else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` (RFC 9110 section 10.2.3) in seconds from ``now``: delta-seconds or an
    HTTP-date (a date in the past gives 0.0). None when absent or unparsable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# -- rate limit --------------------------------------------------------------------------------
class TokenBucket:
    """Token bucket: ``rate`` tokens/s, capacity ``max(1, rate)`` (a burst of one second).

    :meth:`reserve` takes a token, possibly on credit, and says how long to wait before using
    it; reservations are served in order, so concurrent callers are spaced ``1/rate`` apart.
    Thread-safe.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def limit(self, rate: float) -> None:
        """Lower the rate to ``rate`` if it is lower (sources sharing a host share the lowest)."""
        with self._lock:
            if rate < self.rate:
                self.rate = rate
                self.capacity = max(1.0, rate)
                self._tokens = min(self._tokens, self.capacity)

    def reserve(self) -> float:
        """Take one token; returns the seconds to wait before the request may be sent."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._t) * self.rate)
            self._t = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


# -- retries -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried.

    Attributes:
        attempts: attempts in total (1 = no retry).
        initial_s: multiplier of the exponential back-off; the n-th wait is uniform in
            ``[0, min(max_s, initial_s * 2**n)]`` (tenacity ``wait_random_exponential``, the
            "full jitter" of the AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
        max_s: cap of one back-off wait.
        retry_after_cap_s: a ``Retry-After`` longer than this is cut to this.
    """

    attempts: int = 5
    initial_s: float = 0.5
    max_s: float = 30.0
    retry_after_cap_s: float = 120.0

    @classmethod
    def of(cls, spec: LiveSourceSpec) -> RetryPolicy:
        """The policy configured for ``spec``."""
        return cls(
            spec.retry_attempts, spec.retry_initial_s, spec.retry_max_s, spec.retry_after_cap_s
        )


class _WaitRetryAfter:
    """tenacity wait: the server's Retry-After (capped) when it gave one, else full jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.jitter = wait_random_exponential(multiplier=policy.initial_s, max=policy.max_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(exc.retry_after, self.policy.retry_after_cap_s)
        return float(self.jitter(state))


class _StopWhenSet(stop_base):
    """tenacity stop: no further attempt once ``event`` is set (the connector is stopping)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


RetryHook = Callable[[HttpError, float, int], None]  # (error, seconds to wait, attempt number)


class HttpClient:
    """One :class:`httpx.Client` shared by all sources, with per-host rate limits and retries.

    Args:
        client: an httpx client to use (not closed by :meth:`close`); default: a new one with
            redirects followed and ``User-Agent`` :data:`USER_AGENT`.

    Thread-safe: httpx's connection pool is, and the rate-limit buckets are locked.
    """

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._own = client is None
        self.client = client or httpx.Client(
            follow_redirects=True, headers={"User-Agent": USER_AGENT}
        )
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def limit_host(self, host: str, rps: float) -> None:
        """Allow at most ``rps`` requests/s to ``host`` (``host[:port]``; lowest rate wins)."""
        with self._lock:
            bucket = self._buckets.get(host)
            if bucket is None:
                self._buckets[host] = TokenBucket(rps)
            else:
                bucket.limit(rps)

    def close(self) -> None:
        """Close the httpx client if this object created it."""
        if self._own:
            self.client.close()

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        timeout_s: float = 10.0,
        policy: RetryPolicy | None = None,
        expect_json: bool = False,
        stop: threading.Event | None = None,
        on_retry: RetryHook | None = None,
    ) -> tuple[httpx.Response, Any]:
        """GET ``url`` with rate limit and retries.

        Args:
            url / params / headers / auth: the request (``params`` are URL-encoded).
            timeout_s: connect/read/write/pool timeout of one attempt.
            policy: retry policy (default :class:`RetryPolicy`).
            expect_json: parse a 2xx body as JSON; an unparsable (e.g. truncated) body is a
                transient error (``invalid_json``) and retried.
            stop: when set, back-off and rate-limit waits end early and the request is
                abandoned with :class:`Interrupted`.
            on_retry: called before each back-off sleep with the error, the wait in seconds
                and the attempt number that failed.

        Returns:
            ``(response, parsed JSON or None)``; 2xx and 304 (Not Modified) responses only.

        Raises:
            TransientError: still failing after ``policy.attempts`` attempts (the last error).
            RequestRejected: a 4xx other than 429 (``detail`` from the body).
            Interrupted: ``stop`` was set.
        """
        pol = policy or RetryPolicy()
        event = stop or threading.Event()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            if isinstance(exc, HttpError):
                log.warning(
                    "%s: attempt %d failed, retrying in %.2f s", exc, state.attempt_number, wait
                )
                if on_retry is not None:
                    on_retry(exc, wait, state.attempt_number)

        def sleep(seconds: float) -> None:
            event.wait(seconds)  # a stop ends the back-off early

        retrying = Retrying(
            stop=stop_any(stop_after_attempt(pol.attempts), _StopWhenSet(event)),
            wait=_WaitRetryAfter(pol),
            retry=retry_if_exception_type(TransientError),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(self._attempt, url, params, headers, auth, timeout_s, expect_json, event)

    def _attempt(
        self,
        url: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | None,
        timeout_s: float,
        expect_json: bool,
        stop: threading.Event,
    ) -> tuple[httpx.Response, Any]:
        if stop.is_set():
            raise Interrupted("stopping", "connector is stopping", url=url)
        host = urlsplit(url).netloc
        with self._lock:
            bucket = self._buckets.get(host)
        if bucket is not None:
            wait = bucket.reserve()
            if wait > 0 and stop.wait(wait):
                raise Interrupted("stopping", "connector is stopping", url=url)
        try:
            resp = self.client.get(
                url,
                params=dict(params) if params else None,
                headers=dict(headers) if headers else None,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=httpx.Timeout(timeout_s),
            )
        except httpx.TimeoutException as exc:
            raise TransientError(
                "timeout", f"no answer within {timeout_s} s ({type(exc).__name__})", url=url
            ) from exc
        except httpx.TransportError as exc:
            raise TransientError("connection", f"{type(exc).__name__}: {exc}", url=url) from exc
        final_url = str(resp.request.url)
        status = resp.status_code
        if status == 304 or 200 <= status < 300:
            if not expect_json or status == 304:
                return resp, None
            try:
                return resp, orjson.loads(resp.content)
            except orjson.JSONDecodeError as exc:
                raise TransientError(
                    "invalid_json",
                    f"HTTP {status} body of {len(resp.content)} bytes is not JSON "
                    f"(truncated?): {exc}",
                    url=final_url,
                    status=status,
                ) from exc
        detail = error_detail(resp.content)
        if status == 429 or status >= 500:
            code = "http_429" if status == 429 else f"http_{status}"
            raise TransientError(
                code,
                f"HTTP {status}" + (f": {detail}" if detail else ""),
                url=final_url,
                status=status,
                detail=detail,
                body=resp.content,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            )
        raise RequestRejected(
            f"http_{status}",
            f"HTTP {status}" + (f": {detail}" if detail else ""),
            url=final_url,
            status=status,
            detail=detail,
            body=resp.content,
        )


# -- metrics -----------------------------------------------------------------------------------
@dataclass
class LiveSourceMetrics(ConnectorMetrics):
    """:class:`ConnectorMetrics` of a live source, plus its health.

    Attributes:
        polls: polls attempted.
        not_modified: polls answered 304 Not Modified (feeds) or unchanged by content hash.
        failures: failed polls by reason code (``timeout``, ``http_503``, ``jsonapi_error``...).
        consecutive_failures: failed polls since the last successful one.
        failing: True once ``consecutive_failures >= fail_threshold`` (reset by a success).
        last_error: message of the last failure (None before any).
        last_error_at: UTC time of the last failure.
    """

    polls: int = 0
    not_modified: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    consecutive_failures: int = 0
    failing: bool = False
    last_error: str | None = None
    last_error_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view: :meth:`ConnectorMetrics.as_dict` plus the health fields."""
        out = super().as_dict()
        out.update(
            polls=self.polls,
            not_modified=self.not_modified,
            failures=dict(self.failures),
            consecutive_failures=self.consecutive_failures,
            failing=self.failing,
            last_error=self.last_error,
            last_error_at=self.last_error_at.isoformat() if self.last_error_at else None,
        )
        return out


# -- keyset cursor -----------------------------------------------------------------------------
def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass(frozen=True)
class KeysetCursor:
    """Position of a source ordered by modification time: ``ts`` = modification time of the
    newest published item, ``seen`` = id -> sha256 prefix of the payload of every item
    published with exactly that time.

    The next request asks for items modified at or after ``ts`` and :meth:`is_seen` skips the
    ones already published, so items sharing ``ts`` across a page boundary (or a crash) are
    neither lost nor re-sent; an item re-saved within the same second with other content has
    another digest and is published again.
    """

    ts: datetime | None = None
    seen: dict[str, str] = field(default_factory=dict)

    def is_seen(self, item_id: str | None, ts: datetime | None, payload: bytes) -> bool:
        """True when this exact item version was already published, or the item is older than
        the cursor (a server ignoring the time filter must not make a poll loop forever)."""
        if item_id is None or ts is None or self.ts is None:
            return False
        if ts < self.ts:
            return True
        return ts == self.ts and self.seen.get(item_id) == _digest(payload)

    def advanced(
        self, published: Iterable[tuple[str | None, datetime | None, bytes]]
    ) -> KeysetCursor:
        """The cursor after ``published`` (``(id, ts, payload)`` of each item published now)."""
        items: list[tuple[str, datetime, bytes]] = []
        for i, t, p in published:
            if i is not None and t is not None:
                items.append((i, t, p))
        if not items:
            return self
        newest = max(t for _, t, _ in items)
        if self.ts is not None and newest < self.ts:
            return self  # server answered older items than asked for: keep the position
        seen = dict(self.seen) if newest == self.ts else {}
        seen.update({i: _digest(p) for i, t, p in items if t == newest})
        return KeysetCursor(newest, seen)

    def to_json(self) -> dict[str, Any]:
        """``{"ts": ISO 8601 UTC or None, "seen": {id: digest}}``."""
        return {"ts": self.ts.isoformat() if self.ts else None, "seen": dict(self.seen)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> KeysetCursor:
        """Inverse of :meth:`to_json` (None -> start cursor).

        Raises:
            ValueError: malformed cursor (a corrupt cursor must not be silently reset).
        """
        if not data:
            return cls()
        ts_raw, seen = data.get("ts"), data.get("seen", {})
        if not isinstance(seen, dict) or not all(isinstance(v, str) for v in seen.values()):
            raise ValueError(f"cursor 'seen' must map ids to digests, got {seen!r}")
        ts = None
        if ts_raw is not None:
            ts = datetime.fromisoformat(str(ts_raw))
            ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        return cls(ts, {str(k): v for k, v in seen.items()})

    def describe(self) -> str:
        """Short text for metrics: ``"<ts> (+N ids)"`` or ``"start"``."""
        return f"{self.ts.isoformat()} (+{len(self.seen)} ids)" if self.ts else "start"


def parse_utc(value: Any) -> datetime | None:
    """ISO 8601 / RFC 3339 text -> aware UTC datetime (no offset = UTC, as WordPress'
    ``*_gmt`` fields); None for anything unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# -- polling connector -------------------------------------------------------------------------
class PollingConnector(Connector):
    """Base of a live source polled on ``spec.schedule_s``.

    Subclasses implement :meth:`poll_once` (fetch what is new, :meth:`publish` it, then
    :meth:`commit` after each page) and may override :meth:`load_state`.

    Args:
        spec: the source's configuration.
        client: a shared :class:`HttpClient` (not closed by :meth:`stop`); default: own one.
        producer / bootstrap: see :class:`Connector`.
        flush_timeout_s: seconds :meth:`commit` waits for Kafka acknowledgements.

    Raises:
        feedpipe.errors.ConfigError: ``auth.password_env`` is unset.
    """

    def __init__(
        self,
        spec: LiveSourceSpec,
        *,
        client: HttpClient | None = None,
        producer: IdempotentProducer | None = None,
        bootstrap: str | None = None,
        flush_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(
            spec.name, producer=producer, bootstrap=bootstrap, cursor_path=spec.cursor_path()
        )
        self.spec = spec
        self.metrics: LiveSourceMetrics = LiveSourceMetrics()
        self.policy = RetryPolicy.of(spec)
        self.flush_timeout_s = flush_timeout_s
        self._own_client = client is None
        self.http = client or HttpClient()
        self.http.limit_host(urlsplit(spec.url).netloc, spec.per_host_rps)
        self.auth: httpx.Auth | None = (
            httpx.BasicAuth(spec.auth.username, spec.auth.password()) if spec.auth else None
        )
        self._encode = codec(CMS_SUBJECT).encode
        self._state_loaded = False

    # -- to implement ---------------------------------------------------------------------
    @abc.abstractmethod
    def poll_once(self) -> int:
        """One poll: fetch everything new since the cursor, publish it, flush and persist the
        cursor after each page. Returns the number of raw events published.

        Raises:
            HttpError: the source could not be read (after retries) or refused the request.
            feedpipe.kafka.producer.DeliveryError: Kafka did not acknowledge the events.
        """

    def load_state(self, cursor: dict[str, Any] | None) -> None:
        """Take over the persisted cursor (None when there is none); called once by setup."""

    # -- lifecycle ------------------------------------------------------------------------
    def setup(self) -> None:
        """Open the producer (unless shared) and load the cursor once.

        Raises:
            ValueError: the cursor file is corrupt.
        """
        super().setup()
        if not self._state_loaded:
            self.load_state(self.load_cursor())
            self._state_loaded = True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask :meth:`run` to stop; flush/close the producer and HTTP client this owns."""
        super().stop(timeout_s)
        if self._own_client:
            self.http.close()

    def run(self) -> LiveSourceMetrics:
        """Poll until :meth:`stop`: after a success wait ``schedule_s`` minus the poll's time;
        after a failure see :meth:`poll_safely`. Never raises for a failed poll."""
        self.setup()
        while not self.stopping:
            delay = self.poll_safely()
            if self._stop.wait(delay):
                break
        return self.metrics

    def poll_safely(self) -> float:
        """Run :meth:`poll_once`, account for the outcome, and return the seconds to wait.

        Success: ``max(0, schedule_s - poll time)``. The n-th consecutive failure waits
        ``min(max_backoff_s, schedule_s * 2**(n-1))``; from ``fail_threshold`` failures on, the
        source is reported failing (ERROR log, ``metrics.failing``) and waits ``max_backoff_s``
        (times U(1, 1.1)), so it is never retried in a tight loop. Any exception of the poll
        (including bugs, logged with traceback) counts as a failure: one source never takes the
        others down.
        """
        spec, m = self.spec, self.metrics
        started = time.monotonic()
        m.polls += 1
        try:
            self.setup()
            self.poll_once()
        except Interrupted:
            return 0.0
        except Exception as exc:
            if self.stopping and isinstance(exc, HttpError):
                return 0.0
            code = (
                exc.code
                if isinstance(exc, HttpError)
                else ("kafka_delivery" if isinstance(exc, DeliveryError) else "unexpected")
            )
            m.failures[code] = m.failures.get(code, 0) + 1
            m.consecutive_failures += 1
            m.last_error = f"{type(exc).__name__}: {exc}"
            m.last_error_at = datetime.now(UTC)
            n = m.consecutive_failures
            if n >= spec.fail_threshold:
                delay = spec.max_backoff_s * (1.0 + random.uniform(0.0, BACKOFF_JITTER))
                level = logging.ERROR if not m.failing else logging.WARNING
                m.failing = True
                log.log(
                    level,
                    "source %s FAILING: %d polls in a row failed, last: %s; next poll in %.0f s",
                    self.name,
                    n,
                    m.last_error,
                    delay,
                    exc_info=code == "unexpected",
                )
            else:
                delay = min(spec.max_backoff_s, spec.schedule_s * 2 ** (n - 1))
                log.warning(
                    "source %s: poll failed (%d in a row): %s; next poll in %.1f s",
                    self.name,
                    n,
                    m.last_error,
                    delay,
                    exc_info=code == "unexpected",
                )
            return delay
        if m.failing:
            log.info("source %s recovered after %d failed polls", self.name, m.consecutive_failures)
        m.consecutive_failures = 0
        m.failing = False
        elapsed = time.monotonic() - started
        m.elapsed_s += elapsed
        return max(0.0, spec.schedule_s - elapsed)

    # -- helpers for subclasses -----------------------------------------------------------
    def fetch(
        self,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        expect_json: bool = False,
    ) -> tuple[httpx.Response, Any]:
        """:meth:`HttpClient.get` with this source's auth, timeout, retry policy and stop
        flag; each retry is counted in ``metrics.retries``. Raises as that method."""

        def count(_err: HttpError, _wait: float, _attempt: int) -> None:
            self.metrics.retries += 1

        return self.http.get(
            url,
            params=params,
            headers=headers,
            auth=self.auth,
            timeout_s=self.spec.timeout_s,
            policy=self.policy,
            expect_json=expect_json,
            stop=self._stop,
            on_retry=count,
        )

    def reject(self, exc: HttpError) -> HttpError:
        """Count a refused answer under ``exc.code`` in ``metrics.rejected``; returns ``exc``
        (for ``raise self.reject(...)``)."""
        self.metrics.reject(exc.code)
        return exc

    def publish(self, item: Keyed) -> None:
        """Encode ``item.record`` as ``feedpipe.RawCmsEvent`` and queue it on ``cms.raw``."""
        self.produce(CMS_TOPIC, item.key.encode(), self._encode(item.record))

    def commit(self, cursor: dict[str, Any], describe: str) -> None:
        """Flush (every queued event acknowledged), then persist ``cursor`` and show
        ``describe`` in ``metrics.cursor``.

        Raises:
            feedpipe.kafka.producer.DeliveryError: not acknowledged; the cursor is not saved.
        """
        self.flush(self.flush_timeout_s)
        self.save_cursor(cursor)
        self.metrics.cursor = describe


# -- runner ------------------------------------------------------------------------------------
def connector_for(
    spec: LiveSourceSpec,
    *,
    client: HttpClient | None = None,
    producer: IdempotentProducer | None = None,
    bootstrap: str | None = None,
) -> PollingConnector:
    """The connector of ``spec.kind`` (wordpress, drupal, rss).

    Raises:
        feedpipe.errors.ConfigError: the auth password variable is unset.
    """
    # Imported here: those modules import this one (PollingConnector).
    from connectors.drupal import DrupalConnector
    from connectors.rss import FeedConnector
    from connectors.wordpress import WordPressConnector

    classes: dict[str, type[PollingConnector]] = {
        "wordpress": WordPressConnector,
        "drupal": DrupalConnector,
        "rss": FeedConnector,
    }
    return classes[spec.kind](spec, client=client, producer=producer, bootstrap=bootstrap)


class SourceRunner:
    """Runs sources in threads (one each) with one shared producer and HTTP client.

    ``start()`` builds the connectors (reading auth secrets first, so a missing variable fails
    before anything runs) and starts one thread per source; ``metrics`` is live while they
    run; ``stop()`` asks every source to stop, joins the threads, closes the HTTP client and
    the producer (when opened here). Also a context manager (``start`` / ``stop``).

    Args:
        specs: the sources.
        bootstrap: Kafka bootstrap servers (default ``settings().kafka_bootstrap``).
        producer: a producer to share (not closed here); default one opened here.
        once: each thread polls its source once, then ends (see :meth:`wait`).
        join_timeout_s: how long :meth:`stop` waits for each thread.
    """

    def __init__(
        self,
        specs: Iterable[LiveSourceSpec],
        bootstrap: str | None = None,
        *,
        producer: IdempotentProducer | None = None,
        once: bool = False,
        join_timeout_s: float = 60.0,
    ) -> None:
        self.specs = list(specs)
        self._bootstrap = bootstrap
        self._producer = producer
        self._own_producer = producer is None
        self.once = once
        self.join_timeout_s = join_timeout_s
        self.connectors: list[PollingConnector] = []
        self._threads: list[threading.Thread] = []
        self._client: HttpClient | None = None

    @property
    def metrics(self) -> dict[str, LiveSourceMetrics]:
        """Live metrics per source name."""
        return {c.name: c.metrics for c in self.connectors}

    def start(self) -> SourceRunner:
        """Build the connectors and start their threads.

        Raises:
            feedpipe.errors.ConfigError: a source's auth variable is unset (nothing started).
        """
        client = HttpClient()
        try:
            prod = self._producer or IdempotentProducer(
                self._bootstrap or settings().kafka_bootstrap, client_id="feedpipe-connect"
            )
            conns = [connector_for(s, client=client, producer=prod) for s in self.specs]
        except BaseException:
            client.close()
            raise
        self._client, self._producer, self.connectors = client, prod, conns
        for conn in conns:
            t = threading.Thread(
                target=self._work, args=(conn,), name=f"source-{conn.name}", daemon=True
            )
            self._threads.append(t)
            t.start()
        return self

    def _work(self, conn: PollingConnector) -> None:
        if self.once:
            conn.poll_safely()
        else:
            conn.run()

    def alive(self) -> bool:
        """True while any source thread runs."""
        return any(t.is_alive() for t in self._threads)

    def wait(self, stop_event: threading.Event | None = None) -> None:
        """Block until every thread ended (``once``) or ``stop_event`` is set."""
        event = stop_event or threading.Event()
        while self.alive() and not event.is_set():
            event.wait(0.1)

    def stop(self) -> None:
        """Stop the sources, join their threads, close client and producer (when own).

        Raises:
            feedpipe.kafka.producer.DeliveryError: the final flush of an own producer failed.
        """
        for conn in self.connectors:
            conn.stop()
        for t in self._threads:
            t.join(self.join_timeout_s)
            if t.is_alive():
                log.error(
                    "source thread %s did not stop within %.0f s", t.name, self.join_timeout_s
                )
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._own_producer and self._producer is not None:
            prod, self._producer = self._producer, None
            prod.close()

    def __enter__(self) -> SourceRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_sources(
    specs: Iterable[LiveSourceSpec],
    bootstrap: str | None = None,
    stop_event: threading.Event | None = None,
    *,
    once: bool = False,
    producer: IdempotentProducer | None = None,
    join_timeout_s: float = 60.0,
) -> dict[str, LiveSourceMetrics]:
    """Run every source in its own thread until ``stop_event`` is set (or, with ``once``,
    until each source polled once), sharing one producer and one HTTP client
    (:class:`SourceRunner`).

    A failing source never blocks the others (own thread, own back-off). On stop, each
    connector finishes its current request (bounded by its ``timeout_s``), then the producer
    is flushed and closed (when opened here).

    Args:
        specs: the sources (e.g. :func:`connectors.config.load_sources`).
        bootstrap: Kafka bootstrap servers (default ``settings().kafka_bootstrap``).
        stop_event: set it to stop (e.g. from a SIGTERM handler); required unless ``once``.
        once: poll each source once and return (cron-style runs, tests).
        producer: a producer to use (not closed here); default one opened and closed here.
        join_timeout_s: how long to wait for each source thread after the stop.

    Returns:
        Metrics per source name.

    Raises:
        feedpipe.errors.ConfigError: a source's auth variable is unset (before anything runs).
        ValueError: ``stop_event`` missing without ``once``.
        feedpipe.kafka.producer.DeliveryError: the final flush of the producer failed.
    """
    if stop_event is None and not once:
        raise ValueError("run_sources needs a stop_event unless once=True")
    runner = SourceRunner(
        specs, bootstrap, producer=producer, once=once, join_timeout_s=join_timeout_s
    )
    runner.start()
    try:
        runner.wait(stop_event)
    finally:
        runner.stop()
    return runner.metrics
