"""``prism dev`` runs a notification service next to its nodes; ``prism notify`` refuses bad settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import urllib.request
from typing import Any

import nats
import orjson
import pytest

from loadtest.targets.base import free_port
from notification_service.config import NotifyConfig
from shared.client import PrismClient
from tests.helpers import alive, descendants, eventually, kill_process_tree, read_until, spawn_prism_dev

pytestmark = pytest.mark.cli

DEFAULT_METRICS_PORT = NotifyConfig().metrics_port


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
        sys.executable, "-m", "shared.cli", "notify", "--metrics-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, out
    assert b"configuration error: JetStream refused stream NOTIFICATIONS" in out
    assert b"Traceback" not in out


async def start_notify(env: dict[str, str]) -> asyncio.subprocess.Process:
    """``prism notify`` with ``env``, its output (stdout and stderr) piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "notify",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip


async def test_two_prism_notify_on_one_host_both_run_and_stop_without_warnings(nats_server: Any) -> None:
    """Left unset, the metrics port gives way to a free one when 8090 is taken (here by this test when it
    can, else by whoever holds it), so the README's "run as many as you like" holds on one host too."""
    env = {**os.environ, "PRISM_NATS_URL": nats_server.url, "PRISM_METRICS_HOST": "127.0.0.1"}
    env.pop("PRISM_METRICS_PORT", None)
    env["PRISM_CONCURRENSY"] = "8"  # a misspelling, named with the nearest setting
    with contextlib.ExitStack() as holding:
        with contextlib.suppress(OSError):
            holding.enter_context(socket.create_server(("127.0.0.1", DEFAULT_METRICS_PORT)))
        procs = [await start_notify(env) for _ in range(2)]
        try:
            outputs = []
            for proc in procs:
                assert proc.stdout is not None
                outputs.append(await read_until(proc.stdout, "prism notify ready"))
            urls = [out.split()[-1] for out in outputs]
            assert len(set(urls)) == 2, urls
            for out, url in zip(outputs, urls, strict=True):
                port = int(url.rsplit(":", 1)[1].split("/")[0])
                assert port != DEFAULT_METRICS_PORT
                assert (
                    f"WARNING prism.notify: metrics port {DEFAULT_METRICS_PORT} is in use (another prism "
                    f"notify?); serving /metrics, /healthz and /readyz on port {port} instead "
                    "(set PRISM_METRICS_PORT to choose one)\n"
                ) in out
                assert (
                    "WARNING prism.config: PRISM_CONCURRENSY is not a Prism setting and is ignored; "
                    "did you mean PRISM_CONCURRENCY?\n"
                ) in out
                assert await asyncio.to_thread(get, url.replace("/metrics", "/readyz")) == (200, b"ready\n")
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                assert proc.stdout is not None
                stopping = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
                assert await asyncio.wait_for(proc.wait(), 30) == 0
                assert "notification service stopped" in stopping
                assert "WARNING" not in stopping  # a drain is no "NATS disconnected"
        finally:
            for proc in procs:
                await kill_process_tree(proc)


async def test_prism_notify_on_a_metrics_port_it_was_given_and_is_taken_says_so(nats_server: Any) -> None:
    """A port the operator chose is the one Prometheus scrapes: taken, it is an error, not a fallback."""
    env = {**os.environ, "PRISM_NATS_URL": nats_server.url}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "notify",
            "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await kill_process_tree(proc)
    assert proc.returncode == 2
    assert out.decode() == (
        f"prism: configuration error: cannot listen on 127.0.0.1:{port}: the port is in use by another "
        "process (choose another with --metrics-port or PRISM_METRICS_PORT)\n"
    )
