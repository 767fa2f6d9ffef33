"""One :class:`httpx.Client` shared by the polling connectors, with a per-host token-bucket
rate limit and retries through tenacity: exponential back-off with full jitter
(``wait_random_exponential``) on timeouts, connection errors, invalid (e.g. truncated) JSON
bodies, 429 and 5xx; a server's ``Retry-After`` (delta-seconds or HTTP-date, RFC 9110 section
10.2.3) is honoured up to a cap. Other 4xx are not retried: :class:`RequestRejected` carries the
body's own explanation (JSON:API ``errors[].detail``, WordPress ``message``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

from connectors.config import LiveSourceSpec
from connectors.http.errors import (
    HttpError,
    Interrupted,
    RequestRejected,
    TransientError,
    error_detail,
    parse_retry_after,
)

log = logging.getLogger("feedpipe.connectors")

USER_AGENT: Final = "feedpipe-connector/1.0"


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
