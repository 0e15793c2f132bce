"""Write a benchmark run as JSON, a Markdown summary (with ratios and the targets), and PNG plots."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loadtest.noise import describe as describe_noise
from loadtest.scenarios import Result

# The figures the project promises (issues #3 and #17), checked on every run that measured them.
TARGETS: list[tuple[str, str]] = [
    ("room fan-out to 1,000: Prism / Socket.IO+Redis", ">= 2x"),
    ("room fan-out to 1,000: Prism / websockets broadcast()", ">= 4x"),
    ("1:1 conn delivery to 1,000 connections", ">= 50,000 msg/s"),
    ("1:1 conn delivery: Prism / nats-py alone", ">= 0.5x"),
    ("1:1 conn p99 at half of peak", "< 5 ms"),
    ("idle memory per connection", "<= 16 KB"),
    ("connect rate, presence included", ">= 1,500/s"),
    ("1:1 conn delivery at p99 < 5 ms, no drops (capacity search)", ">= 50,000 msg/s"),
]


def _find(results: Iterable[Result], scenario: str, target: str) -> Result | None:
    return next((r for r in results if r.scenario == scenario and r.target == target), None)


def _ratio(a: Result | None, b: Result | None, key: str = "deliveries_per_s") -> float | None:
    if a is None or b is None or not b.figures.get(key):
        return None
    return a.figures.get(key, 0) / b.figures[key]


def target_checks(results: list[Result]) -> list[tuple[str, str, str, str]]:
    """(target, required, measured, verdict) for each promise this run has the figures for."""
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, need: str, value: float | None, ok: bool | None, shown: str) -> None:
        if value is not None and ok is not None:
            rows.append((name, need, shown, "met" if ok else "missed"))

    room_prism = _find(results, "room", "prism")
    ratio = _ratio(room_prism, _find(results, "room", "socketio"))
    add(TARGETS[0][0], TARGETS[0][1], ratio, ratio is not None and ratio >= 2, f"{ratio or 0:.1f}x")
    ratio = _ratio(room_prism, _find(results, "room", "websockets-ceiling"))
    add(TARGETS[1][0], TARGETS[1][1], ratio, ratio is not None and ratio >= 4, f"{ratio or 0:.1f}x")
    conn = _find(results, "conn", "prism")
    rate = conn.figures.get("deliveries_per_s") if conn else None
    add(TARGETS[2][0], TARGETS[2][1], rate, rate is not None and rate >= 50_000, f"{rate or 0:,.0f} msg/s")
    ratio = _ratio(conn, _find(results, "conn", "nats-py-alone"))
    add(TARGETS[3][0], TARGETS[3][1], ratio, ratio is not None and ratio >= 0.5, f"{ratio or 0:.2f}x")
    p99 = conn.figures.get("p99_ms_at_half_peak") if conn else None
    add(TARGETS[4][0], TARGETS[4][1], p99, p99 is not None and 0 <= p99 < 5, f"{p99 or 0:.2f} ms")
    idle = _find(results, "idle", "prism")
    kb = idle.figures.get("rss_per_conn_kb") if idle else None
    add(TARGETS[5][0], TARGETS[5][1], kb, kb is not None and kb <= 16, f"{kb or 0:.1f} KB")
    connect = _find(results, "connect", "prism")
    cps = connect.figures.get("connects_per_s") if connect else None
    add(TARGETS[6][0], TARGETS[6][1], cps, cps is not None and cps >= 1500, f"{cps or 0:,.0f}/s")
    within = conn.figures.get("capacity_per_s") if conn else None
    if conn is not None and conn.figures.get("capacity_bound_ms", 0) <= 5:  # a looser bound proves nothing
        ok = within is not None and within >= 50_000
        add(TARGETS[7][0], TARGETS[7][1], within, ok, f"{within or 0:,.0f} msg/s")
    return rows


def capacity_rows(results: list[Result]) -> list[list[str]]:
    """One row per result that ran the capacity search, with its ratios to the ceiling and to nats-py
    alone in the same scenario."""
    rows: list[list[str]] = []
    for r in results:
        f = r.figures
        if "capacity_per_s" not in f:
            continue
        ratios = []
        for other in ("websockets-ceiling", "nats-py-alone"):
            base = _find(results, r.scenario, other)
            ratio = _ratio(r, base, "capacity_per_s") if base is not None and r is not base else None
            ratios.append(f"{ratio:.2f}x" if ratio is not None else "")
        rows.append(
            [
                r.scenario,
                r.target,
                _num(f["capacity_per_s"]),
                _num(f.get("capacity_p99_ms")),
                _num(f.get("capacity_fail_per_s")),
                _num(f.get("capacity_fail_p99_ms")),
                _num(f.get("capacity_steps")),
                _num(f.get("capacity_server_busy")),
                _num(f.get("capacity_client_busy")),
                _num(f.get("capacity_steal")),
                *ratios,
            ]
        )
    return rows


def _latency_cells(result: Result) -> list[str]:
    phase = result.phase("paced")
    if phase is None or phase.latency is None:
        return ["", "", "", ""]
    lat = phase.latency
    return [f"{lat.p50:.2f}", f"{lat.p99:.2f}", f"{lat.p999:.2f}", f"{lat.max:.1f}"]


def _num(value: object) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return ""


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        "# Benchmark run",
        "",
        f"- command: `{meta.get('command', '')}`",
        f"- machine: {meta.get('machine', '')}",
        f"- versions: {meta.get('versions', '')}",
        f"- pinning: {meta.get('pinning', '')}",
        *([f"- machine noise before the run: {describe_noise(meta['noise'])}"] if "noise" in meta else []),
        "",
        "| scenario | target | deliveries/s (peak) | server CPU s | deliveries / CPU s | p50 ms | p99 ms "
        "| p99.9 ms | max ms | other | drops | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    main = (
        "deliveries_per_s",
        "server_cpu_s",
        "deliveries_per_cpu_s",
        "p99_ms_at_half_peak",
        "drops",
        "p99_ms",
    )
    for r in results:
        f = r.figures
        other = ", ".join(f"{k}={v}" for k, v in f.items() if k not in main and not k.startswith("capacity_"))
        cells = [
            r.scenario,
            r.target,
            _num(f.get("deliveries_per_s")),
            _num(f.get("server_cpu_s")),
            _num(f.get("deliveries_per_cpu_s")),
            *_latency_cells(r),
            other,
            _num(f.get("drops", 0)),
            str(r.errors),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Latency columns are from the paced phase (half of the peak rate), publish to client receipt.",
        "",
    ]
    capacity = capacity_rows(results)
    if capacity:
        bound = next(r.figures["capacity_bound_ms"] for r in results if "capacity_bound_ms" in r.figures)
        lines += [
            f"## Capacity at p99 < {bound:g} ms",
            "",
            f"The highest paced rate (deliveries/s) whose p99 publish-to-receipt latency stayed under "
            f"{bound:g} ms with no drops; the first failing rate above it, and how busy the server's core "
            "and the generator's core (generator + broker) were at that step (CPU s per s), and the "
            "share of the machine's CPU time the hypervisor took meanwhile (steal).",
            "",
            "| scenario | target | deliveries/s | p99 ms there | first fail /s | its p99 ms | steps "
            "| server core busy | generator core busy | steal | / ceiling | / nats-py alone |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in capacity]
        lines.append("")
    checks = target_checks(results)
    if checks:
        lines += ["## Targets", "", "| target | required | measured | |", "|---|---|---|---|"]
        lines += [f"| {name} | {need} | {got} | {verdict} |" for name, need, got, verdict in checks]
        lines.append("")
    return "\n".join(lines)


def _short(target: str) -> str:
    return {"websockets-ceiling": "ceiling", "nats-py-alone": "nats-py"}.get(target, target)


def plots(results: list[Result], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    measured = [r for r in results if r.phase("paced") and r.phase("paced").latency]  # type: ignore[union-attr]
    if measured:
        fig, ax = plt.subplots(figsize=(max(10, len(measured) * 0.6), 5))
        labels = [f"{r.scenario} / {_short(r.target)}" for r in measured]
        width = 0.2
        for i, (name, attr) in enumerate((("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"))):
            values = [getattr(r.phase("paced").latency, attr) for r in measured]  # type: ignore[union-attr]
            ax.bar([x + i * width for x in range(len(measured))], values, width, label=name)
        ax.set_xticks(
            [x + 1.5 * width for x in range(len(measured))], labels, fontsize=8, rotation=40, ha="right"
        )
        ax.set_ylabel("ms, publish to client receipt")
        ax.set_yscale("log")
        ax.set_title("Latency at half of peak rate")
        ax.legend()
        fig.tight_layout()
        path = out / "latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    timed = [r for r in results if r.phase("peak") and r.phase("peak").timeline]  # type: ignore[union-attr]
    scenarios = list(dict.fromkeys(r.scenario for r in timed))
    if scenarios:
        columns = min(2, len(scenarios))
        rows = (len(scenarios) + columns - 1) // columns
        fig, axes = plt.subplots(rows, columns, figsize=(11, 3.2 * rows), squeeze=False)
        for ax, scenario in zip(axes.flat, scenarios, strict=False):
            for r in (r for r in timed if r.scenario == scenario):
                rates = r.phase("peak").timeline  # type: ignore[union-attr]
                ax.plot([i * 0.1 for i in range(len(rates))], rates, label=_short(r.target))
            ax.set_title(f"{scenario}: deliveries/s in the peak phase", fontsize=9)
            ax.set_yscale("log")
            ax.set_xlabel("seconds", fontsize=8)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(scenarios) :]:
            ax.set_visible(False)
        fig.tight_layout()
        path = out / "throughput.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write(results: list[Result], meta: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "results": [r.as_dict() for r in results], "targets": target_checks(results)}
    (out / "results.json").write_text(json.dumps(data, indent=2))
    (out / "summary.md").write_text(markdown(results, meta))
    return [out / "results.json", out / "summary.md", *plots(results, out)]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def load(path: Path) -> list[Result]:
    """The results of a run from its ``results.json`` (to redraw plots without running it again)."""
    from loadtest.scenarios import Phase
    from loadtest.stats import Latency

    results: list[Result] = []
    for item in json.loads(path.read_text())["results"]:
        result = Result(
            item["scenario"], item["target"], item["params"], figures=item["figures"], errors=item["errors"]
        )
        for p in item["phases"]:
            latency = Latency(**p["latency"]) if p["latency"] else None
            fields = {k: v for k, v in p.items() if k not in ("latency", "drops")}
            result.phases.append(Phase(**{**fields, "latency": latency}))
        results.append(result)
    return results


if __name__ == "__main__":
    import sys

    source = Path(sys.argv[1])
    print(", ".join(str(p) for p in plots(load(source), source.parent)))
