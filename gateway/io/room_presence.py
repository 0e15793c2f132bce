"""Room presence events, the I/O shell around :mod:`gateway.core.room_presence`.

For each presence-enabled room (``room_presence`` names or patterns) with at least one local member, one
server-side filtered KV watch on ``room.<room>.>`` feeds the tracker; it is stopped when the last local
member leaves. One timer (``loop.call_at``, armed for the tracker's next due time) announces leaves whose
debounce ran out and flushes batched changes. Frames go out through the node's :class:`Flusher`, framed
once per batch however many local members receive them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from nats.js.kv import KeyValue

from gateway.core.hub import Hub
from gateway.core.room_presence import Diff, Output, PresenceTracker, RoomMatcher, parse_entry
from gateway.io.outbox import Flusher, LocalConn, Outgoing
from gateway.io.tasks import cancel_and_wait
from shared import frames
from shared import presence_keys as keys
from shared.backoff import Backoff

log = logging.getLogger("prism.room_presence")

# A room's watch that fails is restarted after up to 0.25 s, doubling (jittered) to 5 s while it keeps
# failing; any entry it reads starts the delays over.
WATCH_RETRY = Backoff(base=0.25, cap=5.0)


class RoomPresence:
    def __init__(
        self,
        kv_of: Callable[[str], KeyValue],
        flusher: Flusher,
        hub: Hub[LocalConn],
        patterns: Iterable[str],
        debounce: float,
        batch: float,
    ) -> None:
        self.kv_of = kv_of  # the shard bucket that holds a room's keys
        self.flusher = flusher
        self.hub = hub
        self.matcher = RoomMatcher(patterns)
        self.tracker: PresenceTracker[LocalConn] = PresenceTracker(debounce, batch)
        self._loop = asyncio.get_running_loop()
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def enabled(self, room: str) -> bool:
        return self.matcher.matches(room)

    # -- hooks called by the session layer -------------------------------------------------------------
    def joined(self, conn: LocalConn, room: str) -> None:
        """``conn`` joined ``room`` (hub and presence key done): it gets a snapshot, then the diffs."""
        if not self.matcher.matches(room) or conn.closing:
            return
        member = self.hub.conns.get(conn.conn_id)
        if member is None or room not in member.rooms:
            return  # a leave or a close overtook the join while its presence write was in flight
        if self.tracker.add_local(room, conn.conn_id, conn, self._loop.time()):
            self._watches[room] = asyncio.ensure_future(self._watch(room))
        self._arm()

    def left(self, conn: LocalConn, room: str) -> None:
        """``conn`` is no longer in ``room`` (leave or close)."""
        if self.tracker.remove_local(room, conn.conn_id):
            task = self._watches.pop(room, None)
            if task is not None:
                task.cancel()

    def node_swept(self, node: str) -> None:
        """``node``'s keys were removed by a sweep, which a watch does not see: its members left."""
        self.tracker.node_swept(node, self._loop.time())
        self._arm()

    async def stop(self) -> None:
        tasks = list(self._watches.values())
        self._watches.clear()
        self.tracker.rooms.clear()
        await cancel_and_wait(tasks)  # a kv.watch() being set up can swallow one cancel
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the watch of one room -------------------------------------------------------------------------
    async def _watch(self, room: str) -> None:
        me = asyncio.current_task()
        retries = WATCH_RETRY.schedule()
        while True:
            watcher: Any = None
            try:
                watcher = await self.kv_of(room).watch(keys.room_filter(room))
                async for entry in watcher:
                    if self._watches.get(room) is not me:
                        return
                    now = self._loop.time()
                    if entry is None:
                        self.tracker.caught_up(room, now)
                    elif (change := parse_entry(entry.key, entry.operation, entry.value)) is not None:
                        self.tracker.entry(room, change, now)
                    self._arm()
                    retries.reset()
                raise RuntimeError("the watch ended")
            except Exception as exc:
                log.warning("presence watch of room %s failed (restarting it): %s", room, exc)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
            await asyncio.sleep(retries.next_delay() or WATCH_RETRY.cap)
            if self._watches.get(room) is not me:
                return
            self.tracker.reload(room)  # the new watch lists the room again; changes are diffed

    # -- time ------------------------------------------------------------------------------------------
    def _arm(self) -> None:
        due = self.tracker.next_due()
        if due is None:
            return
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer_at = due
        self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # A timer may fire a hair early (the loop's clock resolution): it stands for its own due time.
        now = max(self._loop.time(), self._timer_at)
        try:
            for output in self.tracker.tick(now):
                self._send(output)
        except Exception:
            log.exception("room presence tick failed")
        self._arm()

    def _send(self, output: Output[LocalConn]) -> None:
        if isinstance(output, Diff):
            batch = frames.presence_diff(output.room, output.joined, output.left)
        else:
            batch = frames.presence_snapshot(output.room, output.members)
        for frame in batch:
            message = Outgoing(frame, binary=False)
            for conn in output.targets:
                self.flusher.send(conn, message)
