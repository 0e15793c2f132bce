"""Joining and leaving rooms: the hub, the node's subscriptions, the presence keys, presence events and
recovery's bookkeeping, in the order that makes a join's ``ok`` mean its deliveries will arrive.

A client's ``join`` and ``leave`` (:class:`gateway.session.Sessions`) and a backend's control message
(:class:`gateway.control.Control`) both come here, so neither knows the other.
"""

from __future__ import annotations

import logging

from gateway.core.hub import Hub, JoinOutcome
from gateway.core.presence_writes import ConnRecord
from gateway.features import RoomEvents, SessionRecovery
from gateway.io.interests import InterestSync
from gateway.io.outbox import LocalConn
from gateway.io.presence_writer import PresenceOps, PresenceUnavailable
from gateway.metrics import GatewayMetrics

log = logging.getLogger("prism.session")


def record_of(conn: LocalConn, node_id: str) -> ConnRecord:
    return ConnRecord(conn.conn_id, node_id, conn.user, conn.route, conn.remote, conn.connected_at)


class Membership:
    def __init__(
        self,
        node_id: str,
        hub: Hub[LocalConn],
        interests: InterestSync,
        presence: PresenceOps,
        room_events: RoomEvents,
        recovery: SessionRecovery,
        metrics: GatewayMetrics,
    ) -> None:
        self.node_id = node_id
        self.hub = hub
        self.interests = interests
        self.presence = presence
        self.room_events = room_events
        self.recovery = recovery
        self.metrics = metrics

    async def join(self, conn: LocalConn, room: str) -> JoinOutcome:
        """Join ``room``; returns once the subscription and the room key are in place (raises
        :class:`PresenceUnavailable`, with the join undone, if the key could not be written)."""
        outcome, changes = self.hub.join(conn.conn_id, room)
        if outcome is not JoinOutcome.JOINED:
            return outcome
        # The subscription is sent before the KV put on the same NATS connection, so once the put is
        # acknowledged the server has the subscription too: "ok" means deliveries will arrive.
        await self.interests.apply(changes)
        if conn.closing or not self.hub.is_member(conn.conn_id, room):
            return outcome  # a leave or a close overtook it, and queued its purge: nothing to write
        try:
            await self.presence.joined(record_of(conn, self.node_id), room)
        except PresenceUnavailable:
            self.metrics.presence_errors.labels(node=self.node_id, op="join").inc()
            await self.leave(conn, room)
            raise
        self.room_events.joined(conn, room)
        return outcome

    async def leave_room(self, conn: LocalConn, room: str) -> bool:
        """Leave ``room`` (a client's leave, or a backend's control leave), recovering or not."""
        await self.recovery.left(conn, room)  # first: see Recovery.wants_core
        return await self.leave(conn, room)

    async def leave(self, conn: LocalConn, room: str) -> bool:
        was_member, changes = self.hub.leave(conn.conn_id, room)
        if not was_member:
            return False
        removed = self.presence.left(record_of(conn, self.node_id), room)  # queued before any await
        self.room_events.left(conn, room)
        await self.interests.apply(changes)
        try:
            await removed
        except PresenceUnavailable as exc:  # the writer scheduled a repair, which purges the key
            log.warning("presence leave %s %s failed: %s", conn.conn_id, room, exc)
            self.metrics.presence_errors.labels(node=self.node_id, op="leave").inc()
        return True
