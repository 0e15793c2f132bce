"""Missed-message recovery on this node: the I/O shell of :mod:`gateway.core.recovery`.

For each recoverable room or user (a *channel*) with a recovering member here, the node:

- subscribes the history stream's republish of it (``recovery.room.<r>`` / ``recovery.user.<u>``),
  where each stored message arrives once, in order, with its sequence and its channel's previous one;
- starts a member (a ``join`` with ``"recover": true``, a connection with ``?recover=user``) by
  registering it first, so core deliveries on ``room.<r>`` skip it and the node does not subscribe
  ``room.<r>`` on its account; then subscribes, reads the history after the member's position, tells the
  client whether that is everything (the ``recovery`` frame), sends what it missed, then what arrived
  meanwhile, and from then on each live message (a ``pos`` frame, then the payload unchanged);
- repairs: a live message that names a predecessor the member never got, or the periodic check (every
  ``recover_sync`` seconds: the last message of each channel) finding the member behind, makes it catch
  up from the history. The same check moves quiet members' positions forward (``mark`` frames), so a
  position stays inside the history however long a room is quiet; after a NATS reconnect it runs at once.

Anything the history cannot tell (NATS down, JetStream not answering) closes the connection with 1013:
the client keeps its positions and recovers on its next connection, instead of being told of a loss that
did not happen.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import GatewayConfig
from gateway.core.framing import is_valid_utf8
from gateway.core.history_layout import Recoverable
from gateway.core.hub import Hub, Interest, JoinOutcome, Scope
from gateway.core.recovery import Channel, Drained, Stored, StreamState, history_covers
from gateway.io.bus import Bus, Handler, Headers
from gateway.io.history import HistoryStore, HistoryUnavailable
from gateway.io.interests import InterestSync
from gateway.io.outbox import Flusher, LocalConn, Outgoing
from gateway.metrics import GatewayMetrics
from shared import frames
from shared import headers as h
from shared.close_codes import CloseCode
from shared.frames import Position
from shared.startup import StartupSteps
from shared.subjects import Subjects

log = logging.getLogger("prism.recovery")

KEYS = {Scope.ROOM: "room", Scope.USER: "user"}
PACE_BYTES = 64 * 1024  # a replay is written in slices this big, each once the socket has taken the last
VERIFY_GRACE = 1.0  # seconds a member found behind by the periodic check has to get it live first
SHARE_SECONDS = 1.0  # a history read serves other members at the same cursor this long after it was sent
BUFFER_LIMIT = 10_000  # live messages held for one catching-up member before it counts as too slow
UNAVAILABLE = "history unavailable: reconnect later"


@dataclass(frozen=True, slots=True)
class Start:
    """How a member starts: its first cursor (``after``) in ``epoch``, and what its ``recovery`` frame
    will say: ``recovering`` (the client gave a position) and ``epoch_ok`` (the position is in this
    epoch)."""

    after: int
    epoch: str
    recovering: bool
    epoch_ok: bool


@dataclass(frozen=True, slots=True)
class Fetched:
    """A history read: the messages after a sequence, whether that is all of them, the stream state
    taken after the read, and when the read was sent (loop time)."""

    messages: list[Stored]
    covered: bool
    state: StreamState
    sent: float


Closer = Callable[[LocalConn, int, str], None]


class Recovery:
    def __init__(
        self,
        config: GatewayConfig,
        node_id: str,
        hub: Hub[LocalConn],
        flusher: Flusher,
        bus: Bus,
        history: HistoryStore,
        metrics: GatewayMetrics,
        close: Closer,
        slow_consumer: Callable[[LocalConn], None],
    ) -> None:
        self.node_id = node_id
        self.subjects: Subjects = config.subjects
        self.hub = hub
        self.flusher = flusher
        self.history = history
        self.metrics = metrics
        self.close = close
        self.slow_consumer = slow_consumer
        self.recoverable = Recoverable(config.recover_rooms, config.recover_users)
        self.limit = config.recover_history
        self.sync_interval = config.recover_sync
        self.channels: dict[Scope, dict[str, Channel[LocalConn]]] = {Scope.ROOM: {}, Scope.USER: {}}
        self._of_conn: dict[str, set[tuple[Scope, str]]] = {}  # conn id -> its channels
        self._epochs: dict[Scope, str] = {}
        self._fetches: dict[tuple[Scope, str, int], tuple[asyncio.Future[Fetched], float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._delivered = metrics.hot.recovered  # plain ints on the hot path, exported at scrape
        self._sync_task: asyncio.Task[None] | None = None
        self._offsets = {s: self.subjects.tail_offset(f"recovery.{KEYS[s]}.") for s in Scope}
        self._handlers: dict[Scope, Handler] = {Scope.ROOM: self._on_room, Scope.USER: self._on_user}
        self.subscriptions = InterestSync(
            bus, self._has_channel, self._stored_subject, self._handlers.__getitem__
        )
        for scope in Scope:
            gauge = metrics.recovery_members.labels(node=node_id, scope=KEYS[scope])
            gauge.set_function(self._counter(scope))

    def _has_channel(self, scope: Scope, name: str) -> bool:
        return name in self.channels[scope]

    def _counter(self, scope: Scope) -> Callable[[], float]:
        return lambda: sum(len(channel) for channel in self.channels[scope].values())

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self, steps: StartupSteps) -> None:
        """Create or update the history streams (waiting for JetStream through ``steps``), then take each
        stream's epoch and start the periodic check."""
        await self.history.start(steps)
        for scope in self.history.specs:
            state = await self.history.state_after(scope, asyncio.get_running_loop().time())
            self._epochs[scope] = state.epoch
        self._sync_task = asyncio.create_task(self._sync_loop(), name="recovery-sync")

    async def stop(self) -> None:
        tasks = [t for t in (self._sync_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.history.stop()

    def resync(self) -> None:
        """NATS is back: republished messages may have been lost meanwhile; check every channel now."""
        self._spawn(self.sync())

    # -- the core delivery path's view -----------------------------------------------------------------
    def wants_core(self, scope: Scope, name: str) -> bool:
        """Whether the node needs ``room.<r>`` / ``user.<u>``: some local member is not recovering."""
        members = (self.hub.rooms if scope is Scope.ROOM else self.hub.users).get(name)
        if not members:
            return False
        channel = self.channels[scope].get(name)
        return channel is None or any(conn_id not in channel for conn_id in members)

    # -- members ---------------------------------------------------------------------------------------
    async def join_room(
        self,
        conn: LocalConn,
        room: str,
        position: Position | None,
        join: Callable[[], Awaitable[JoinOutcome]],
    ) -> JoinOutcome:
        """A ``join`` with ``"recover": true``: join through ``join`` (hub, subscriptions, presence) with
        the member registered first, then catch it up before returning (so ``ok`` follows the replay).
        Already a member (with or without recovery): nothing changes."""
        if room in self.hub.rooms_of(conn.conn_id):
            return await join()
        if not self.recoverable.matches(Scope.ROOM, room):
            outcome = await join()
            if outcome is JoinOutcome.JOINED:
                self._count(Scope.ROOM, "not_recoverable")
                self._send(conn, frames.not_recoverable("room", room))
            return outcome
        try:
            start = await self._prepare(Scope.ROOM, position)
        except HistoryUnavailable as exc:
            self._unavailable(conn, Scope.ROOM, "state", exc)
            return JoinOutcome.UNKNOWN_CONN
        self._begin(Scope.ROOM, room, conn, start.after)
        outcome = await join()
        if outcome is not JoinOutcome.JOINED:
            await self._remove(conn.conn_id, Scope.ROOM, room)
            return outcome
        await self._catch_up(Scope.ROOM, room, conn.conn_id, start)
        return outcome

    async def reserve_user(self, conn: LocalConn, position: Position | None) -> Start | None:
        """Before a connection with ``?recover=user`` is registered: make it a recovering member of its
        user (None if the user has no history). Raises :class:`HistoryUnavailable`."""
        if conn.user is None or not self.recoverable.matches(Scope.USER, conn.user):
            return None
        start = await self._prepare(Scope.USER, position)
        self._begin(Scope.USER, conn.user, conn, start.after)
        # Subscribed before the connection is announced: what a backend sends on client.connect is
        # stored after the start position, so the read or the live path has it.
        await self._subscribe(Scope.USER, conn.user)
        return start

    async def start_user(self, conn: LocalConn, start: Start | None) -> None:
        """After the welcome: the user's ``recovery`` frame, what was missed, then live."""
        if start is None or conn.user is None:
            self._count(Scope.USER, "not_recoverable")
            self._send(conn, frames.not_recoverable("user", conn.user))  # type: ignore[arg-type]
            return
        await self._catch_up(Scope.USER, conn.user, conn.conn_id, start)

    async def left(self, conn: LocalConn, room: str) -> None:
        """Before the connection leaves ``room`` (before the hub forgets it: see :meth:`wants_core`)."""
        await self._remove(conn.conn_id, Scope.ROOM, room)

    async def closed(self, conn: LocalConn) -> None:
        """The connection is closing: it leaves every channel (call before the hub forgets it)."""
        for scope, name in list(self._of_conn.get(conn.conn_id, ())):
            await self._remove(conn.conn_id, scope, name)

    def _begin(self, scope: Scope, name: str, conn: LocalConn, after: int) -> None:
        channel = self.channels[scope].get(name)
        if channel is None:
            channel = self.channels[scope][name] = Channel(BUFFER_LIMIT)
        channel.begin(conn.conn_id, conn, after)
        self._of_conn.setdefault(conn.conn_id, set()).add((scope, name))

    async def _remove(self, conn_id: str, scope: Scope, name: str) -> None:
        channels = self._of_conn.get(conn_id)
        if channels is not None:
            channels.discard((scope, name))
            if not channels:
                del self._of_conn[conn_id]
        channel = self.channels[scope].get(name)
        if channel is None or channel.remove(conn_id) is None or channel.members:
            return
        del self.channels[scope][name]
        await self.subscriptions.apply([Interest(scope, name, False)])

    async def _subscribe(self, scope: Scope, name: str) -> None:
        """Make sure the channel's republish is subscribed; returns once the SUB is queued on the NATS
        connection, ahead of the history read that follows it."""
        await self.subscriptions.apply([Interest(scope, name, True)])

    async def _prepare(self, scope: Scope, position: Position | None) -> Start:
        """Where a new member starts. With a position in the current epoch: there. Otherwise at the
        stream's last sequence, from a request sent now: after the join arrived (nothing older is
        replayed) and before the subscription (nothing newer is missed)."""
        known = self.history.known(scope)
        if position is not None and known is not None and position.epoch == known.epoch:
            return Start(position.seq, known.epoch, recovering=True, epoch_ok=True)
        state = await self.history.state_after(scope, asyncio.get_running_loop().time())
        if position is not None and position.epoch == state.epoch:
            return Start(position.seq, state.epoch, recovering=True, epoch_ok=True)
        return Start(state.last_seq, state.epoch, recovering=position is not None, epoch_ok=False)

    # -- catching up -----------------------------------------------------------------------------------
    async def _catch_up(self, scope: Scope, name: str, conn_id: str, start: Start | None) -> None:
        """Bring one member from its cursor to live: read, tell, replay, merge what arrived meanwhile.
        ``start``: the member's first catch-up (send its ``recovery`` frame); None for a repair."""
        loop = asyncio.get_running_loop()
        channel = self.channels[scope].get(name)
        member = channel.members.get(conn_id) if channel is not None else None
        if channel is None or member is None:
            return
        await self._subscribe(scope, name)  # before the read (a no-op once subscribed)
        generation = member.generation
        epoch = start.epoch if start is not None else self._epochs.get(scope, "")
        after = member.cursor
        began = loop.time()
        first = True
        key = KEYS[scope]
        conn = member.handle
        while True:
            try:
                fetched = await self._fetch(scope, name, after, began)
            except HistoryUnavailable as exc:
                if channel.members.get(conn_id) is member:
                    self._unavailable(conn, scope, "read", exc, counted=start is not None and first)
                return
            if channel.members.get(conn_id) is not member or member.generation != generation:
                return  # left, closed, or the stream was recreated meanwhile (a new catch-up runs)
            if fetched.state.epoch != epoch:
                self._new_epoch(scope, fetched.state)
                return
            if first and start is not None:
                recovered = start.recovering and start.epoch_ok and fetched.covered
                self._count(scope, self._outcome(start, recovered))
                frame = frames.recovery(
                    key, name, epoch=epoch, seq=after, recovering=start.recovering, recovered=recovered
                )
                self._send(conn, frame)
            elif not fetched.covered:
                self._tell_gap(conn, scope, name, epoch, after)
            replay = channel.fetched(conn_id, fetched.messages)
            if replay:
                self.metrics.recovery_replayed.labels(node=self.node_id, scope=key).inc(len(replay))
                await self._send_paced(conn, key, name, replay)
                if channel.members.get(conn_id) is not member or member.generation != generation:
                    return
            drained = channel.drain(conn_id)
            self._send_drained(conn, scope, name, epoch, drained)
            if drained.fetch_after is None:
                return
            after = drained.fetch_after
            began = loop.time()
            first = False

    @staticmethod
    def _outcome(start: Start, recovered: bool) -> str:
        if not start.recovering:
            return "fresh"
        if not start.epoch_ok:
            return "epoch"
        return "recovered" if recovered else "partial"

    async def _fetch(self, scope: Scope, name: str, after: int, began: float) -> Fetched:
        """The history after ``after`` for a member that began at ``began``. A read of the same cursor
        sent in the last :data:`SHARE_SECONDS` is shared (after a node dies, its clients come back at
        the same positions at once); when it was sent before the member began, a small read from its
        last message on tops it up, since what was stored in between is in neither it nor the buffer."""
        key = (scope, name, after)
        loop = asyncio.get_running_loop()
        entry = self._fetches.get(key)
        if entry is None or loop.time() - entry[1] > SHARE_SECONDS:
            future = asyncio.ensure_future(self._read(scope, name, after))
            entry = (future, loop.time())
            self._fetches[key] = entry
            future.add_done_callback(functools.partial(self._forget_fetch, key, entry))
        shared = await asyncio.shield(entry[0])
        if shared.sent >= began:
            return shared
        top = shared.messages[-1].seq if shared.messages else after
        extra = await self._read(scope, name, top)
        messages = shared.messages + extra.messages
        covered = shared.covered and history_covers(top, extra.state, len(messages), self.limit)
        return Fetched(messages, covered, extra.state, extra.sent)

    def _forget_fetch(
        self,
        key: tuple[Scope, str, int],
        entry: tuple[asyncio.Future[Fetched], float],
        _: asyncio.Future[Fetched],
    ) -> None:
        if not _.cancelled() and _.exception() is not None:  # retrieved: a failed read is not shared
            if self._fetches.get(key) is entry:
                del self._fetches[key]
            return
        # A finished read is shared for SHARE_SECONDS after it was sent, then forgotten.
        delay = max(0.0, entry[1] + SHARE_SECONDS - asyncio.get_running_loop().time())
        asyncio.get_running_loop().call_later(delay, self._drop_fetch, key, entry)

    def _drop_fetch(self, key: tuple[Scope, str, int], entry: tuple[asyncio.Future[Fetched], float]) -> None:
        if self._fetches.get(key) is entry:
            del self._fetches[key]

    async def _read(self, scope: Scope, name: str, after: int) -> Fetched:
        loop = asyncio.get_running_loop()
        started = loop.time()
        subject = self._delivery_subject(scope, name)
        try:
            found = await self.history.read(scope, subject, after, self.limit)  # sent now
            state = await self.history.state_after(scope, loop.time())  # taken after the read
        except HistoryUnavailable:
            self.metrics.recovery_errors.labels(node=self.node_id, op="read").inc()
            raise
        self.metrics.recovery_read_latency.labels(node=self.node_id).observe(loop.time() - started)
        messages = [Stored(m.seq, None, m.payload, _is_binary(m.payload, m.headers)) for m in found]
        return Fetched(messages, history_covers(after, state, len(messages), self.limit), state, started)

    async def _send_paced(self, conn: LocalConn, key: str, name: str, messages: list[Stored]) -> None:
        """Queue a replay slice by slice, each once the socket has taken the previous one, so a long
        replay neither trips the slow-consumer limit nor holds its whole size in the outbound queue."""
        pending = 0
        for message in messages:
            if conn.closing:
                return
            self.flusher.send(conn, Outgoing(frames.pos(key, name, message.seq), binary=False))
            self.flusher.send(conn, Outgoing(message.payload, message.binary))
            pending += len(message.payload) + 48
            if pending >= PACE_BYTES:
                pending = 0
                self.flusher.flush()
                try:
                    await conn.ws.drain()
                except Exception:  # the connection went away: its session cleans up
                    return

    def _send_drained(self, conn: LocalConn, scope: Scope, name: str, epoch: str, drained: Drained) -> None:
        key = KEYS[scope]
        for index, message in enumerate(drained.sends):
            if drained.gap is not None and drained.gap[0] == index:
                self._tell_gap(conn, scope, name, epoch, drained.gap[1])
            self.flusher.send(conn, Outgoing(frames.pos(key, name, message.seq), binary=False))
            self.flusher.send(conn, Outgoing(message.payload, message.binary))

    def _tell_gap(self, conn: LocalConn, scope: Scope, name: str, epoch: str, after: int) -> None:
        """Messages after ``after`` are lost for this member: say so (never a silent gap)."""
        self.metrics.recovery_gaps.labels(node=self.node_id, scope=KEYS[scope]).inc()
        frame = frames.recovery(KEYS[scope], name, epoch=epoch, seq=after, recovering=True, recovered=False)
        self._send(conn, frame)

    def _new_epoch(self, scope: Scope, state: StreamState) -> None:
        """The stream was recreated (sequences restarted): every member of the scope catches up again
        from the start of the new stream, told that messages may have been lost in between."""
        if self._epochs.get(scope) == state.epoch:
            return
        log.warning("the %ss' history has a new epoch %s: members catch up again", KEYS[scope], state.epoch)
        self._epochs[scope] = state.epoch
        for name, channel in list(self.channels[scope].items()):
            start = Start(0, state.epoch, recovering=True, epoch_ok=False)
            for conn_id in channel.reset(0):
                self._spawn(self._catch_up(scope, name, conn_id, start))

    # -- live messages -----------------------------------------------------------------------------------
    def _on_room(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        self._on_stored(Scope.ROOM, subject[self._offsets[Scope.ROOM] :], data, headers)

    def _on_user(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        self._on_stored(Scope.USER, subject[self._offsets[Scope.USER] :], data, headers)

    def _on_stored(self, scope: Scope, name: str, data: bytes, headers: Headers | None) -> None:
        channel = self.channels[scope].get(name)
        if channel is None or headers is None:
            return
        try:
            seq = int(headers["Nats-Sequence"])
            prev = int(headers.get("Nats-Last-Sequence", "0"))
        except (KeyError, ValueError):
            log.warning("ignoring a message on the %s republish without a sequence", KEYS[scope])
            return
        binary = _is_binary(data, headers)
        targets, gaps, overflowing = channel.live(Stored(seq, prev, data, binary))
        if targets:
            key = KEYS[scope]
            position = Outgoing(frames.pos(key, name, seq), binary=False)
            message = Outgoing(data, binary)
            send = self.flusher.send
            for conn in targets:
                send(conn, position)
                send(conn, message)
            self._delivered[key] += len(targets)
        for conn_id in gaps:
            self.metrics.recovery_repairs.labels(node=self.node_id, scope=KEYS[scope]).inc()
            self._spawn(self._catch_up(scope, name, conn_id, None))
        for conn_id in overflowing:
            member = channel.members.get(conn_id)
            if member is not None:
                self.slow_consumer(member.handle)

    # -- the periodic check ------------------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval * random.uniform(0.8, 1.2))
            try:
                await self.sync()
            except Exception:  # a bug must not end the checks for the life of the node
                log.exception("recovery check failed")
                self.metrics.recovery_errors.labels(node=self.node_id, op="sync").inc()

    async def sync(self) -> None:
        """For every channel: read its last stored message (with the anchor, from one consistent
        replica). Members that have it move their position to where that read stood (a ``mark``);
        members behind it catch up, unless it arrives live within :data:`VERIFY_GRACE`."""
        for scope in list(self.history.specs):
            try:
                await self.history.write_anchor(scope)
                if not await self._same_epoch(scope):
                    continue
                names = list(self.channels[scope])
                subjects = [self._delivery_subject(scope, name) for name in names]
                answers = await self.history.lasts(scope, subjects) if subjects else {}
                if not await self._same_epoch(scope):
                    continue
            except HistoryUnavailable as exc:
                log.warning("recovery check of %ss failed: %s", KEYS[scope], exc)
                self.metrics.recovery_errors.labels(node=self.node_id, op="sync").inc()
                continue
            key = KEYS[scope]
            for name, subject in zip(names, subjects, strict=True):
                channel = self.channels[scope].get(name)
                if channel is None:
                    continue
                last, upto = answers[subject]
                advanced, behind = channel.mark(last, upto)
                if advanced:
                    mark = Outgoing(frames.mark(key, name, upto), binary=False)
                    for conn in advanced:
                        self.flusher.send(conn, mark)
                if behind:
                    self._spawn(self._verify(scope, name, last))

    async def _same_epoch(self, scope: Scope) -> bool:
        try:
            state = await self.history.state_after(scope, asyncio.get_running_loop().time())
        except HistoryUnavailable:
            self.metrics.recovery_errors.labels(node=self.node_id, op="state").inc()
            raise
        if state.epoch != self._epochs.get(scope):
            self._new_epoch(scope, state)
            return False
        return True

    async def _verify(self, scope: Scope, name: str, last: int) -> None:
        await asyncio.sleep(VERIFY_GRACE)
        channel = self.channels[scope].get(name)
        if channel is None:
            return
        for conn_id, member in list(channel.members.items()):
            if member.live and member.cursor < last and channel.restart(conn_id):
                self.metrics.recovery_repairs.labels(node=self.node_id, scope=KEYS[scope]).inc()
                self._spawn(self._catch_up(scope, name, conn_id, None))

    # -- helpers -----------------------------------------------------------------------------------------
    def _delivery_subject(self, scope: Scope, name: str) -> str:
        return self.subjects.room(name) if scope is Scope.ROOM else self.subjects.user(name)

    def _stored_subject(self, scope: Scope, name: str) -> str:
        return self.subjects.recovery_room(name) if scope is Scope.ROOM else self.subjects.recovery_user(name)

    def _send(self, conn: LocalConn, frame: bytes) -> None:
        self.flusher.send(conn, Outgoing(frame, binary=False))

    def _count(self, scope: Scope, outcome: str) -> None:
        self.metrics.recoveries.labels(node=self.node_id, scope=KEYS[scope], outcome=outcome).inc()

    def _unavailable(
        self, conn: LocalConn, scope: Scope, op: str, exc: Exception, *, counted: bool = True
    ) -> None:
        log.warning("closing %s: %s history unavailable: %s", conn.conn_id, KEYS[scope], exc)
        if op != "read":
            self.metrics.recovery_errors.labels(node=self.node_id, op=op).inc()
        if counted:
            self._count(scope, "failed")
        self.close(conn, CloseCode.TRY_AGAIN_LATER, UNAVAILABLE)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("recovery task failed", exc_info=exc)


def _is_binary(data: bytes, headers: dict[str, str] | None) -> bool:
    """As core deliveries: binary if the backend said so, or if the bytes are not UTF-8."""
    if headers is not None and headers.get(h.FRAME) == h.FRAME_BINARY:
        return True
    return not is_valid_utf8(data)
