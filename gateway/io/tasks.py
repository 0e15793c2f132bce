"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("prism.tasks")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], attempts: int = 50) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again if one swallowed it: on Python 3.11,
    ``asyncio.wait_for`` (used inside nats-py) can lose a cancellation that lands as its wait ends."""
    pending = [t for t in tasks if not t.done()]
    for _ in range(attempts):
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [t for t in pending if not t.done()]
    log.warning("%d background tasks would not stop", len(pending))
