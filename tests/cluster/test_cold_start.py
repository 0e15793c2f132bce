"""A whole cluster starting in the same instant: three nats-servers whose JetStream has no meta leader
yet, three gateway nodes with 3-replica presence buckets and the notification service. Every process
waits (saying what for, unready meanwhile), none exits or prints a traceback, all go ready, and a room
message reaches a client on every node."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nats
import pytest

from gateway.embedded_nats import NatsCluster, NatsServer
from loadtest.targets.base import free_port
from shared.backend import PrismBackend
from shared.client import PrismClient
from tests.cluster.conftest import GatewayFactory, GatewayProcess
from tests.helpers import eventually, kill_process_tree

pytestmark = pytest.mark.cluster

# Measured here: all ready 6-8 s after the servers started (JetStream's meta leader takes about 5 s).
READY_BOUND = 45.0


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""


async def test_a_whole_cluster_started_at_once_comes_up_without_a_traceback(
    tmp_path: Path, gateway_process: GatewayFactory
) -> None:
    began = time.monotonic()
    cluster = NatsCluster.start(tmp_path, 3, "cold", log_dir=tmp_path)
    notify_port = free_port()
    notify_log = (tmp_path / "notify.log").open("ab")
    notify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "notify",
        "--metrics-host", "127.0.0.1", "--metrics-port", str(notify_port),
        stdout=notify_log, stderr=notify_log,
        env={**os.environ, "PRISM_NATS_URL": cluster.urls, "PRISM_STREAM_REPLICAS": "3"},
    )  # fmt: skip
    notify_log.close()
    settings = {"presence_replicas": 3, "presence_storage": "file"}
    try:
        started = asyncio.gather(
            *(gateway_process(cluster.urls, f"g{i}", timeout=READY_BOUND, **settings) for i in (1, 2, 3))
        )
        gateways: list[GatewayProcess] = await started
        ready = time.monotonic() - began
        await eventually(lambda: readyz(notify_port)[0] == 200, timeout=READY_BOUND, what="notify ready")
        for gateway in gateways:
            assert readyz(gateway.port) == (200, "ready\n")
        all_ready = time.monotonic() - began
        clients = [await PrismClient.connect(g.url, user=f"u{i}") for i, g in enumerate(gateways)]
        for client in clients:
            await client.join("lobby")
        nc = await nats.connect(servers=cluster.urls.split(","))
        receipts = await PrismBackend(nc).deliver("room.lobby", "everyone up", timeout=5, window=0.5)
        assert sorted(r["node"] for r in receipts) == ["g1", "g2", "g3"]
        for client in clients:
            assert await client.receive(5) == "everyone up"
        delivered = time.monotonic() - began
        print(
            f"gateways ready {ready:.1f}s, all {all_ready:.1f}s, room delivery {delivered:.1f}s after start"
        )
        for client in clients:
            await client.close()
        await nc.close()
        for gateway in gateways:
            assert await gateway.terminate() == 0
        logs = [g.log.read_text() for g in gateways] + [(tmp_path / "notify.log").read_text()]
        assert not [log for log in logs if "Traceback" in log]
        assert notify.returncode is None  # it never exited while waiting
    finally:
        await kill_process_tree(notify)
        cluster.stop()


async def test_a_node_started_before_nats_waits_unready_and_says_for_what(tmp_path: Path) -> None:
    """The listener is up at once; /readyz names what the start waits for until NATS is there."""
    port = free_port()
    nats_port = free_port()
    env = {
        **os.environ,
        "PRISM_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "PRISM_PRESENCE_STORAGE": "memory",
    }
    gateway = GatewayProcess("early", port, env, tmp_path / "early.log")
    starting = asyncio.ensure_future(gateway.start(timeout=60))
    try:
        status, body = await eventually(lambda: readyz(port)[0] and readyz(port), what="the listener")
        assert status == 503
        assert body == f"not ready: starting: waiting for NATS at nats://127.0.0.1:{nats_port}\n"
        server = NatsServer.start(tmp_path / "nats", client_port=nats_port)
        try:
            await starting
            assert readyz(port) == (200, "ready\n")
            assert await gateway.terminate() == 0
            assert "Traceback" not in gateway.log.read_text()
        finally:
            server.stop()
    finally:
        if gateway.proc is not None and gateway.proc.returncode is None:
            await kill_process_tree(gateway.proc)


async def test_sigterm_while_waiting_for_nats_stops_at_once(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PRISM_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "PRISM_PRESENCE_STORAGE": "memory",
    }
    gateway = GatewayProcess("patient", port, env, tmp_path / "patient.log")
    starting = asyncio.ensure_future(gateway.start(timeout=60))
    try:
        await eventually(lambda: readyz(port)[0] == 503, what="the node to listen and wait")
        stopped = time.monotonic()
        assert await gateway.terminate(timeout=10) == 0
        assert time.monotonic() - stopped < 5
        assert "Traceback" not in gateway.log.read_text()
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)  # it ended when the process did
        if gateway.proc is not None and gateway.proc.returncode is None:
            await kill_process_tree(gateway.proc)
