"""Replays an offline user's inbox when they connect: the gateways' ``client.connect`` events, taken in the
queue group ``prism-notify`` so that one instance handles each.

Replays of one user run one after the other within an instance (a second connection finds what the first
left), different users' concurrently, at most ``concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.msg import Msg

from notification_service import core
from notification_service.inbox import Inbox
from shared.subjects import Subjects

log = logging.getLogger("prism.notify.lifecycle")

QUEUE = "prism-notify"


class ConnectListener:
    def __init__(self, nc: Any, subjects: Subjects, inbox: Inbox, concurrency: int) -> None:
        self.nc = nc
        self.subjects = subjects
        self.inbox = inbox
        self._slots = asyncio.Semaphore(concurrency)
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.subjects.client_connect, queue=QUEUE, cb=self._on_connect)

    async def stop(self, timeout: float) -> None:
        """Take no more events, and give the replays under way ``timeout`` seconds to finish."""
        if self._sub is not None and not self.nc.is_closed:
            await self._sub.unsubscribe()
        self._sub = None
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:  # what they did not deliver stays in the inbox
                task.cancel()

    async def _on_connect(self, msg: Msg) -> None:
        event = core.parse_connect_event(msg.data)
        if event is None:
            return
        conn, user = event
        task = asyncio.ensure_future(self._replay(self._tails.get(user), conn, user))
        self._tails[user] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(user, done))

    def _done(self, user: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(user) is task:
            del self._tails[user]

    async def _replay(self, before: asyncio.Task[None] | None, conn: str, user: str) -> None:
        if before is not None:
            await asyncio.wait([before])
        async with self._slots:
            try:
                count = await self.inbox.replay(conn, user)
            except Exception as exc:  # NATS trouble: the inbox keeps them for the next connection
                log.warning("replaying %s's inbox to %s failed: %s", user, conn, exc)
                return
        if count:
            log.debug("replayed %d notification(s) to %s (%s)", count, conn, user)
