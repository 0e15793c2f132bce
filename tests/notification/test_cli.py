"""``prism dev`` runs a notification service next to its nodes; ``prism notify`` refuses bad settings."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from typing import Any

import nats
import orjson
import pytest

from loadtest.targets.base import free_port
from shared.client import PrismClient
from tests.helpers import alive, descendants, eventually, kill_process_tree, read_until, spawn_prism_dev

pytestmark = pytest.mark.cli


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), response.read()


async def test_prism_dev_delivers_a_notification_published_with_plain_nats() -> None:
    port = free_port()
    proc = await spawn_prism_dev(1, port)
    try:
        assert proc.stdout is not None
        banner = await read_until(proc.stdout, "nats pub")
        words = banner.split()
        nats_url = next(w for w in words if w.startswith("nats://"))
        metrics_url = next(w for w in words if w.endswith("/metrics") and w.startswith("http"))
        children = descendants(proc.pid)
        assert len(children) >= 3  # nats-server, a node, the notification service
        client = await PrismClient.connect(f"ws://127.0.0.1:{port}/ws", user="alice")
        nc = await nats.connect(nats_url)
        # What the banner suggests: a plain publish (`nats pub`), which the stream stores all the same.
        await nc.publish("notify.user.alice", b'{"id":"n1","payload":"hello"}')
        frame = orjson.loads(await client.receive(10))
        assert (frame["type"], frame["id"], frame["payload"]) == ("notification", "n1", "hello")
        await nc.close()

        async def counted() -> bool:  # the client may read the frame before the service has its receipt
            status, body = await asyncio.to_thread(get, metrics_url)
            return status == 200 and b'prism_notify_delivered_total{kind="user"} 1.0' in body

        await eventually(counted, what="the delivery in the service's metrics")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await eventually(lambda: not any(alive(pid) for pid in children), what="every child to exit")
        await client.wait_closed()
    finally:
        await kill_process_tree(proc)


async def test_prism_notify_refuses_a_bad_setting_clearly() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notification_service", "--ack-wait", "1", "--receipt-timeout", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"ack_wait (1.0s) must be at least twice receipt_timeout" in out


async def test_prism_notify_says_when_jetstream_refuses_a_setting(nats_server: Any) -> None:
    env = {**os.environ, "PRISM_NATS_URL": nats_server.url, "PRISM_STREAM_REPLICAS": "3"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "notify", "--metrics-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, out
    assert b"configuration error: JetStream refused stream NOTIFICATIONS" in out
    assert b"Traceback" not in out
