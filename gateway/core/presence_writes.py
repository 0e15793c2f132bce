"""What the presence registry must change for each connection event, and how a node's keys differ from
its open connections, with no I/O.

A change is a list of :class:`Write` values: a put (``value`` bytes) or a purge (``value`` None) of one
key in one bucket of the :class:`~shared.presence_keys.Layout`. Every write is idempotent, so the writer
(:mod:`gateway.io.presence_writer`) may send a batch again after a failure: applied in order, a batch
always ends in the same state.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import orjson

from shared import presence_keys as keys
from shared.presence_keys import Layout


@dataclass(frozen=True, slots=True)
class ConnRecord:
    """One connection as the registry records it."""

    conn: str
    node: str
    user: str | None
    route: str
    remote: str
    connected_at: str


@dataclass(frozen=True, slots=True)
class Write:
    """Put ``value`` at ``key`` in ``bucket``, or purge the key when ``value`` is None."""

    bucket: str
    key: str
    value: bytes | None = None


def conn_value(record: ConnRecord) -> bytes:
    return orjson.dumps(
        {
            "conn": record.conn,
            "node": record.node,
            "user": record.user,
            "route": record.route,
            "remote": record.remote,
            "connected_at": record.connected_at,
        }
    )


def user_value(record: ConnRecord) -> bytes:
    return orjson.dumps({"conn": record.conn, "node": record.node, "connected_at": record.connected_at})


def room_value(record: ConnRecord, joined_at: str) -> bytes:
    return orjson.dumps(
        {"conn": record.conn, "node": record.node, "user": record.user, "joined_at": joined_at}
    )


def register_writes(layout: Layout, record: ConnRecord) -> list[Write]:
    """A connection opens: its user key, then its conn key (the conn key is the last to come and the last
    to go, so a conn key always means the connection may have been announced)."""
    writes = []
    if record.user is not None:
        writes.append(
            Write(layout.bucket_of(record.user), keys.user_key(record.user, record.conn), user_value(record))
        )
    writes.append(Write(layout.bucket_of(record.conn), keys.conn_key(record.conn), conn_value(record)))
    return writes


def unregister_writes(layout: Layout, record: ConnRecord, rooms: Collection[str]) -> list[Write]:
    """A connection closed: purge its room keys, its user key, and its conn key last."""
    writes = [Write(layout.bucket_of(room), keys.room_key(room, record.conn)) for room in sorted(rooms)]
    if record.user is not None:
        writes.append(Write(layout.bucket_of(record.user), keys.user_key(record.user, record.conn)))
    writes.append(Write(layout.bucket_of(record.conn), keys.conn_key(record.conn)))
    return writes


def join_writes(layout: Layout, record: ConnRecord, room: str, joined_at: str) -> list[Write]:
    return [Write(layout.bucket_of(room), keys.room_key(room, record.conn), room_value(record, joined_at))]


def leave_writes(layout: Layout, record: ConnRecord, room: str) -> list[Write]:
    return [Write(layout.bucket_of(room), keys.room_key(room, record.conn))]


@dataclass(frozen=True, slots=True)
class LocalState:
    """One open connection as this node's hub knows it."""

    record: ConnRecord
    rooms: frozenset[str]


def expected_writes(
    layout: Layout, conns: Iterable[LocalState], joined_at: str
) -> dict[tuple[str, str], Write]:
    """Every key this node's open connections should have, as the put that would write it."""
    expected: dict[tuple[str, str], Write] = {}
    for conn in conns:
        writes = register_writes(layout, conn.record)
        for room in sorted(conn.rooms):
            writes += join_writes(layout, conn.record, room, joined_at)
        for write in writes:
            expected[write.bucket, write.key] = write
    return expected


@dataclass(frozen=True, slots=True)
class Repair:
    writes: list[Write]  # purges of extra keys first, then puts of missing ones
    rewritten: int  # connections with at least one missing key
    purged: int  # keys removed


def repair(expected: Mapping[tuple[str, str], Write], actual: Iterable[tuple[str, str]]) -> Repair:
    """What to write so the buckets hold exactly ``expected`` of this node's keys. ``actual`` is every
    (bucket, key) of this node found in the buckets."""
    have = set(actual)
    extra = sorted(have - expected.keys())
    missing = sorted(expected.keys() - have)
    writes = [Write(bucket, key) for bucket, key in extra]
    writes += [expected[k] for k in missing]
    stale = {keys.conn_id_from_key(key) for _, key in missing}
    return Repair(writes, len(stale), len(extra))
