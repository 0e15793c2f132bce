"""Fixtures for the notification service: in-process instances on the test's NATS, a publisher."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from notification_service.config import NotifyConfig
from notification_service.publisher import Notifier
from notification_service.service import NotifyService
from tests.helpers import alive, kill_process_tree

ServiceFactory = Callable[..., Awaitable[NotifyService]]
ProcessFactory = Callable[..., Awaitable[asyncio.subprocess.Process]]

# Short timeouts, so that failures and redeliveries happen within a test's time.
FAST = {
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
    "stream_storage": "memory",
    "receipt_timeout": 0.5,
    "ack_wait": 3.0,
    "retry_delay": 0.1,
    "retry_max_delay": 0.4,
    "drain_timeout": 5.0,
}


class FakeClock:
    """A wall clock that a test can move forward (ttl expiry without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def make_service(nats_server: Any) -> AsyncIterator[ServiceFactory]:
    """Start notification service instances in this test's loop; all are stopped at teardown."""
    services: list[NotifyService] = []

    async def start(clock: Callable[[], float] = time.time, **overrides: Any) -> NotifyService:
        settings: dict[str, Any] = {"nats_url": nats_server.url, **FAST, **overrides}
        config = NotifyConfig(**settings)
        config.validate()
        service = NotifyService(config, clock=clock, backlog_interval=0.1)
        services.append(service)
        await service.start()
        return service

    yield start
    for service in reversed(services):
        await service.stop()


@pytest.fixture
def notifier(nc: NatsClient) -> Notifier:
    return Notifier(nc.jetstream())


@pytest.fixture
async def notify_process(nats_server: Any, tmp_path: Path) -> AsyncIterator[ProcessFactory]:
    """Start ``python -m notification_service`` processes (ready when they say so); every one still
    running at teardown is killed by its PID."""
    started: list[asyncio.subprocess.Process] = []

    async def start(**settings: Any) -> asyncio.subprocess.Process:
        env = {**os.environ, "PRISM_NATS_URL": nats_server.url}
        env.update({f"PRISM_{k.upper()}": str(v) for k, v in {**FAST, **settings}.items()})
        log = (tmp_path / f"notify-{len(started)}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "notification_service",
            stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
        )  # fmt: skip
        log.close()
        started.append(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert "prism notify ready" in line, (tmp_path / f"notify-{len(started) - 1}.log").read_text()
        return proc

    yield start
    for proc in started:
        if alive(proc.pid):
            await kill_process_tree(proc)
