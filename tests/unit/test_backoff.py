"""Tests for shared.backoff: the delays it computes (seeded, never slept) and when it gives up."""

from __future__ import annotations

import random

import pytest

from shared.backoff import Backoff


class Highest:
    """A random source that always picks the top of the range, to read the ceilings."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b


def test_defaults_are_100ms_base_10s_cap_unlimited() -> None:
    policy = Backoff()
    assert (policy.base, policy.cap, policy.max_attempts) == (0.1, 10.0, None)
    assert not policy.gives_up(10_000)


def test_ceiling_doubles_from_base_until_cap() -> None:
    policy = Backoff(base=0.1, cap=1.0)
    assert [policy.ceiling(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_huge_attempt_counts_stay_at_the_cap() -> None:
    policy = Backoff(base=0.1, cap=10.0)
    assert policy.ceiling(63) == 10.0
    assert policy.ceiling(10_000) == 10.0


def test_full_jitter_draws_uniformly_between_zero_and_the_ceiling() -> None:
    source = Highest()
    policy = Backoff(base=0.5, cap=3.0, rng=source)
    delays = [policy.delay(n) for n in range(5)]
    assert delays == pytest.approx([0.5, 1.0, 2.0, 3.0, 3.0])
    assert [a for a, _ in source.calls] == [0.0] * 5


def test_seeded_delays_are_reproducible_and_within_bounds() -> None:
    policy = Backoff(base=0.1, cap=2.0, rng=random.Random(42))
    again = Backoff(base=0.1, cap=2.0, rng=random.Random(42))
    expected = random.Random(42)
    delays = [policy.delay(n) for n in range(12)]
    assert delays == [again.delay(n) for n in range(12)]
    assert delays == [expected.uniform(0.0, min(2.0, 0.1 * 2**n)) for n in range(12)]
    for n, delay in enumerate(delays):
        assert 0.0 <= delay <= policy.ceiling(n)


def test_jitter_covers_the_whole_window() -> None:
    policy = Backoff(base=1.0, cap=1.0, rng=random.Random(7))
    delays = [policy.delay(0) for _ in range(2000)]
    assert min(delays) < 0.05
    assert max(delays) > 0.95
    assert 0.45 < sum(delays) / len(delays) < 0.55


def test_schedule_counts_attempts_and_reset_starts_over() -> None:
    source = Highest()
    schedule = Backoff(base=0.1, cap=10.0, rng=source).schedule()
    assert [schedule.next_delay() for _ in range(4)] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert schedule.attempt == 4
    schedule.reset()
    assert schedule.attempt == 0
    assert schedule.next_delay() == pytest.approx(0.1)


def test_schedule_gives_up_after_max_attempts() -> None:
    schedule = Backoff(base=0.1, max_attempts=3, rng=random.Random(1)).schedule()
    delays = [schedule.next_delay() for _ in range(5)]
    assert [d is not None for d in delays] == [True, True, True, False, False]
    schedule.reset()
    assert schedule.next_delay() is not None


def test_one_policy_shared_by_clients_keeps_separate_schedules() -> None:
    policy = Backoff(base=0.1, rng=Highest())
    first, second = policy.schedule(), policy.schedule()
    first.next_delay()
    first.next_delay()
    assert second.next_delay() == pytest.approx(0.1)
    assert first.attempt == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": 0.0}, "base must be > 0"),
        ({"base": -1.0}, "base must be > 0"),
        ({"base": 1.0, "cap": 0.5}, "cap"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff().ceiling(-1)
