"""Read the presence registry from any Python service, with server-side filtered reads, never a scan.

    reader = await PresenceReader.open(nc)          # reads the layout from the entry bucket "presence"
    await reader.user_connections("alice")          # {conn id: {"conn","node","connected_at"}}
    await reader.room_members("lobby")              # {conn id: {"conn","node","user","joined_at"}}
    await reader.connection("node1.Xq3v9LkPa0Zc")   # {"conn","node","user","route","remote","connected_at"}

Where each key lives is :mod:`shared.presence_keys` (layout 2: an entry bucket and hash-sharded buckets).
Any NATS client can do the same: read ``layout`` from the entry bucket, hash the name to find its shard,
and run an ordered consumer on ``$KV.<shard bucket>.<filter>`` with deliver policy "last per subject".
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from shared import presence_keys as keys
from shared.presence_keys import Layout
from shared.subjects import validate_conn_id, validate_room, validate_user_id


async def read_values(
    js: JetStreamContext, bucket: str, key_filter: str = ">", timeout: float = 5.0
) -> dict[str, bytes]:
    """key -> current value of every live key of ``bucket`` matching ``key_filter``.

    One ordered consumer delivering the last message per matching key, read until the message that says
    nothing is pending. (nats-py's ``KeyValue.watch`` can signal "caught up" before the first entries
    when the server is quick, which would make a read look empty, and it takes the marker the server
    leaves when a key's TTL runs out for a value; this reads the stream itself.)
    """
    prefix = f"$KV.{bucket}."
    found: dict[str, bytes] = {}
    done = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        key = msg.subject[len(prefix) :]
        if is_removal(msg.headers) or not msg.data:
            found.pop(key, None)
        else:
            found[key] = msg.data
        if msg.metadata.num_pending == 0 and not done.done():
            done.set_result(None)

    sub = await js.subscribe(
        prefix + key_filter,
        stream=keys.kv_stream(bucket),
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        inactive_threshold=60.0,
    )
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
            return {}
        # Progress, not the whole read, is bounded: a large read (a room of 100,000) takes a while.
        while not done.done():
            seen = len(found)
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout)
            except TimeoutError:
                if len(found) == seen:
                    raise
        return found
    finally:
        await sub.unsubscribe()


def is_removal(headers: dict[str, str] | None) -> bool:
    """A delete or purge, by the client (``KV-Operation``) or by the server when a TTL ran out."""
    if not headers:
        return False
    return headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers


async def read_layout(js: JetStreamContext, bucket: str = keys.BUCKET) -> Layout:
    """The layout that entry bucket ``bucket`` announces (``LookupError`` if no node has written it)."""
    value = await get_value(js, bucket, keys.LAYOUT_KEY)
    if value is None:
        raise LookupError(f"no presence layout in bucket {bucket!r}: has a Prism node run against this NATS?")
    return Layout.from_json(bucket, value)


async def get_value(js: JetStreamContext, bucket: str, key: str) -> bytes | None:
    """The current value of one key, or None if it has none (never written, purged, or expired)."""
    try:
        msg = await js.get_msg(keys.kv_stream(bucket), subject=keys.kv_subject(bucket, key))
    except NotFoundError:
        return None
    if is_removal(msg.headers) or not msg.data:
        return None
    return bytes(msg.data)


class PresenceReader:
    """Reads the registry with the layout it was opened with."""

    def __init__(self, js: JetStreamContext, layout: Layout) -> None:
        self.js = js
        self.layout = layout

    @classmethod
    async def open(cls, nc: NatsClient, bucket: str = keys.BUCKET) -> PresenceReader:
        js = nc.jetstream()
        return cls(js, await read_layout(js, bucket))

    async def _decoded(self, bucket: str, key_filter: str) -> dict[str, Any]:
        values = await read_values(self.js, bucket, key_filter)
        return {keys.conn_id_from_key(k): orjson.loads(v) for k, v in values.items()}

    async def connection(self, conn_id: str) -> dict[str, Any] | None:
        """The record of an open connection, or None."""
        validate_conn_id(conn_id)
        value = await get_value(self.js, self.layout.bucket_of(conn_id), keys.conn_key(conn_id))
        return None if value is None else dict(orjson.loads(value))

    async def user_connections(self, user_id: str) -> dict[str, Any]:
        """conn id -> ``{"conn","node","connected_at"}`` for every open connection of ``user_id``."""
        validate_user_id(user_id)
        return await self._decoded(self.layout.bucket_of(user_id), keys.user_filter(user_id))

    async def user_online(self, user_id: str) -> bool:
        """Whether ``user_id`` has at least one open connection on any node."""
        return bool(await self.user_connections(user_id))

    async def room_members(self, room: str) -> dict[str, Any]:
        """conn id -> ``{"conn","node","user","joined_at"}`` for every member of ``room``."""
        validate_room(room)
        return await self._decoded(self.layout.bucket_of(room), keys.room_filter(room))

    async def nodes(self) -> dict[str, Any]:
        """node id -> its latest KV heartbeat (``{"node","started_at","connections","users","rooms"}``)
        for every node whose heartbeat has not expired."""
        beats = await read_values(self.js, self.layout.bucket, keys.NODES_ALIVE_FILTER)
        return {keys.node_of_node_key(k): orjson.loads(v) for k, v in beats.items()}
