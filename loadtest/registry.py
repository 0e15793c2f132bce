"""A gateway node's presence side without its WebSocket server: the writer, the heartbeats, the sweeps.

:class:`RegistryNode` registers thousands of simulated connections in seconds through the same
:class:`~gateway.io.presence_writer.PresenceWriter` and :class:`~gateway.io.liveness.Liveness` a node
uses, so the registry benchmark (``python -m loadtest.registry_bench``) and the cluster tests can load
the registry, kill a node of 50,000 connections and time its sweep, without 50,000 sockets.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.core.liveness import DEFAULT_TTL
from gateway.core.presence_writes import ConnRecord, LocalState
from gateway.io.bus import NatsBus
from gateway.io.liveness import Liveness
from gateway.io.presence_store import WINDOW, BucketOptions, KvPresenceStore, open_layout
from gateway.io.presence_writer import PresenceWriter
from shared.nats_connection import NatsOptions
from shared.startup import StartupSteps
from shared.subjects import Subjects
from shared.timestamps import utc_now


@dataclass
class RegistryNode:
    node_id: str
    bus: NatsBus
    beats: NatsBus
    writer: PresenceWriter
    liveness: Liveness
    open: dict[str, tuple[ConnRecord, frozenset[str]]] = field(default_factory=dict)
    writes: int = 0
    sweeps: list[tuple[str, float]] = field(default_factory=list)  # (node, seconds) of each sweep it made
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    async def start(
        cls,
        nats_url: str,
        node_id: str,
        options: BucketOptions,
        *,
        ttl: float = DEFAULT_TTL,
        sweep_interval: float = 30.0,
    ) -> RegistryNode:
        bus = await NatsBus.connect(NatsOptions(servers=nats_url.split(","), name=f"registry-{node_id}"))
        beats = await NatsBus.connect(
            NatsOptions(servers=nats_url.split(","), name=f"registry-{node_id}-liveness")
        )
        js = bus.nc.jetstream(publish_async_max_pending=WINDOW)
        layout, _ = await StartupSteps().run("the presence buckets", lambda: open_layout(js, options))
        store = KvPresenceStore(js, layout, bus)
        node: RegistryNode

        def written(writes: int) -> None:
            node.writes += writes

        writer = PresenceWriter(store, node_id, on_written=written)
        writer.start()

        async def nothing_to_announce() -> None:
            return None

        liveness = Liveness(
            node_id=node_id,
            bus=bus,
            beats=beats,
            js=js,
            store=store,
            writer=writer,
            subjects=Subjects(),
            ttl=ttl,
            sweep_interval=sweep_interval,
            stats=lambda: {"connections": len(node.open), "users": 0, "rooms": 0},
            local_state=lambda: node.local_state(),
            on_restored=nothing_to_announce,
            on_sweep=lambda swept, conns, seconds: node.sweeps.append((swept, seconds)),
        )
        node = cls(node_id, bus, beats, writer, liveness)
        await liveness.start()
        return node

    def local_state(self) -> list[LocalState]:
        return [LocalState(record, rooms) for record, rooms in self.open.values()]

    def new_record(self, user: str | None) -> ConnRecord:
        conn = f"{self.node_id}.c{next(self._ids)}"
        return ConnRecord(conn, self.node_id, user, "/ws", "127.0.0.1:1", utc_now())

    async def connect(self, users: Iterable[str | None], rooms: tuple[str, ...] = ()) -> list[ConnRecord]:
        """Open one connection per user (None: anonymous) and join each to ``rooms``, all at once, as a
        connect storm would; returns once every write is acknowledged."""
        records = [self.new_record(user) for user in users]
        done = []
        for record in records:
            self.open[record.conn] = (record, frozenset(rooms))
            done.append(self.writer.register(record))
            done += [self.writer.joined(record, room) for room in rooms]
        await asyncio.gather(*done)
        return records

    async def close(self, records: Iterable[ConnRecord]) -> None:
        done = []
        for record in records:
            _, rooms = self.open.pop(record.conn)
            done.append(self.writer.unregister(record, rooms))
        await asyncio.gather(*done)

    async def kill(self) -> None:
        """Die as a SIGKILLed node does: no more beats, no cleanup, its NATS connection gone."""
        await self.liveness.halt()
        await self.writer.halt()
        await self.bus.close()
        await self.beats.close()

    async def stop(self) -> None:
        """Stop as a drained node does: every connection closed and announced, then its own keys."""
        await self.close([record for record, _ in list(self.open.values())])
        await self.writer.stop()
        await self.liveness.stop()
        await self.bus.drain()
        await self.beats.drain()
