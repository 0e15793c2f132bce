"""The HTTP-vs-NATS backend benchmark (loadtest/http_backends.py) runs end to end on a tiny load: a real
gateway, both echo backends and the clients, every request answered in both modes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from tests.helpers import kill_process_tree


async def test_a_tiny_run_measures_both_modes_twice_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.http_backends",
        "--seconds", "0.5", "--clients", "2", "--inflight", "2", "--rate", "40", "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        printed, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await kill_process_tree(proc)
    assert proc.returncode == 0, printed.decode()[-2000:]
    report = orjson.loads(out.read_text())
    assert [(r["mode"], r["round"]) for r in report["runs"]] == [
        ("nats", 1),
        ("http", 1),
        ("nats", 2),
        ("http", 2),
    ]
    for run in report["runs"]:
        assert run["errors"] == 0
        assert run["requests_per_s"] > 0
        assert run["gateway_cpu_us"] > 0
    assert {"cpu", "python", "aiohttp", "nats-py"} <= set(report["machine"])
    assert "| http | 2 |" in printed.decode()
