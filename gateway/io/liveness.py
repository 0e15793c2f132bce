"""Node liveness in the presence bucket: this node's heartbeat, and the sweep of nodes that died.

Every node rewrites ``node.<id>.alive`` every ``node_ttl / 3`` seconds with a per-message TTL of
``node_ttl``. A node that stops (SIGKILL, a lost machine, a partition) stops rewriting it; the server
removes it after ``node_ttl`` and leaves a delete marker, and every survivor watching ``node.*.alive``
sees the marker. Each survivor then tries to *claim* the sweep with an atomic create of
``node.<id>.sweep``: the one that wins purges the dead node's ``conn.``, ``user.`` and ``room.`` keys,
publishes a ``client.disconnect`` event for each lost connection, and removes ``node.<id>.info`` last.
The losers do nothing, so there is exactly one sweep per death however many nodes survive.

Nothing depends on the watch alone: a node starting up, and every node each ``sweep_interval``, compares
the ``info`` keys (nodes that have entries) with the ``alive`` keys and sweeps the difference, which
covers markers missed during a NATS outage and a sweeper that died mid-sweep (its claim expires).

A node whose heartbeat lapsed while it was in fact alive (a long pause, a partition) may have been
swept. It notices on its next beat (its ``info`` key is gone) and asks the node to restore its entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.kv import KeyValue

from gateway.core.liveness import LocalState, dead_nodes, expected_keys, lost_connections, repair
from gateway.io.bus import Bus, BusUnavailable
from gateway.io.presence_store import PURGE_MARKER_TTL, ConnRecord, KvPresenceStore, utc_now
from gateway.io.tasks import cancel_and_wait
from shared import headers as h
from shared import presence_keys as keys
from shared.presence import is_removal, snapshot
from shared.subjects import Subjects

log = logging.getLogger("prism.liveness")

# A claim outlives any sweep it guards; if its holder dies, the next periodic check sweeps again.
CLAIM_TTL = 30.0
_KV_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError, BusUnavailable)


class Liveness:
    def __init__(
        self,
        *,
        node_id: str,
        kv: KeyValue,
        js: JetStreamContext,
        store: KvPresenceStore,
        bus: Bus,
        subjects: Subjects,
        ttl: float,
        sweep_interval: float,
        stats: Callable[[], dict[str, int]],
        on_swept: Callable[[], Awaitable[None]],
        on_sweep: Callable[[str, int], None] = lambda node, conns: None,
        on_error: Callable[[str], None] = lambda op: None,
    ) -> None:
        self.node_id = node_id
        self.kv = kv
        self.js = js
        self.store = store
        self.bus = bus
        self.subjects = subjects
        self.ttl = ttl
        self.sweep_interval = sweep_interval
        self._stats = stats
        self._on_swept = on_swept
        self._on_sweep = on_sweep
        self._on_error = on_error  # "heartbeat", "check" or "sweep" failed (counted in the metrics)
        self.started_at = utc_now()
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: Any = None
        self._stopping = False
        self._sweeping: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Sweep what an earlier process with this node id left, announce this one, start watching."""
        await self.sweep(self.node_id, own=True)
        await self._put_info()
        await self.beat()
        await self.rewatch()
        self._tasks = [
            asyncio.ensure_future(self._beat_forever()),
            asyncio.ensure_future(self._check_forever()),
        ]

    async def rewatch(self) -> None:
        """(Re)start the watch on heartbeats: after a NATS restart its consumer may be gone.

        A callback on an ordered consumer rather than nats-py's ``KeyWatcher`` loop: its ``updates()``
        waits with ``asyncio.wait_for``, which on Python 3.11 can swallow the cancellation that stops
        the node, and it takes the server's TTL markers for values."""
        await self._unwatch()
        self._watcher = await self.js.subscribe(
            self.store.prefix + keys.NODES_ALIVE_FILTER,
            stream=self.store.stream,
            cb=self._on_heartbeat_change,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )

    async def _unwatch(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.unsubscribe()

    async def stop(self) -> None:
        """Stop beating and watching, and remove this node's own keys (its connections are gone)."""
        self._stopping = True
        await self._unwatch()
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        try:
            # Whatever a failed close left behind goes now (the sweep also removes the info key); the
            # heartbeat goes last, so a survivor that sees it vanish finds nothing left to sweep.
            await self.sweep(self.node_id, own=True)
            await self.store.purge_keys([keys.node_alive_key(self.node_id)])
        except _KV_ERRORS as exc:
            log.warning(
                "could not remove node %s from presence (survivors will sweep it): %s", self.node_id, exc
            )

    # -- heartbeat -------------------------------------------------------------------------------------
    async def beat(self) -> None:
        value = {"node": self.node_id, "started_at": self.started_at, **self._stats()}
        subject = self.store.prefix + keys.node_alive_key(self.node_id)
        await self.js.publish(subject, orjson.dumps(value), msg_ttl=self.ttl)

    async def _put_info(self) -> None:
        info = {"node": self.node_id, "started_at": self.started_at}
        await self.kv.put(keys.node_info_key(self.node_id), orjson.dumps(info))

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.beat()
                await self.check_not_swept()
            except _KV_ERRORS as exc:
                _reraise_if_cancelled()
                self._on_error("heartbeat")
                log.warning("heartbeat failed: %s", exc)

    async def check_not_swept(self) -> None:
        """If a survivor swept this node while it was alive (its heartbeat lapsed), restore its entries."""
        if await self._exists(keys.node_info_key(self.node_id)):
            return
        if await self._exists(keys.node_sweep_key(self.node_id)):
            return  # a sweep is still running: restore after it, on a later beat
        log.warning("node %s was swept while alive (heartbeat lapsed); restoring its presence", self.node_id)
        await self._put_info()
        await self._on_swept()

    async def repair(self, local: dict[str, tuple[ConnRecord, frozenset[str]]]) -> tuple[int, int]:
        """Make this node's keys match its open connections (``conn id -> (record, rooms)``), after an
        outage in which closes could not be written. Returns (connections rewritten, keys purged)."""
        actual: dict[str, Any] = {}
        for key_filter in keys.node_filters(self.node_id):
            actual.update(await snapshot(self.kv, key_filter))
        states = [LocalState(conn, record.user, rooms) for conn, (record, rooms) in local.items()]
        expected = expected_keys(states)
        fix = repair(expected, actual)
        await self.store.purge_keys(fix.extra)
        stale = sorted({expected[key].conn for key in fix.missing})
        for conn in stale:
            record, rooms = local[conn]
            await self.store.rewrite(record, set(rooms))
        if stale or fix.extra:
            log.info(
                "repaired presence: %d connections rewritten, %d stale keys purged",
                len(stale),
                len(fix.extra),
            )
        return len(stale), len(fix.extra)

    # -- detecting deaths --------------------------------------------------------------------------------
    async def _on_heartbeat_change(self, msg: Msg) -> None:
        if not is_removal(msg.headers):
            return  # a beat
        node = keys.node_of_node_key(msg.subject[len(self.store.prefix) :])
        if node != self.node_id and not self._stopping:
            log.info("node %s stopped beating", node)
            self._spawn_sweep(node)

    async def _check_forever(self) -> None:
        if not self.sweep_interval:
            await self.check()
            return
        while not self._stopping:
            try:
                await self.check()
            except _KV_ERRORS as exc:
                _reraise_if_cancelled()
                self._on_error("check")
                log.warning("dead-node check failed: %s", exc)
            await asyncio.sleep(self.sweep_interval)

    async def check(self) -> set[str]:
        """Sweep every node that has entries but no heartbeat; returns the nodes found dead."""
        registered = await snapshot(self.kv, keys.NODES_INFO_FILTER)
        alive = await snapshot(self.kv, keys.NODES_ALIVE_FILTER)
        dead = dead_nodes(
            (keys.node_of_node_key(k) for k in registered),
            (keys.node_of_node_key(k) for k in alive),
            self.node_id,
        )
        for node in dead:
            self._spawn_sweep(node)
        return dead

    def _spawn_sweep(self, node: str) -> None:
        if node in self._sweeping:
            return
        self._sweeping.add(node)

        async def run() -> None:
            try:
                await self.sweep(node)
            except _KV_ERRORS as exc:
                _reraise_if_cancelled()
                self._on_error("sweep")
                log.warning("sweep of node %s failed (the next check retries): %s", node, exc)
            finally:
                self._sweeping.discard(node)

        self._tasks.append(asyncio.ensure_future(run()))
        self._tasks = [t for t in self._tasks if not t.done()]

    # -- sweeping ----------------------------------------------------------------------------------------
    async def sweep(self, node: str, own: bool = False) -> int | None:
        """Purge a dead node's entries and publish its connections' disconnect events.

        Returns how many connections were swept, or None when another node holds the claim or the node
        turned out alive or already swept. ``own`` is this node's start: leftovers of an earlier process
        with the same id are swept whatever its heartbeat says, once any other sweeper is done.
        """
        if not await self._claim(node, wait=own):
            return None
        try:
            if not own:
                if not await self._exists(keys.node_info_key(node)):
                    return None  # swept already
                if await self._exists(keys.node_alive_key(node)):
                    return None  # it came back
            entries: dict[str, Any] = {}
            for key_filter in keys.node_filters(node):
                entries.update(await snapshot(self.kv, key_filter))
            lost = lost_connections(node, entries)
            await self.store.purge_keys(list(entries))
            now = utc_now()
            for conn in lost:
                headers = {h.CONN: conn.conn, h.NODE: node, h.ROUTE: conn.route or "/", h.REMOTE: conn.remote}
                if conn.user is not None:
                    headers[h.USER] = conn.user
                body = orjson.dumps(conn.disconnect_event(now, self.node_id))
                await self.bus.publish(self.subjects.client_disconnect, body, headers)
            await self.store.purge_keys([keys.node_info_key(node)])
            if lost or not own:
                log.info("swept node %s: %d connections, %d keys", node, len(lost), len(entries))
            self._on_sweep(node, len(lost))
            return len(lost)
        finally:
            with contextlib.suppress(*_KV_ERRORS):
                await self.kv.purge(keys.node_sweep_key(node), msg_ttl=PURGE_MARKER_TTL)

    async def _claim(self, node: str, wait: bool) -> bool:
        """Create ``node.<node>.sweep`` if it does not exist (or is deleted): an atomic compare-and-set."""
        claim = orjson.dumps({"by": self.node_id, "at": utc_now()})
        subject = self.store.prefix + keys.node_sweep_key(node)
        deadline = asyncio.get_running_loop().time() + CLAIM_TTL
        while True:
            seq, live = await self._latest(keys.node_sweep_key(node))
            if not live:
                try:
                    headers = {"Nats-Expected-Last-Subject-Sequence": str(seq)}
                    await self.js.publish(subject, claim, headers=headers, msg_ttl=CLAIM_TTL)
                    return True
                except nats.js.errors.BadRequestError:
                    pass  # another node claimed it between our read and our write
            if not wait or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.2)

    async def _latest(self, key: str) -> tuple[int, bool]:
        """The stream sequence of ``key``'s last message (0 if none) and whether it holds a value.

        nats-py's ``KeyValue.get`` mistakes the marker the server leaves when a TTL runs out for a value
        (it only knows the ``KV-Operation`` header), so this reads the message and its headers itself.
        """
        try:
            msg = await self.js.get_msg(self.store.stream, subject=self.store.prefix + key)
        except nats.js.errors.NotFoundError:
            return 0, False
        return int(msg.seq or 0), not is_removal(msg.headers)

    async def _exists(self, key: str) -> bool:
        return (await self._latest(key))[1]


def _reraise_if_cancelled() -> None:
    """nats-py turns a cancelled wait into its own TimeoutError; a task being stopped must still stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
