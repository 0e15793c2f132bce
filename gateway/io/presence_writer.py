"""The one task that writes this node's presence keys: every change, repair and restore goes through it.

Sessions hand it operations (a connection opened, closed, joined, left) and await them; the writer
applies them strictly in the order they were handed over, as batches: whatever queued while the previous
batch was in flight goes out together, pipelined, and each operation completes when its batch is
acknowledged. Because nothing else writes this node's keys while it lives, no two writes can race:

- a batch that fails is sent again whole, in order, before anything after it (every write is
  idempotent, so a batch that partly landed ends in the same state), for up to ``retry_for`` seconds;
  then its operations fail and a repair is scheduled;
- a repair is an operation like the others: it reads this node's keys, then compares them with the
  connections open *at that moment* and writes the difference. A close queued behind it purges again;
  a connect queued behind it writes again. So a repair can neither resurrect a closed connection nor
  purge a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core import presence_writes as pw
from gateway.core.presence_writes import ConnRecord, LocalState, Write
from gateway.io.presence_store import TRANSIENT_ERRORS, PresenceStore, PresenceWriteError, read_node
from gateway.io.tasks import cancel_and_wait
from shared import presence_keys as keys
from shared.backoff import Backoff
from shared.timestamps import utc_now

log = logging.getLogger("prism.presence_writer")

# Writes sent as one batch at most (the store pipelines them a window at a time); more wait their turn.
MAX_BATCH = 4000


class PresenceUnavailable(Exception):
    """The registry could not be written for ``retry_for`` seconds; the operation did not complete."""


class PresenceOps(Protocol):
    """What a session asks of the registry. Each call queues the change at once (so changes are stored
    in the order the calls were made) and returns a future that is done once it is stored, or fails with
    :class:`PresenceUnavailable`."""

    def register(self, record: ConnRecord) -> asyncio.Future[None]: ...

    def unregister(self, record: ConnRecord, rooms: Collection[str]) -> asyncio.Future[None]: ...

    def joined(self, record: ConnRecord, room: str) -> asyncio.Future[None]: ...

    def left(self, record: ConnRecord, room: str) -> asyncio.Future[None]: ...


@dataclass(slots=True)
class _Change:
    writes: list[Write]
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Repair:
    local: Callable[[], Iterable[LocalState]]
    rewrite_all: bool
    done: asyncio.Future[tuple[int, int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PresenceWriter:
    """:class:`PresenceOps` for one node, over a :class:`PresenceStore`."""

    def __init__(
        self,
        store: PresenceStore,
        node_id: str,
        *,
        retry_for: float = 10.0,
        on_failure: Callable[[], None] = lambda: None,
        on_written: Callable[[int], None] = lambda writes: None,
        backoff: Backoff | None = None,
    ) -> None:
        self.store = store
        self.layout = store.layout
        self.node_id = node_id
        self.retry_for = retry_for
        self._on_failure = on_failure  # operations failed: schedule a repair
        self._on_written = on_written  # writes acknowledged (the registry's load, in metrics)
        self._backoff = backoff or Backoff(base=0.05, cap=2.0)
        self._queue: deque[_Change | _Repair] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Some operation failed since the last repair: this node's keys may not match its connections.
        self.dirty = False
        self.repairs = 0  # repairs run (only a failure, a reconnect or a sweep asks for one)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Finish what is queued (each batch still gets its retries), then stop."""
        if self._task is None:
            return
        await self.flush()
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def halt(self) -> None:
        """Stop at once; whatever is queued is dropped (a forced exit)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])

    async def flush(self) -> None:
        """Return once everything handed over so far is done."""
        if self._task is None or self._idle.is_set():
            return
        idle = asyncio.ensure_future(self._idle.wait())
        try:
            await asyncio.wait({idle, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()

    # -- operations ------------------------------------------------------------------------------------
    def register(self, record: ConnRecord) -> asyncio.Future[None]:
        return self.change(pw.register_writes(self.layout, record))

    def unregister(self, record: ConnRecord, rooms: Collection[str]) -> asyncio.Future[None]:
        return self.change(pw.unregister_writes(self.layout, record, rooms))

    def joined(self, record: ConnRecord, room: str) -> asyncio.Future[None]:
        return self.change(pw.join_writes(self.layout, record, room, utc_now()))

    def left(self, record: ConnRecord, room: str) -> asyncio.Future[None]:
        return self.change(pw.leave_writes(self.layout, record, room))

    def change(self, writes: list[Write]) -> asyncio.Future[None]:
        """Queue ``writes`` behind everything handed over before; the future fails with
        :class:`PresenceUnavailable` if they could not be stored."""
        change = _Change(writes, asyncio.get_running_loop().create_future())
        self._put(change)
        return change.done

    async def repair(
        self, local: Callable[[], Iterable[LocalState]], rewrite_all: bool = False
    ) -> tuple[int, int]:
        """Make this node's keys exactly those of ``local()`` (its open connections, read when the repair
        runs); with ``rewrite_all``, write every key again (after a sweep removed them). Retried until it
        succeeds. Returns (connections rewritten, keys purged)."""
        repair = _Repair(local, rewrite_all)
        self._put(repair)
        return await repair.done

    def _put(self, item: _Change | _Repair) -> None:
        if self._task is None:
            raise PresenceUnavailable("the presence writer is not running")
        self._idle.clear()
        self._queue.append(item)
        self._wakeup.set()

    # -- the writer task -------------------------------------------------------------------------------
    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = queue.popleft()
            if isinstance(item, _Repair):
                batch: list[_Change | _Repair] = [item]
            else:
                batch = [item]
                size = len(item.writes)
                while size < MAX_BATCH and queue and isinstance(queue[0], _Change):
                    more = queue.popleft()
                    assert isinstance(more, _Change)
                    batch.append(more)
                    size += len(more.writes)
            try:
                if isinstance(item, _Repair):
                    await self._repair(item)
                else:
                    await self._apply([c for c in batch if isinstance(c, _Change)])
            except Exception as exc:  # a bug must not stop every later write of the node
                log.exception("presence writer failed")
                for failed in batch:
                    if not failed.done.done():
                        failed.done.set_exception(PresenceUnavailable(repr(exc)))

    async def _apply(self, batch: list[_Change]) -> None:
        writes = [w for change in batch for w in change.writes]
        error = await self._with_retries(writes)
        for change in batch:
            if change.done.done():
                continue  # its caller went away (a cancelled session)
            if error is None:
                change.done.set_result(None)
            else:
                change.done.set_exception(PresenceUnavailable(str(error)))
        if error is not None:
            self.dirty = True
            log.warning(
                "presence writes failed for %.0fs (%d operations): %s", self.retry_for, len(batch), error
            )
            self._on_failure()

    async def _with_retries(self, writes: list[Write]) -> Exception | None:
        """Apply ``writes`` (again and again, whole) until acknowledged or ``retry_for`` ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        schedule = self._backoff.schedule()
        while True:
            try:
                await self.store.apply(writes)
            except (PresenceWriteError, *TRANSIENT_ERRORS) as exc:
                delay = schedule.next_delay() or self._backoff.cap
                if loop.time() + delay > deadline:
                    return exc
                await asyncio.sleep(delay)
                continue
            self._on_written(len(writes))
            return None

    async def _repair(self, repair: _Repair) -> None:
        self.repairs += 1
        schedule = self._backoff.schedule()
        while True:
            try:
                found = await read_node(self.store, self.node_id, keys.node_filters(self.node_id))
                # Read the open connections only now, after the bucket: nothing this writer sends is in
                # flight, and whatever changes after this line is queued behind the repair.
                expected = pw.expected_writes(self.layout, repair.local(), utc_now())
                actual = () if repair.rewrite_all else found.keys()
                fix = pw.repair(expected, actual)
                writes = fix.writes
                if repair.rewrite_all:  # keys of connections that are gone are still purged
                    writes = [Write(b, k) for b, k in sorted(found.keys() - expected.keys())] + writes
                error = await self._with_retries(writes)
                if error is not None:
                    raise error
            except (PresenceWriteError, *TRANSIENT_ERRORS) as exc:
                delay = schedule.next_delay() or self._backoff.cap
                log.warning("presence repair failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            self.dirty = False
            purged = len(found.keys() - expected.keys())
            if fix.rewritten or purged:
                log.info(
                    "repaired presence: %d connections rewritten, %d stale keys purged", fix.rewritten, purged
                )
            with contextlib.suppress(asyncio.InvalidStateError):
                repair.done.set_result((fix.rewritten, purged))
            return
