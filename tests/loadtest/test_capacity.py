"""The capacity search: the highest paced rate whose p99 stays under a bound (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from loadtest.capacity import CapacityOptions, Trial, search

Step = Callable[[float], Awaitable[Trial]]


def _node(capacity: float, drops_above: float = float("inf")) -> tuple[list[float], Step]:
    """A pretend node whose p99 crosses 5 ms at ``capacity`` and that drops messages above
    ``drops_above``; records the rates it was asked for."""
    asked: list[float] = []

    async def step(rate: float) -> Trial:
        asked.append(rate)
        return Trial(rate, 4.0 if rate <= capacity else 9.0, 1 if rate > drops_above else 0)

    return asked, step


async def test_steps_up_doubling_then_bisects_to_the_resolution() -> None:
    asked, step = _node(37_000)
    found = await search(step, 320_000, CapacityOptions(max_steps=20, retries=0))
    assert asked[:5] == [10_000, 20_000, 40_000, 30_000, 35_000]  # 1/32 of the peak, doubling, bisect
    figures = found.figures()
    assert 37_000 / 1.1 <= figures["capacity_per_s"] <= 37_000
    assert figures["capacity_fail_per_s"] <= figures["capacity_per_s"] * 1.1
    assert figures["capacity_steps"] == len(asked) < 20


async def test_a_step_with_drops_fails_however_low_its_p99() -> None:
    _, step = _node(100_000, drops_above=15_000)
    found = await search(step, 320_000, CapacityOptions(max_steps=20, retries=0))
    assert 15_000 / 1.1 <= found.figures()["capacity_per_s"] <= 15_000


async def test_a_failing_first_step_steps_down_and_the_search_is_bounded_in_steps() -> None:
    asked, step = _node(1_000)
    found = await search(step, 320_000, CapacityOptions(max_steps=4, retries=0))
    assert asked == [10_000, 5_000, 2_500, 1_250]
    assert found.figures()["capacity_per_s"] == 0  # none passed within the 4 steps
    asked, step = _node(10**9)
    found = await search(step, 320_000, CapacityOptions(max_steps=20, retries=0))
    assert asked[-1] == 320_000  # passing at the measured peak ends the search
    assert found.figures()["capacity_per_s"] == 320_000

    asked, step = _node(0)
    await search(step, 50_000, CapacityOptions(max_steps=10, step_seconds=2, retries=0), fanout=1000)
    assert min(asked) == 5_000  # a room of 1,000 steps no lower than 10 publishes per step
    asked, step = _node(0)
    await search(step, 50_000, CapacityOptions(max_steps=10, step_seconds=2, retries=0), sample_every=8)
    assert min(asked) == 1_200  # nor lower than 300 timed deliveries per step


async def test_a_failed_step_is_run_again_before_its_rate_counts_as_failed() -> None:
    # A one-off breach at 20,000/s, a real one at 40,000/s.
    flaky: dict[float, list[float]] = {20_000: [9.0, 4.0], 40_000: [9.0, 9.0]}

    async def step(rate: float) -> Trial:
        outcomes = flaky.get(rate)
        return Trial(rate, outcomes.pop(0) if outcomes else (4.0 if rate < 40_000 else 9.0), 0)

    found = await search(step, 320_000, CapacityOptions(max_steps=20, retries=1))
    assert [t.rate for t in found.trials][:5] == [10_000, 20_000, 20_000, 40_000, 40_000]
    assert 40_000 / 1.1 <= found.figures()["capacity_per_s"] < 40_000


async def test_quick_capacity_search_against_prism_writes_the_figure_and_the_report(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    # A loose bound: this checks the search runs end to end, not what a shared test machine can do.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "loadtest", "--quick", "--capacity", "--capacity-p99-ms", "200",
        "--scenarios", "conn,room", "--targets", "prism", "--out", str(out), "--max-seconds", "100",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = output.decode()
    assert proc.returncode == 0, text[-3000:]
    assert "capacity/s" in text
    data = json.loads((out / "results.json").read_text())
    results = {(r["scenario"], r["target"]): r for r in data["results"]}
    for key in (("conn", "prism"), ("room", "prism"), ("conn", "nats-py-alone")):
        figures = results[key]["figures"]
        assert figures["capacity_bound_ms"] == 200
        assert figures["capacity_per_s"] > 0, (key, figures)
        assert 0 < figures["capacity_p99_ms"] < 200
        steps = [p for p in results[key]["phases"] if p["name"] == "capacity"]
        assert len(steps) == figures["capacity_steps"] <= 4
        assert all(p["offered_rate"] > 0 and p["latency"]["samples"] > 0 for p in steps)
        assert 0 <= figures["capacity_steal"] < 1
    assert {c["core"] for c in data["meta"]["noise"]["cores"]} >= {0}
    summary = (out / "summary.md").read_text()
    assert "machine noise before the run: a 1 ms sleep" in summary
    assert "## Capacity at p99 < 200 ms" in summary
    assert "| conn | prism |" in summary.split("## Capacity")[1]
    assert "| conn | nats-py-alone |" in summary.split("## Capacity")[1]


async def test_a_bad_capacity_setting_is_one_line_and_a_non_zero_exit_before_anything_runs() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "loadtest", "--capacity", "--capacity-steps", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert err.decode().strip().splitlines() == [
        "--capacity-p99-ms and --capacity-step-seconds must be > 0, --capacity-steps >= 1"
    ]
    assert b"machine noise" not in out
