"""The read endpoint's in-process circuit breaker on Redis. (Its other guard, the per-key rate
limit, is :class:`feedpipe.apikeys.TokenBucket`, shared with the event collector.)

Circuit breaker (Nygard, *Release It!*, 2nd ed., ch. 5 "Circuit Breaker"), with three states::

    closed --(failure_threshold consecutive failures)--> open
    open   --(reset_timeout_s elapsed)-----------------> half-open (one trial call at a time)
    half-open --trial succeeds--> closed      half-open --trial fails--> open (timer restarts)

A *failure* is any Redis error of a call, including a socket timeout (the read endpoint's Redis
client times out after ``settings().api_redis_timeout_ms``, default 250 ms) and a connection
refused; any success resets the consecutive count. Defaults: 5 consecutive failures, 5 s open
(``FEEDPIPE_API_BREAKER_FAILURES`` / ``FEEDPIPE_API_BREAKER_RESET_S``). While open, callers
fail fast with :class:`CircuitOpen` instead of waiting on Redis.

The breaker is a single-threaded asyncio object (one API process): no locks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "STATE_CODES",
    "CircuitBreaker",
    "CircuitOpen",
]
STATE_CODES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}
"""Numeric state for the ``feedpipe_api_redis_circuit_state`` gauge."""


class CircuitOpen(Exception):
    """Redis is not called: the breaker is open (or half-open with its trial call in flight)."""


class CircuitBreaker:
    """Consecutive-failure circuit breaker (see the module docstring for the state machine).

    Args:
        failure_threshold: consecutive failures that open the circuit (>= 1).
        reset_timeout_s: seconds the circuit stays open before a trial call is let through.
        clock: monotonic clock in seconds (tests may pass their own).
        on_change: called with the new state name after every transition.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout_s > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._trial_in_flight = False
        self.last_error = ""

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)

    def before_call(self) -> None:
        """Admit a call or raise :class:`CircuitOpen` (moves open -> half-open when due)."""
        if self.state == CLOSED:
            return
        if self.state == OPEN:
            if self._clock() - self.opened_at < self.reset_timeout_s:
                raise CircuitOpen(f"circuit open after {self.failures} failures")
            self._set(HALF_OPEN)
        if self._trial_in_flight:
            raise CircuitOpen("circuit half-open: trial call in flight")
        self._trial_in_flight = True

    def success(self) -> None:
        """Record a successful call: resets the count; a half-open trial closes the circuit."""
        self.failures = 0
        self._trial_in_flight = False
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self, error: BaseException) -> None:
        """Record a failed call; opens the circuit at the threshold or on a failed trial."""
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:200]
        self._trial_in_flight = False
        if self.state == HALF_OPEN or self.failures >= self.failure_threshold:
            self.opened_at = self._clock()
            self._set(OPEN)

    def retry_after_s(self) -> int:
        """Whole seconds until a trial call may go through (>= 1), for ``Retry-After``."""
        if self.state != OPEN:
            return 1
        left = self.reset_timeout_s - (self._clock() - self.opened_at)
        return max(1, math.ceil(left))
