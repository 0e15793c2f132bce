"""When a call to an HTTP backend may be tried again: a pure policy, no clock and no sockets.

A retry is safe only if doing the work twice does no harm. So:

- a request that never left (the TCP connection was refused, the name did not resolve) is always retried:
  the backend cannot have seen it;
- a request that may have reached the backend (a timeout, a connection that broke mid-way, a ``5xx`` or
  ``429``) is retried only if the call is **idempotent**: connect decisions, disconnect notifications
  (which carry an ``id`` a backend can de-duplicate on) and the events a route lists as idempotent;
- any other answer (``2xx``, or a ``4xx`` that says the request itself is wrong) is final.

Delays grow exponentially with full jitter (:class:`shared.backoff.Backoff`); the caller also stops once
the call's deadline is near.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from shared.backoff import Backoff

# Statuses that say "not now" rather than "never": worth another try when the call is idempotent.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Outcome(Enum):
    """How one attempt ended."""

    OK = "ok"  # a 2xx answer
    STATUS = "status"  # any other HTTP status
    REFUSED = "refused"  # no connection could be made: the request was never sent
    BROKEN = "broken"  # the connection failed after the request may have been sent
    TIMEOUT = "timeout"  # no complete answer in time
    BUSY = "busy"  # the node's own limit for this backend was full: nothing was sent


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    status: int = 0  # the HTTP status, when there was one


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` more attempts at most after the first, spaced by ``backoff``."""

    retries: int = 2
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.1, cap=2.0))

    def may_retry(self, attempt: Attempt, idempotent: bool) -> bool:
        """Whether ``attempt``'s outcome alone allows another try (see the module docstring)."""
        if attempt.outcome is Outcome.REFUSED:
            return True
        if not idempotent:
            return False
        if attempt.outcome in (Outcome.TIMEOUT, Outcome.BROKEN):
            return True
        return attempt.outcome is Outcome.STATUS and attempt.status in RETRYABLE_STATUSES

    def delay(self, attempt: Attempt, tried: int, idempotent: bool, time_left: float) -> float | None:
        """Seconds to wait before the next try after ``tried`` attempts ended, the last with ``attempt``;
        None to give up: the outcome is final, the retries are used up, or the wait would not leave
        ``time_left`` (seconds until the call's deadline) enough room for another try."""
        if tried > self.retries or not self.may_retry(attempt, idempotent):
            return None
        wait = self.backoff.delay(tried - 1)
        return wait if wait < time_left else None
