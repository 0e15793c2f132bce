"""Read the presence registry from any Python service, with server-side filtered watches.

Never scan the bucket: ``user_connections`` and ``room_members`` ask the server only for keys under
``user.<id>.>`` / ``room.<name>.>`` (nats-py's own ``KeyValue.keys(filters=...)`` filters client-side
after reading every key, so it is not used here). Any NATS client can do the same: an ordered consumer
on ``$KV.presence.<filter>`` with deliver policy "last per subject".
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.kv import KeyValue

from shared import presence_keys as keys
from shared.subjects import validate_room, validate_user_id


async def snapshot(kv: KeyValue, key_filter: str = ">", timeout: float = 5.0) -> dict[str, Any]:
    """Current values (decoded JSON) of every live key matching ``key_filter``.

    One ordered consumer delivering the last message per matching key, read until the message that
    says nothing is pending. (nats-py's ``KeyValue.watch`` can signal "caught up" before the first
    entries when the server is quick, which would make a snapshot look empty, and it takes the marker
    the server leaves when a key's TTL runs out for a value; this reads the stream itself.)
    """
    js, stream, prefix = kv._js, kv._stream, kv._pre  # nats-py keeps these private
    arrived: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        arrived.put_nowait(msg)

    sub = await js.subscribe(
        prefix + key_filter,
        stream=stream,
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        inactive_threshold=60.0,
    )
    found: dict[str, Any] = {}
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
            return found
        while True:
            msg = await asyncio.wait_for(arrived.get(), timeout)
            key = msg.subject[len(prefix) :]
            if is_removal(msg.headers) or not msg.data:
                found.pop(key, None)
            else:
                found[key] = orjson.loads(msg.data)
            if msg.metadata.num_pending == 0:
                return found
    finally:
        await sub.unsubscribe()


def is_removal(headers: dict[str, str] | None) -> bool:
    """A delete or purge, by the client (``KV-Operation``) or by the server when a TTL ran out."""
    if not headers:
        return False
    return headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers


async def user_online(kv: KeyValue, user_id: str) -> bool:
    """Whether ``user_id`` has at least one open connection on any node."""
    return bool(await user_connections(kv, user_id))


async def cluster_nodes(kv: KeyValue) -> dict[str, Any]:
    """node id -> its latest heartbeat (``{"node","started_at","connections","users","rooms"}``) for
    every live node: the nodes' own counts, so cluster totals never need a scan of connection keys."""
    beats = await snapshot(kv, keys.NODES_ALIVE_FILTER)
    return {keys.node_of_node_key(k): v for k, v in beats.items()}


async def user_connections(kv: KeyValue, user_id: str) -> dict[str, Any]:
    """conn id -> ``{"conn","node","connected_at"}`` for every open connection of ``user_id``."""
    entries = await snapshot(kv, keys.user_filter(validate_user_id(user_id)))
    return {keys.conn_id_from_key(k): v for k, v in entries.items()}


async def room_members(kv: KeyValue, room: str) -> dict[str, Any]:
    """conn id -> ``{"conn","node","user","joined_at"}`` for every member of ``room``."""
    entries = await snapshot(kv, keys.room_filter(validate_room(room)))
    return {keys.conn_id_from_key(k): v for k, v in entries.items()}
