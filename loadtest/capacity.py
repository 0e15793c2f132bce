"""The capacity search: the highest paced rate at which the p99 latency stays under a bound.

Users plan capacity by the rate a node serves *within a latency budget*, not by its peak. The search
runs paced steps (open loop, a few seconds each) and judges each one: a step passes only with its p99
publish-to-receipt latency under the bound, every delivery arrived and no error frame. It starts low
(a fraction of the scenario's measured peak), doubles the rate until a step fails or the peak is
reached, then bisects between the last pass and the first fail until they are within ``resolution``.
It is bounded in steps and in time; the figure is the highest rate that passed (0 when none did).

Two guards against a shared machine's noise: a failed step is run once more at the same rate before
the rate counts as failed (one preemption of a few ms by another process fails a 3 s step whatever
the rate), and no step is slower than ``min_samples`` timed deliveries (the p99 of a few dozen samples
is their maximum).

The search knows nothing about sockets: it gets ``run_step(rate)`` and reads back a :class:`Trial`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CapacityOptions:
    p99_ms: float = 5.0  # a step passes only if its p99 is under this
    step_seconds: float = 3.0  # each step is a paced phase this long
    max_steps: int = 12  # retries included
    max_seconds: float = 120.0  # no new step starts after this (the step under way still ends)
    resolution: float = 0.1  # stop bisecting once the first fail is within 10% of the last pass
    start_fraction: float = 1 / 32  # the first step's rate, as a share of the measured peak
    min_rate: float = 100.0  # deliveries/s: never step below this
    min_messages: int = 10  # nor below this many publishes per step (a room publish is many deliveries)
    min_samples: int = 300  # nor below this many timed deliveries per step
    retries: int = 1  # a failed step is run this many more times at its rate; one pass is a pass


@dataclass(frozen=True)
class Trial:
    """What one paced step measured. ``rate`` is the offered deliveries/s; the busy shares are CPU
    seconds per wall second of the server's core and of the generator's core (generator + broker)."""

    rate: float
    p99_ms: float | None
    drops: int
    errors: int = 0
    server_busy: float = 0.0
    client_busy: float = 0.0
    steal: float = 0.0  # the share of the machine's CPU time the hypervisor took meanwhile

    def passed(self, bound_ms: float) -> bool:
        return self.p99_ms is not None and self.p99_ms < bound_ms and self.drops == 0 and self.errors == 0


@dataclass
class Capacity:
    bound_ms: float
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        """The highest rate that passed."""
        passed = [t for t in self.trials if t.passed(self.bound_ms)]
        return max(passed, key=lambda t: t.rate) if passed else None

    @property
    def first_fail(self) -> Trial | None:
        """The lowest rate above the best that failed: what stopped the search going higher."""
        best = self.best
        floor = best.rate if best else 0.0
        failed = [t for t in self.trials if not t.passed(self.bound_ms) and t.rate > floor]
        return min(failed, key=lambda t: t.rate) if failed else None

    def figures(self) -> dict[str, float]:
        best, fail = self.best, self.first_fail
        figures: dict[str, float] = {
            "capacity_bound_ms": self.bound_ms,
            "capacity_per_s": round(best.rate) if best else 0,
            "capacity_steps": len(self.trials),
        }
        if best is not None and best.p99_ms is not None:
            figures["capacity_p99_ms"] = round(best.p99_ms, 3)
        if fail is not None:
            figures["capacity_fail_per_s"] = round(fail.rate)
            figures["capacity_fail_p99_ms"] = round(fail.p99_ms, 3) if fail.p99_ms is not None else -1
        # Which core was the limit: the busy shares at the step just above the figure (or at the best
        # step when none failed above it, i.e. the peak itself was reached).
        edge = fail or best
        if edge is not None:
            figures["capacity_server_busy"] = round(edge.server_busy, 2)
            figures["capacity_client_busy"] = round(edge.client_busy, 2)
            figures["capacity_steal"] = round(edge.steal, 3)
        return figures


def floor_rate(options: CapacityOptions, fanout: int, sample_every: int) -> float:
    """The lowest rate a step runs at: ``fanout`` deliveries per publish, one in ``sample_every`` timed."""
    return max(
        options.min_rate,
        fanout * options.min_messages / options.step_seconds,
        sample_every * options.min_samples / options.step_seconds,
    )


async def search(
    run_step: Callable[[float], Awaitable[Trial]],
    peak: float,
    options: CapacityOptions,
    fanout: int = 1,
    sample_every: int = 1,
) -> Capacity:
    """Step up from ``peak * start_fraction``, doubling, then bisect; see the module docstring. Rates are
    deliveries/s; ``fanout`` is the deliveries per publish, one delivery in ``sample_every`` is timed."""
    result = Capacity(options.p99_ms)
    deadline = time.monotonic() + options.max_seconds
    floor = floor_rate(options, fanout, sample_every)
    top = max(peak, floor)
    rate = max(floor, min(top, peak * options.start_fraction))
    low: float | None = None  # the highest rate that passed
    high: float | None = None  # the lowest rate that failed
    while len(result.trials) < options.max_steps and time.monotonic() < deadline:
        trial = await run_step(rate)
        result.trials.append(trial)
        for _ in range(options.retries):
            if trial.passed(options.p99_ms) or len(result.trials) >= options.max_steps:
                break
            trial = await run_step(rate)
            result.trials.append(trial)
        if trial.passed(options.p99_ms):
            low = rate
        else:
            high = rate
        if high is None:  # still stepping up
            if rate >= top:
                break  # passed at the measured peak: there is nothing higher to pace
            rate = min(top, rate * 2)
        elif low is None:  # the first step already failed: step down
            if rate <= floor:
                break
            rate = max(floor, rate / 2)
        elif high <= low * (1 + options.resolution):
            break
        else:
            rate = (low + high) / 2
    return result
