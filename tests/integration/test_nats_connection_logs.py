"""What a gateway or a notification service logs about its NATS connection: one line per failed attempt
while NATS is unreachable, a warning when the connection is lost, and no warning when it is closed on
purpose; and that a flush covers every command sent before it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from gateway.embedded_nats import NatsServer
from gateway.io.bus import NatsBus
from loadtest.targets.base import free_port
from shared.nats_connection import CONNECT_BACKOFF, NatsOptions, NatsUnreachable, flush_all
from tests.helpers import eventually


def bus_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prism.bus" and r.levelno >= logging.WARNING]


async def test_a_drain_or_a_close_is_no_warning_and_a_lost_server_is_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = NatsServer.start(tmp_path / "nats", log_file=tmp_path / "nats.log")
    try:
        options = NatsOptions(servers=[server.url], name="test")
        drained = await NatsBus.connect(options)
        await drained.drain()
        closed = await NatsBus.connect(options)
        await closed.close()
        assert bus_warnings(caplog) == []
        lost = await NatsBus.connect(options)
        server.kill()
        await eventually(lambda: "NATS disconnected" in bus_warnings(caplog), what="the lost connection")
        await lost.close()
    finally:
        server.stop()


async def test_an_unreachable_nats_is_one_line_per_attempt_until_the_connect_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(NatsUnreachable, match=rf"^NATS at {url} unreachable \(Connection refused\)$"):
        await NatsBus.connect(NatsOptions(servers=[url], name="test"), give_up_after=2.0)
    warnings = bus_warnings(caplog)
    assert warnings, "no line said NATS was unreachable"
    # nats-py's own error callback adds nothing while the first connect is tried: one line per attempt,
    # each delay drawn from the backoff's window (full jitter: up to 0.5 s, then 1 s, ...).
    refused = rf"cannot reach NATS at {re.escape(url)} \(Connection refused\)"
    line = re.compile(refused + r"; retrying in (\d+\.\d)s")
    delays = []
    for warning in warnings:
        match = line.fullmatch(warning)
        assert match is not None, warning
        delays.append(float(match[1]))
    assert all(d <= CONNECT_BACKOFF.ceiling(n) + 0.05 for n, d in enumerate(delays)), delays


async def test_flush_all_returns_only_once_the_server_has_the_subscription(nats_server: NatsServer) -> None:
    """A message another connection publishes right after ``flush_all`` reaches a subscription made just
    before it, every time (with nats-py's ``flush()`` alone, 39 of 500 such messages were lost here)."""
    subscriber, publisher = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    try:
        received: list[bytes] = []

        async def on_msg(msg: Msg) -> None:
            received.append(msg.data)

        for n in range(200):
            sub = await subscriber.subscribe(f"flush-all.{n}", cb=on_msg)
            await flush_all(subscriber)
            await publisher.publish(f"flush-all.{n}", str(n).encode())
            await publisher.flush()
            await eventually(lambda n=n: len(received) == n + 1, timeout=2, what=f"message {n}")
            await sub.unsubscribe()
    finally:
        await subscriber.close()
        await publisher.close()
