"""Reading the gateway's delivery-latency histogram: parsing a real exposition, deltas, quantiles."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest

from gateway.metrics import GatewayMetrics
from loadtest import server_latency


def exposition(conn: list[float], room: list[float]) -> str:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, "bench")
    for target, values in (("conn", conn), ("room", room)):
        for value in values:
            metrics.delivery_latency.labels(node="bench", target=target).observe(value)
    return generate_latest(registry).decode()


def test_parse_reads_one_targets_cumulative_buckets() -> None:
    buckets = server_latency.parse(exposition([0.0003, 0.002, 0.02], [0.3]), "conn")
    assert buckets[0.0005] == 1
    assert buckets[0.0025] == 2
    assert buckets[0.005] == 2
    assert buckets[0.025] == 3
    assert buckets[math.inf] == 3
    assert list(buckets) == sorted(buckets)


def test_a_phase_is_the_difference_of_two_scrapes() -> None:
    before = server_latency.parse(exposition([0.02] * 10, []), "conn")
    after = server_latency.parse(exposition([0.02] * 10 + [0.0004] * 99 + [0.008], []), "conn")
    phase = server_latency.delta(before, after)
    assert phase[math.inf] == 100
    assert server_latency.share_within(phase, 0.005) == 0.99
    p99 = server_latency.quantile(phase, 0.99)
    assert p99 is not None
    assert p99 <= 0.0005  # the 99th observation is in the first bucket
    p995 = server_latency.quantile(phase, 0.995)
    assert p995 is not None
    assert 0.005 < p995 <= 0.01  # interpolated inside (5 ms, 10 ms]


def test_no_observations_give_no_figures() -> None:
    empty = server_latency.parse(exposition([], [0.1]), "conn")
    assert server_latency.quantile(empty, 0.99) is None
    assert server_latency.share_within(empty, 0.005) is None


def test_a_quantile_past_the_last_bound_is_the_last_bound() -> None:
    buckets = server_latency.parse(exposition([60.0], []), "conn")
    assert server_latency.quantile(buckets, 0.5) == 5.0
