"""The retry policy of HTTP backend calls (gateway/core/retry.py): what is retried, and how often."""

from __future__ import annotations

import random

import pytest

from gateway.core.retry import RETRYABLE_STATUSES, Attempt, Outcome, RetryPolicy
from shared.backoff import Backoff

POLICY = RetryPolicy(retries=2, backoff=Backoff(base=0.1, cap=2.0, rng=random.Random(7)))


def test_a_request_that_never_left_is_retried_even_if_not_idempotent() -> None:
    assert POLICY.may_retry(Attempt(Outcome.REFUSED), idempotent=False)


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.BROKEN])
def test_a_request_that_may_have_arrived_is_retried_only_if_idempotent(outcome: Outcome) -> None:
    assert POLICY.may_retry(Attempt(outcome), idempotent=True)
    assert not POLICY.may_retry(Attempt(outcome), idempotent=False)


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUSES))
def test_not_now_statuses_are_retried_only_if_idempotent(status: int) -> None:
    assert POLICY.may_retry(Attempt(Outcome.STATUS, status), idempotent=True)
    assert not POLICY.may_retry(Attempt(Outcome.STATUS, status), idempotent=False)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
def test_final_answers_are_never_retried(status: int) -> None:
    assert not POLICY.may_retry(Attempt(Outcome.STATUS, status), idempotent=True)
    assert not POLICY.may_retry(Attempt(Outcome.OK, 200), idempotent=True)
    assert not POLICY.may_retry(Attempt(Outcome.BUSY), idempotent=True)


def test_retries_stop_after_the_configured_count_and_near_the_deadline() -> None:
    refused = Attempt(Outcome.REFUSED)
    first = POLICY.delay(refused, tried=1, idempotent=False, time_left=10)
    second = POLICY.delay(refused, tried=2, idempotent=False, time_left=10)
    assert first is not None
    assert 0 <= first <= 0.1
    assert second is not None
    assert 0 <= second <= 0.2
    assert POLICY.delay(refused, tried=3, idempotent=False, time_left=10) is None
    assert POLICY.delay(refused, tried=1, idempotent=False, time_left=0.0) is None
    assert RetryPolicy(retries=0).delay(refused, tried=1, idempotent=True, time_left=10) is None
