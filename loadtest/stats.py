"""Latency percentiles and throughput over time, from raw samples."""

from __future__ import annotations

from array import array
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds. ``samples`` is how many messages were measured."""

    samples: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(latencies_ns: array[int] | list[int]) -> Latency | None:
    if not len(latencies_ns):
        return None
    values = (
        np.frombuffer(latencies_ns, dtype=np.int64)
        if isinstance(latencies_ns, array)
        else np.array(latencies_ns, dtype=np.int64)
    )
    ms = values.astype(np.float64) / 1e6
    p50, p90, p99, p999 = (float(x) for x in np.percentile(ms, PERCENTILES))
    return Latency(len(ms), p50, p90, p99, p999, float(ms.max()), float(ms.mean()))


class Timeline:
    """Counts of events per fixed-width bucket of time since ``start_ns``."""

    __slots__ = ("buckets", "start_ns", "width_ns")

    def __init__(self, start_ns: int, width_s: float = 0.1) -> None:
        self.start_ns = start_ns
        self.width_ns = int(width_s * 1e9)
        self.buckets: list[int] = []

    def add(self, now_ns: int, count: int = 1) -> None:
        index = (now_ns - self.start_ns) // self.width_ns
        buckets = self.buckets
        if index >= len(buckets):
            buckets.extend([0] * (index + 1 - len(buckets)))
        if index >= 0:
            buckets[index] += count

    def rates(self, until_ns: int | None = None) -> list[float]:
        """Events per second in each bucket. With ``until_ns`` (when counting stopped), the last bucket
        is as wide as the time it covered, so a phase shorter than one bucket still has its rate."""
        seconds = self.width_ns / 1e9
        rates = [count / seconds for count in self.buckets]
        if until_ns is not None and rates:
            covered_ns = until_ns - self.start_ns - (len(rates) - 1) * self.width_ns
            if 0 < covered_ns < self.width_ns:
                rates[-1] = self.buckets[-1] / (covered_ns / 1e9)
        return rates
