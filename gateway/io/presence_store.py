"""The presence registry in the JetStream KV bucket, as the gateway writes it.

Key layout and value formats are defined in :mod:`shared.presence_keys`. Removal purges a key with a
short TTL on the purge marker, so watchers see the removal but the bucket does not keep a marker for
every connection that ever existed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from shared import presence_keys as keys

log = logging.getLogger("prism.presence")

PURGE_MARKER_TTL = 60.0


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

    async def joined(self, record: ConnRecord, room: str) -> None: ...

    async def left(self, record: ConnRecord, room: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BucketOptions:
    name: str = keys.BUCKET
    replicas: int = 1
    storage: str = "file"


async def open_bucket(js: JetStreamContext, options: BucketOptions) -> KeyValue:
    """Bind to the presence bucket, creating it if no node has yet (safe when many nodes race)."""
    try:
        return await js.key_value(options.name)
    except nats.js.errors.BucketNotFoundError:
        pass
    config = KeyValueConfig(
        bucket=options.name,
        history=1,
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
    """:class:`PresenceStore` over a nats-py KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def register(self, record: ConnRecord) -> None:
        value: dict[str, Any] = {
            "conn": record.conn,
            "node": record.node,
            "user": record.user,
            "route": record.route,
            "remote": record.remote,
            "connected_at": record.connected_at,
        }
        puts = [self.kv.put(keys.conn_key(record.conn), orjson.dumps(value))]
        if record.user is not None:
            user_value = {"conn": record.conn, "node": record.node, "connected_at": record.connected_at}
            puts.append(self.kv.put(keys.user_key(record.user, record.conn), orjson.dumps(user_value)))
        await asyncio.gather(*puts)

    async def unregister(self, record: ConnRecord, rooms: set[str]) -> None:
        names = [keys.room_key(room, record.conn) for room in rooms]
        if record.user is not None:
            names.append(keys.user_key(record.user, record.conn))
        names.append(keys.conn_key(record.conn))
        results = await asyncio.gather(*(self._purge(name) for name in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not remove presence key %s: %s", name, result)

    async def joined(self, record: ConnRecord, room: str) -> None:
        value = {"conn": record.conn, "node": record.node, "user": record.user, "joined_at": utc_now()}
        await self.kv.put(keys.room_key(room, record.conn), orjson.dumps(value))

    async def left(self, record: ConnRecord, room: str) -> None:
        await self._purge(keys.room_key(room, record.conn))

    async def _purge(self, key: str) -> None:
        await self.kv.purge(key, msg_ttl=PURGE_MARKER_TTL)
