"""Node liveness: this node's heartbeat, and the sweep of nodes that died.

Every node publishes ``node.<id>.beat`` on core NATS every ``node_ttl / 6`` seconds and listens to every
other node's. Core NATS keeps working while JetStream elects a leader or a stream has lost its quorum, so
those never make a live node look dead. A node that has not been heard for ``node_ttl`` seconds is
*silent* (:class:`~gateway.core.liveness.BeatTable`, which also keeps a node that is itself cut off from
judging anyone). A silent node is then pinged (``node.<id>.ping``, a core NATS request): an answer means
it lives; "no responders" or no answer within a second means it is dead. Then every survivor tries to
*claim* the sweep with an atomic create of ``node.<id>.sweep`` in the entry bucket, and the one that wins:

1. reads the dead node's connection and room keys (filtered reads of every shard),
2. publishes a ``client.disconnect`` for each lost connection,
3. removes every key of the node from every shard with one filtered stream purge per filter (no
   per-key writes: a node of 50,000 connections is gone in a few requests, whatever a stream's intake),
4. removes ``node.<id>.info`` and announces ``node.<id>.swept``.

Nothing depends on hearing every beat: a node starting up, and every node each ``sweep_interval``, reads
the ``info`` keys (nodes that have keys) and pings those it has not heard from, which covers nodes that
died while no one was running and a sweeper that died mid-sweep (its claim expires).

A node that was swept while in fact alive (cut off from NATS for longer than its TTL) notices within a
third of its TTL (its ``info`` key is gone, or it hears ``node.<id>.swept``) and writes everything back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

from gateway.core.lifecycle_events import identity_headers
from gateway.core.liveness import BeatTable, beat_interval, lost_connections
from gateway.core.presence_writes import LocalState
from gateway.io.bus import Bus, BusUnavailable, Headers, encode_header_lines, header_block
from gateway.io.presence_store import PURGE_MARKER_TTL, TRANSIENT_ERRORS, PresenceStore, drop_node, read_node
from gateway.io.presence_writer import PresenceWriter
from gateway.io.tasks import cancel_and_wait
from shared import presence_keys as keys
from shared.errors import ConfigError
from shared.presence import get_value, is_removal, read_values
from shared.subjects import Subjects
from shared.timestamps import utc_now

log = logging.getLogger("prism.liveness")

# A claim outlives any sweep it guards; if its holder dies, the next periodic check sweeps again.
CLAIM_TTL = 30.0
# A silent node that does not answer a ping within this many seconds is dead.
PING_TIMEOUT = 1.0
# Seconds between two looks for silent nodes.
JUDGE_EVERY = 0.25
_ERRORS = (*TRANSIENT_ERRORS, BusUnavailable)


class Liveness:
    def __init__(
        self,
        *,
        node_id: str,
        bus: Bus,
        beats: Bus,
        js: JetStreamContext,
        store: PresenceStore,
        writer: PresenceWriter,
        subjects: Subjects,
        ttl: float,
        sweep_interval: float,
        stats: Callable[[], dict[str, int]],
        local_state: Callable[[], Iterable[LocalState]],
        on_restored: Callable[[], Awaitable[None]],
        on_node_swept: Callable[[str], None] = lambda node: None,
        on_sweep: Callable[[str, int, float], None] = lambda node, conns, seconds: None,
        on_error: Callable[[str], None] = lambda op: None,
    ) -> None:
        self.node_id = node_id
        self.bus = bus  # the node's connection: events, like every other publish of the node
        # A connection of its own for beats, pings and sweep announcements: a node writing thousands of
        # presence keys into a slow JetStream must not hold its beats up behind them (it would look dead).
        self.beats = beats
        self.js = js
        self.store = store
        self.layout = store.layout
        self.writer = writer
        self.subjects = subjects
        self.ttl = ttl
        self.interval = beat_interval(ttl)
        self.sweep_interval = sweep_interval
        self.table = BeatTable(node_id, ttl)
        self._stats = stats
        self._local_state = local_state
        self._on_restored = on_restored
        self._on_node_swept = on_node_swept
        self._on_sweep = on_sweep
        self._on_error = on_error  # "heartbeat", "check" or "sweep" failed (counted in the metrics)
        self.started_at = utc_now()
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []
        self._stopping = False
        self._sweeping: set[str] = set()
        self._kv_beat_failing = False
        self._announced = False  # this node's info key is written: stop() removes it

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """:meth:`prepare`, then :meth:`run` (a caller that retries the first calls them one by one)."""
        await self.prepare()
        await self.run()

    async def prepare(self) -> None:
        """Refuse a node id that a live node has, sweep what an earlier process with this id left, and
        put this node's ``info`` key. Needs JetStream; safe to call again after a failure."""
        if await self.answers_ping(self.node_id):
            raise ConfigError(f"node id {self.node_id!r} is taken by a running node; give each node its own")
        await self.sweep(self.node_id, force=True)
        await self._put_info()
        self._announced = True

    async def run(self) -> None:
        """Start beating and listening (core NATS only: JetStream may still be settling)."""
        loop = asyncio.get_running_loop()
        self._subs = [
            await self.beats.subscribe(self.subjects.node_beats, self._on_beat),
            await self.beats.subscribe(self.subjects.nodes_swept, self._on_swept),
            await self.beats.subscribe(self.subjects.node_ping(self.node_id), self._on_ping),
        ]
        self.table.link_up(loop.time())
        await self._beat()
        self._tasks = [
            asyncio.ensure_future(self._beat_forever()),
            asyncio.ensure_future(self._kv_beat_forever(first=True)),
            asyncio.ensure_future(self._judge_forever()),
            asyncio.ensure_future(self._check_forever()),
        ]

    def link(self, connected: bool) -> None:
        """NATS went away or came back: beats heard so far no longer prove anything about silence."""
        if connected:
            self.table.link_up(asyncio.get_running_loop().time())
        else:
            self.table.link_down()

    async def halt(self) -> None:
        """Stop beating and judging at once, leaving every key as it is (a forced exit)."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def stop(self) -> None:
        """Stop beating; remove this node's ``info`` and KV heartbeat, and tell the others it is gone.
        (Its connections are closed and their keys removed by then.)"""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        if not self._announced:
            return  # it stopped while starting: nothing of it is in the registry
        try:
            await self._purge(keys.node_info_key(self.node_id))
            await self._purge(keys.node_alive_key(self.node_id))
        except _ERRORS as exc:
            log.warning(
                "could not remove node %s from presence (survivors will sweep it): %s", self.node_id, exc
            )
            return
        with contextlib.suppress(*_ERRORS):
            await self.beats.publish(self.subjects.node_beat(self.node_id), self._beat_body(stopped=True))

    # -- heartbeats ------------------------------------------------------------------------------------
    def _beat_body(self, stopped: bool = False) -> bytes:
        body: dict[str, Any] = {"node": self.node_id, "started_at": self.started_at, "ttl": self.ttl}
        body.update(self._stats())
        if stopped:
            body["stopped"] = True
        return orjson.dumps(body)

    async def _beat(self) -> None:
        await self.beats.publish(self.subjects.node_beat(self.node_id), self._beat_body())

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            with contextlib.suppress(*_ERRORS):  # NATS is reconnecting: nobody hears a beat anyway
                await self._beat()

    async def _kv_beat(self) -> None:
        """``node.<id>.alive`` in the entry bucket, for readers of KV (``presence.cluster``-style
        counts). Only informative: a JetStream outage that lets it expire sweeps nobody."""
        value = {"node": self.node_id, "started_at": self.started_at, **self._stats()}
        subject = keys.kv_subject(self.layout.bucket, keys.node_alive_key(self.node_id))
        await self.js.publish(subject, orjson.dumps(value), msg_ttl=self.ttl)

    async def _kv_beat_forever(self, first: bool = False) -> None:
        while True:
            if not first:
                await asyncio.sleep(self.ttl / 3)
            first = False
            try:
                await self._kv_beat()
                await self.check_not_swept()
            except _ERRORS as exc:
                _reraise_if_cancelled()
                self._on_error("heartbeat")
                if not self._kv_beat_failing:
                    log.warning("JetStream unavailable for the KV heartbeat (retrying quietly): %s", exc)
                self._kv_beat_failing = True
                continue
            if self._kv_beat_failing:
                log.info("JetStream available again for the KV heartbeat")
                self._kv_beat_failing = False

    async def _on_beat(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        try:
            beat = orjson.loads(data)
            node = str(beat["node"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if beat.get("stopped"):
            self.table.forget(node)
            return
        new = node not in self.table.peers
        self.table.heard(node, beat, asyncio.get_running_loop().time())
        if new and node != self.node_id and not self._stopping:
            # A node that just started knows nobody yet: beat now, so it need not wait a beat interval.
            with contextlib.suppress(*_ERRORS):
                await self._beat()

    async def _on_ping(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        if reply:
            with contextlib.suppress(*_ERRORS):
                await self.beats.publish(reply, orjson.dumps({"node": self.node_id}))

    async def answers_ping(self, node: str) -> bool:
        """Whether ``node`` answers on core NATS now. Only "no responders" or silence say no: if NATS
        itself cannot be asked, the node counts as alive (nobody is swept on a guess)."""
        try:
            await self.beats.request(self.subjects.node_ping(node), b"", PING_TIMEOUT)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError):
            return False
        except _ERRORS:
            return True
        return True

    # -- finding the dead ------------------------------------------------------------------------------
    async def _judge_forever(self) -> None:
        # Looking often is cheap (one pass over the nodes heard) and keeps a death's detection within a
        # quarter second of the TTL, which is most of a sweep's time budget.
        while True:
            await asyncio.sleep(min(self.interval, JUDGE_EVERY))
            for node in self.table.silent(asyncio.get_running_loop().time()):
                self._spawn_sweep(node)

    async def _check_forever(self) -> None:
        """Once this node has listened for a TTL, and then every ``sweep_interval``: ping the nodes that
        have keys (an ``info``) but were never heard, and sweep those that do not answer."""
        while not self.table.healthy(asyncio.get_running_loop().time()):  # noqa: ASYNC110 (a clock)
            await asyncio.sleep(self.interval)
        while True:
            try:
                await self.check()
            except _ERRORS as exc:
                _reraise_if_cancelled()
                self._on_error("check")
                log.warning("dead-node check failed: %s", exc)
            if not self.sweep_interval:
                return
            await asyncio.sleep(self.sweep_interval)

    async def check(self) -> set[str]:
        """Sweep every node that has keys but is neither heard nor answering; returns the nodes swept."""
        registered = {
            keys.node_of_node_key(k)
            for k in await read_values(self.js, self.layout.bucket, keys.NODES_INFO_FILTER)
        }
        unheard = sorted(registered - set(self.table.alive()) - {self.node_id})
        found = await asyncio.gather(*(self.answers_ping(node) for node in unheard))
        dead = {node for node, alive in zip(unheard, found, strict=True) if not alive}
        for node in dead:
            self._spawn_sweep(node)
        return dead

    def _spawn_sweep(self, node: str) -> None:
        if node in self._sweeping or self._stopping:
            return
        self._sweeping.add(node)

        async def run() -> None:
            try:
                swept = await self.sweep(node)
                if swept is not None or not await self._exists(keys.node_info_key(node)):
                    self.table.forget(node)  # gone (by this sweep or another's): no longer silent
            except _ERRORS as exc:
                _reraise_if_cancelled()
                self._on_error("sweep")
                log.warning("sweep of node %s failed (retried): %s", node, exc)
            finally:
                self._sweeping.discard(node)

        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.ensure_future(run()))

    # -- sweeping --------------------------------------------------------------------------------------
    async def sweep(self, node: str, force: bool = False) -> int | None:
        """Remove a dead node's keys and publish its connections' disconnect events.

        Returns how many connections were swept, or None when another node holds the claim, or the node
        turned out alive or already swept. ``force`` sweeps whatever the node's ``info`` key and pings
        say, once any other sweeper is done: this node's start uses it for the leftovers of an earlier
        process with its id.
        """
        if not await self._claim(node, wait=force):
            return None
        started = time.monotonic()
        try:
            if not force:
                if not await self._exists(keys.node_info_key(node)):
                    return None  # swept already
                if await self.answers_ping(node):
                    log.info("node %s was silent but answers: not swept", node)
                    self.table.heard(
                        node, self.table.alive().get(node, {}), asyncio.get_running_loop().time()
                    )
                    return None
            conns, rooms = await asyncio.gather(
                read_node(self.store, node, (keys.node_conns_filter(node),)),
                read_node(self.store, node, (keys.node_rooms_filter(node),)),
            )
            decoded = {key: orjson.loads(value) for (_, key), value in conns.items()}
            lost = lost_connections(node, decoded, (key for _, key in rooms))
            now = utc_now()
            subject = self.subjects.client_disconnect
            for conn in lost:
                block = header_block(encode_header_lines(identity_headers(conn.record)))
                await self.bus.publish_encoded(
                    subject, "", block, orjson.dumps(conn.disconnect_event(now, self.node_id))
                )
            await self.bus.flush()
            await drop_node(self.store, node)
            await self._purge(keys.node_info_key(node))
            announcement = {"node": node, "by": self.node_id, "connections": len(lost), "at": now}
            await self.beats.publish(self.subjects.node_swept(node), orjson.dumps(announcement))
            took = time.monotonic() - started
            if lost or node != self.node_id:
                log.info("swept node %s: %d connections in %.2fs", node, len(lost), took)
            self._on_sweep(node, len(lost), took)
            return len(lost)
        finally:
            with contextlib.suppress(*_ERRORS):
                await self._purge(keys.node_sweep_key(node))

    async def _on_swept(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        try:
            node = str(orjson.loads(data)["node"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if node == self.node_id:
            if not self._stopping:
                self._tasks = [t for t in self._tasks if not t.done()]
                self._tasks.append(asyncio.ensure_future(self._restore_soon()))
            return
        self.table.forget(node)
        self._on_node_swept(node)

    async def _restore_soon(self) -> None:
        with contextlib.suppress(*_ERRORS):
            await self.check_not_swept()

    async def check_not_swept(self) -> None:
        """If a survivor swept this node while it was alive (cut off from NATS longer than its TTL),
        write all its keys back and announce its connections again."""
        if await self._exists(keys.node_info_key(self.node_id)):
            return
        if await self._exists(keys.node_sweep_key(self.node_id)):
            return  # a sweep is still running: restore after it, on a later beat
        log.warning("node %s was swept while alive; restoring its presence", self.node_id)
        await self._put_info()
        await self.writer.repair(self._local_state, rewrite_all=True)
        await self._on_restored()

    # -- the entry bucket ------------------------------------------------------------------------------
    async def _put_info(self) -> None:
        info = {"node": self.node_id, "started_at": self.started_at}
        await self.js.publish(
            keys.kv_subject(self.layout.bucket, keys.node_info_key(self.node_id)), orjson.dumps(info)
        )

    async def _purge(self, key: str) -> None:
        headers = {"KV-Operation": "PURGE", "Nats-Rollup": "sub"}
        subject = keys.kv_subject(self.layout.bucket, key)
        await self.js.publish(subject, b"", headers=headers, msg_ttl=PURGE_MARKER_TTL)

    async def _claim(self, node: str, wait: bool) -> bool:
        """Create ``node.<node>.sweep`` if it does not exist (or is deleted): an atomic compare-and-set."""
        claim = orjson.dumps({"by": self.node_id, "at": utc_now()})
        subject = keys.kv_subject(self.layout.bucket, keys.node_sweep_key(node))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_TTL
        while True:
            seq, live = await self._latest(keys.node_sweep_key(node))
            if not live:
                try:
                    headers = {"Nats-Expected-Last-Subject-Sequence": str(seq)}
                    await self.js.publish(subject, claim, headers=headers, msg_ttl=CLAIM_TTL)
                    return True
                except nats.js.errors.BadRequestError:
                    pass  # another node claimed it between our read and our write
            if not wait or loop.time() > deadline:
                return False
            await asyncio.sleep(0.2)

    async def _latest(self, key: str) -> tuple[int, bool]:
        """The stream sequence of ``key``'s last message (0 if none) and whether it holds a value."""
        stream, subject = keys.kv_stream(self.layout.bucket), keys.kv_subject(self.layout.bucket, key)
        try:
            msg = await self.js.get_msg(stream, subject=subject)
        except nats.js.errors.NotFoundError:
            return 0, False
        return int(msg.seq or 0), not is_removal(msg.headers) and bool(msg.data)

    async def _exists(self, key: str) -> bool:
        return await get_value(self.js, self.layout.bucket, key) is not None


def _reraise_if_cancelled() -> None:
    """nats-py turns a cancelled wait into its own TimeoutError; a task being stopped must still stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
