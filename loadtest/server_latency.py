"""The gateway's own view of delivery latency: its ``prism_delivery_latency_seconds`` histogram.

The end-to-end latency the generator measures includes the generator's own queueing, and on a shared
2-core machine the generator's core is often the busier one. Messages that carry ``Prism-Sent-At`` are
timed by the gateway itself, from the backend's publish to the write into the client's socket; the
difference between two scrapes of that histogram around a phase says how much of the latency was the
gateway's. Its buckets are coarse (0.5, 1, 2.5, 5, 10 ms ...), so the figures are the share of messages
written within 5 ms and a quantile interpolated inside its bucket, as Prometheus' ``histogram_quantile``
does.
"""

from __future__ import annotations

import asyncio
import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import NAMES

HISTOGRAM = NAMES["delivery_latency"]

Buckets = dict[float, float]  # upper bound in seconds (math.inf last) -> cumulative count


def parse(exposition: str, target: str) -> Buckets:
    """The cumulative buckets of the delivery-latency histogram for ``target`` (conn, room, user)."""
    buckets: Buckets = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != HISTOGRAM:
            continue
        for sample in family.samples:
            if sample.name == HISTOGRAM + "_bucket" and sample.labels.get("target") == target:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return dict(sorted(buckets.items()))


def delta(before: Buckets, after: Buckets) -> Buckets:
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def quantile(buckets: Buckets, q: float) -> float | None:
    """Seconds below which a share ``q`` of the observations fell, interpolated linearly inside its
    bucket; the largest finite bound when it falls in the +Inf bucket; None without observations."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets.items():
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def share_within(buckets: Buckets, seconds: float) -> float | None:
    """The share of observations at or under ``seconds``, which must be one of the bucket bounds."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0 or seconds not in buckets:
        return None
    return buckets[seconds] / total


async def scrape(url: str, target: str) -> Buckets:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    return parse(await asyncio.to_thread(get), target)
