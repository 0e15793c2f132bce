"""Reconnect backoff: exponential growth with full jitter, as a pure policy you can unit-test.

Attempt ``n`` (0-based: the number of failures so far) waits a random time in
``[0, min(cap, base * 2**n)]`` ("full jitter", see the AWS Architecture Blog post "Exponential Backoff And
Jitter"). Full jitter spreads the clients of a node that dies or drains over the whole window instead of
bringing them all back at the same instant, and the ceiling stops growing at ``cap``.

    policy = Backoff(base=0.1, cap=10.0)            # unlimited attempts
    schedule = policy.schedule()
    delay = schedule.next_delay()                    # uniform(0, 0.1), then uniform(0, 0.2), ...
    schedule.reset()                                 # after a connection succeeds

:class:`Backoff` is immutable and may be shared by many clients; each client keeps its own
:class:`BackoffSchedule`. Nothing here sleeps: the caller decides what to do with a delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

# 2**64 * base exceeds any sensible cap; stop doubling there so huge attempt counts never overflow.
_MAX_EXPONENT = 64


class RandomSource(Protocol):
    """What :class:`Backoff` needs from a random generator (``random.Random`` fits)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter.

    ``base``: the ceiling of the first delay, in seconds (default 0.1). ``cap``: the largest ceiling
    (default 10). ``max_attempts``: how many connection attempts in a row may fail before giving up;
    ``None`` (the default) never gives up. ``rng``: the random source (anything with ``uniform``); pass a
    seeded ``random.Random`` for reproducible delays.
    """

    base: float = 0.1
    cap: float = 10.0
    max_attempts: int | None = None
    rng: RandomSource = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.base > 0:
            raise ValueError(f"backoff base must be > 0 seconds, got {self.base!r}")
        if not self.cap >= self.base:
            raise ValueError(f"backoff cap ({self.cap!r}) must be >= base ({self.base!r})")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts!r}")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before attempt ``attempt`` (0-based): ``min(cap, base * 2**n)``."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        if attempt >= _MAX_EXPONENT:
            return self.cap
        return min(self.cap, self.base * 2.0**attempt)

    def delay(self, attempt: int) -> float:
        """A delay drawn uniformly from ``[0, ceiling(attempt)]``."""
        return self.rng.uniform(0.0, self.ceiling(attempt))

    def gives_up(self, failures: int) -> bool:
        """Whether ``failures`` attempts in a row are as many as the policy allows."""
        return self.max_attempts is not None and failures >= self.max_attempts

    def schedule(self) -> BackoffSchedule:
        """A fresh per-connection attempt counter using this policy."""
        return BackoffSchedule(self)


class BackoffSchedule:
    """One client's position in a :class:`Backoff` policy: counts failed attempts, hands out delays."""

    __slots__ = ("attempt", "policy")

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self.attempt = 0  # failed attempts since the last reset

    def next_delay(self) -> float | None:
        """The delay before the next attempt, or ``None`` when the policy gives up. Counts the attempt."""
        if self.policy.gives_up(self.attempt):
            return None
        delay = self.policy.delay(self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the first (shortest) delay; call it once a connection succeeded."""
        self.attempt = 0
