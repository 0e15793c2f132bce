"""The project's load generator, run as a user runs it: a small bounded benchmark, end to end."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from loadtest import payload
from loadtest.rawnats import RawPublisher
from loadtest.stats import Timeline, summarize
from loadtest.targets.prism import NatsPublisher, gateway_command
from shared.nats_connection import flush_all

CHECKOUT = str(Path(__file__).resolve().parents[2])  # a Prism checkout for --before: this one will do


def test_payload_carries_its_publish_time_at_a_fixed_offset() -> None:
    message = payload.make(42, size=100, now_ns=1_700_000_000_123_456_789)
    assert len(message) == 100
    assert json.loads(message)["t"] == 1_700_000_000_123_456_789
    assert payload.sent_at(message) == 1_700_000_000_123_456_789
    assert payload.sequence(message) == 42
    assert payload.sent_at(b"not a benchmark message") is None


async def test_prepared_conn_publishes_are_the_same_messages_as_plain_ones(
    nats_server: Any, nc: NatsClient
) -> None:
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await got.put(msg)

    await nc.subscribe("conn.>", cb=on_msg)
    await flush_all(nc)
    raw = await RawPublisher.connect(nats_server.url)
    publisher = NatsPublisher(raw)
    message = payload.make(7, size=100)
    send = publisher.conn_sender(["n1.a", "n1.b"], len(message))
    await send(1, message)
    await publisher.conn("n1.b", message)
    await publisher.flush()
    first, second = [await asyncio.wait_for(got.get(), 5) for _ in range(2)]
    assert (first.subject, first.data) == (second.subject, second.data) == ("conn.n1.b", message)
    await raw.close()


def test_latency_summary_and_timeline() -> None:
    latency = summarize([i * 1_000_000 for i in range(1, 101)])
    assert latency is not None
    assert (latency.samples, latency.max) == (100, 100.0)
    assert 50 <= latency.p50 <= 51
    assert summarize([]) is None
    timeline = Timeline(start_ns=0, width_s=0.1)
    timeline.add(50_000_000, 3)
    timeline.add(250_000_000, 1)
    assert timeline.rates() == [30.0, 0.0, 10.0]
    assert timeline.rates(until_ns=250_000_000) == [30.0, 0.0, 20.0]  # the last 50 ms held one
    short = Timeline(start_ns=0, width_s=0.1)
    short.add(20_000_000, 4)
    assert short.rates(until_ns=20_000_000) == [200.0]


async def test_quick_benchmark_of_prism_and_the_ceiling_writes_every_report(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "loadtest", "--quick", "--scenarios", "conn,room,request,connect",
        "--targets", "prism,ceiling", "--out", str(out), "--max-seconds", "100",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, output.decode()[-3000:]
    assert {p.name for p in out.iterdir()} >= {"results.json", "summary.md", "latency.png", "throughput.png"}
    data = json.loads((out / "results.json").read_text())
    figures = {(r["scenario"], r["target"]): r["figures"] for r in data["results"]}
    for scenario in ("conn", "room", "request"):
        for target in ("prism", "websockets-ceiling"):
            assert figures[scenario, target]["deliveries_per_s"] > 0
            assert figures[scenario, target]["drops"] == 0, (scenario, target)
    assert figures["conn", "nats-py-alone"]["deliveries_per_s"] > 0
    assert figures["connect", "prism"]["connects_per_s"] > 0
    assert "| conn | prism |" in (out / "summary.md").read_text()


async def test_an_earlier_checkout_runs_beside_this_one_as_prism_before(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "loadtest", "--quick", "--scenarios", "connect",
        "--targets", "prism,prism-before", "--before", CHECKOUT, "--out", str(out), "--max-seconds", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, output.decode()[-3000:]
    data = json.loads((out / "results.json").read_text())
    figures = {(r["scenario"], r["target"]): r["figures"] for r in data["results"]}
    assert figures["connect", "prism"]["connects_per_s"] > 0
    assert figures["connect", "prism-before"]["connects_per_s"] > 0


def test_a_checkout_from_before_the_cli_moved_gets_its_gateway_subcommand(tmp_path: Path) -> None:
    """Before shared/cli/, ``python -m gateway`` was the whole prism command: the node is its subcommand."""
    assert gateway_command(None) == ["gateway"]
    assert gateway_command(Path(CHECKOUT)) == ["gateway"]
    (tmp_path / "gateway").mkdir()
    assert gateway_command(tmp_path) == ["gateway", "gateway"]


async def test_the_recovery_benchmark_runs_small_and_every_client_recovers(tmp_path: Path) -> None:
    out = tmp_path / "recovery.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.recovery", "--members", "50", "--room-messages", "40",
        "--users", "50", "--user-messages", "1000", "--paced-seconds", "1", "--acked", "200",
        "--recover-clients", "50", "--missed", "20", "--storage", "memory", "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 110)
    assert proc.returncode == 0, output.decode()[-3000:]
    data = json.loads(out.read_text())
    for scope in ("room", "user"):
        for side in ("plain", "stored"):
            assert data[scope][side]["peak_deliveries_per_s"] > 0
            assert data[scope][side]["drops"] == 0, (scope, side)
    assert data["acked"]["acked_publishes_per_s"] > 0
    assert data["rejoin"]["stored"]["every_client_got_exactly_what_it_missed"] is True
    assert data["rejoin"]["plain"]["received_of_missed"] == 0  # at most once: gone
