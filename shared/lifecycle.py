"""Running one Prism process (a gateway node, a notification service) until it is told to stop.

The first SIGTERM/SIGINT drains and stops the service; a second one exits at once. A signal that
arrives while the service is still starting (NATS may not be up yet) cancels the start instead of
waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from shared import gc_policy

log = logging.getLogger("prism.lifecycle")


class State(Enum):
    """Where a Prism process is in its life: start() -> ready -> drain() -> stop()."""

    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


def not_ready_reason(state: State, nats_connected: bool) -> str | None:
    """Why a process should not take work now (the body of its ``/readyz`` 503), or ``None`` when it is
    started and its NATS connection is up."""
    if state is not State.READY:
        return str(state.value)
    if not nats_connected:
        return "NATS disconnected"
    return None


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_until_signalled(service: Service, on_ready: Callable[[], None]) -> int:
    """Start ``service``, call ``on_ready`` once it is, and stop it on the first signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting now")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        starting = asyncio.ensure_future(service.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a start that failed raises here
            gc_policy.settle()
            on_ready()
            await stopping
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    finally:
        with contextlib.suppress(Exception):
            await service.stop()
    return 0
