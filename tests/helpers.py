"""Test helpers: waiting for conditions with deadlines (never sleeping to synchronise), free ports."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from loadtest.targets.base import free_port

DEFAULT_TIMEOUT = 10.0


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "condition",
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    last: object = None
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r:.300})")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def free_port_pair() -> int:
    """A port p such that p and p+1 were both free a moment ago (for ``prism dev --nodes 2``)."""
    for _ in range(50):
        first = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", first + 1))
            except OSError:
                continue
        return first
    raise RuntimeError("no two consecutive free ports found")


async def nobody_listens(nc: NatsClient, subject: str) -> bool:
    """True once a request on ``subject`` gets "no responders". A timeout means a request raced an
    unsubscribe (core NATS drops it): the caller should ask again."""
    try:
        await nc.request(subject, b"probe", timeout=1)
    except nats.errors.NoRespondersError:
        return True
    except nats.errors.TimeoutError:
        return False
    return False
