"""The presence registry in the JetStream KV bucket, as the gateway writes it.

Key layout and value formats are defined in :mod:`shared.presence_keys`. Removal purges a key with a
short TTL on the purge marker, so watchers see the removal but the bucket does not keep a marker for
every connection that ever existed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from shared import presence_keys as keys

log = logging.getLogger("prism.presence")

PURGE_MARKER_TTL = 60.0
# How long the server keeps the marker it leaves when a key's TTL runs out (a node's heartbeat).
MARKER_TTL = 60.0


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ConnRecord:
    conn: str
    node: str
    user: str | None
    route: str
    remote: str
    connected_at: str


class PresenceStore(Protocol):
    async def register(self, record: ConnRecord) -> None: ...

    async def unregister(self, record: ConnRecord, rooms: set[str]) -> None: ...

    async def rewrite(self, record: ConnRecord, rooms: set[str]) -> None: ...

    async def purge_keys(self, names: list[str]) -> None: ...

    async def joined(self, record: ConnRecord, room: str) -> None: ...

    async def left(self, record: ConnRecord, room: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BucketOptions:
    name: str = keys.BUCKET
    replicas: int = 1
    storage: str = "file"


async def open_bucket(js: JetStreamContext, options: BucketOptions) -> KeyValue:
    """Bind to the presence bucket, creating it if no node has yet (safe when many nodes race).

    A bucket made before heartbeats existed gets expiry markers switched on (a stream update)."""
    try:
        kv = await js.key_value(options.name)
    except nats.js.errors.BucketNotFoundError:
        return await _create_bucket(js, options)
    stream = f"KV_{options.name}"
    info = await js.stream_info(stream)
    if not info.config.subject_delete_marker_ttl or not info.config.allow_msg_ttl:
        log.info("switching on TTL expiry markers for the existing presence bucket %s", options.name)
        await js.update_stream(replace(info.config, subject_delete_marker_ttl=MARKER_TTL, allow_msg_ttl=True))
    return kv


async def open_bucket_when_ready(js: JetStreamContext, options: BucketOptions) -> KeyValue:
    """:func:`open_bucket`, retried with backoff while JetStream cannot serve it yet (a NATS cluster
    that is still electing its leaders, or too few servers up for the replicas asked for)."""
    delay = 0.5
    while True:
        try:
            return await open_bucket(js, options)
        except (nats.js.errors.Error, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            log.warning(
                "presence bucket %s not available yet (%s); retrying in %.1fs", options.name, exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _create_bucket(js: JetStreamContext, options: BucketOptions) -> KeyValue:
    config = KeyValueConfig(
        bucket=options.name,
        history=1,
        # The server leaves a marker when a heartbeat's TTL runs out, so watchers see a node die.
        limit_marker_ttl=MARKER_TTL,
        replicas=options.replicas,
        storage=StorageType.MEMORY if options.storage == "memory" else StorageType.FILE,
        description="Prism presence registry: conn., user., room. keys (see docs/protocol.md)",
    )
    try:
        return await js.create_key_value(config=config)
    except nats.js.errors.BadRequestError:
        # Another node created it first with the same or a compatible config.
        return await js.key_value(options.name)


class KvPresenceStore:
    """:class:`PresenceStore` over a JetStream KV bucket.

    One acknowledgement per operation, however many keys it writes: NATS keeps one connection's
    publishes in order and the stream stores them in order, so every key but the last goes out as a
    plain publish and the acknowledged last write proves all of them are stored. (A connect writes two
    keys, a disconnect up to 2 + rooms: this halves the round trips on connect and disconnect.)
    """

    def __init__(self, kv: KeyValue, nc: NatsClient, bucket: str) -> None:
        self.kv = kv
        self.nc = nc
        self.stream = f"KV_{bucket}"
        self.prefix = f"$KV.{bucket}."

    async def register(self, record: ConnRecord) -> None:
        value: dict[str, Any] = {
            "conn": record.conn,
            "node": record.node,
            "user": record.user,
            "route": record.route,
            "remote": record.remote,
            "connected_at": record.connected_at,
        }
        if record.user is not None:
            user_value = {"conn": record.conn, "node": record.node, "connected_at": record.connected_at}
            await self.nc.publish(
                self.prefix + keys.user_key(record.user, record.conn), orjson.dumps(user_value)
            )
        await self.kv.put(keys.conn_key(record.conn), orjson.dumps(value))

    async def unregister(self, record: ConnRecord, rooms: set[str]) -> None:
        names = [keys.room_key(room, record.conn) for room in rooms]
        if record.user is not None:
            names.append(keys.user_key(record.user, record.conn))
        await self.purge_keys([*names, keys.conn_key(record.conn)])

    async def rewrite(self, record: ConnRecord, rooms: set[str]) -> None:
        """Write every key of one open connection again (repair after an outage or a mistaken sweep)."""
        for room in rooms:
            await self.nc.publish(self.prefix + keys.room_key(room, record.conn), self._room_value(record))
        await self.register(record)

    async def purge_keys(self, names: list[str]) -> None:
        """Purge ``names`` with one acknowledgement (the last one), as :meth:`unregister` does."""
        if not names:
            return
        *rest, last = names
        for name in rest:
            await self.nc.publish(self.prefix + name, b"", headers=_PURGE_HEADERS)
        await self.kv.purge(last, msg_ttl=PURGE_MARKER_TTL)

    def _room_value(self, record: ConnRecord) -> bytes:
        return orjson.dumps(
            {"conn": record.conn, "node": record.node, "user": record.user, "joined_at": utc_now()}
        )

    async def joined(self, record: ConnRecord, room: str) -> None:
        await self.kv.put(keys.room_key(room, record.conn), self._room_value(record))

    async def left(self, record: ConnRecord, room: str) -> None:
        await self.kv.purge(keys.room_key(room, record.conn), msg_ttl=PURGE_MARKER_TTL)


# What nats-py's KeyValue.purge(key, msg_ttl=...) sends, for purges published without waiting for an ack.
_PURGE_HEADERS = {"KV-Operation": "PURGE", "Nats-Rollup": "sub", "Nats-TTL": str(int(PURGE_MARKER_TTL))}
