"""Read the presence registry from any Python service, with server-side filtered watches.

Never scan the bucket: ``user_connections`` and ``room_members`` ask the server only for keys under
``user.<id>.>`` / ``room.<name>.>`` (nats-py's own ``KeyValue.keys(filters=...)`` filters client-side
after reading every key, so it is not used here).
"""

from __future__ import annotations

from typing import Any

import orjson
from nats.js.kv import KeyValue

from shared import presence_keys as keys
from shared.subjects import validate_room, validate_user_id


async def snapshot(kv: KeyValue, key_filter: str = ">") -> dict[str, Any]:
    """Current values (decoded JSON) of every live key matching ``key_filter``."""
    watcher = await kv.watch(key_filter, ignore_deletes=True)
    found: dict[str, Any] = {}
    try:
        async for entry in watcher:
            if entry is None:  # the watcher has caught up with the bucket
                break
            if entry.operation is None and entry.value:
                found[entry.key] = orjson.loads(entry.value)
            else:
                found.pop(entry.key, None)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found


async def user_connections(kv: KeyValue, user_id: str) -> dict[str, Any]:
    """conn id -> ``{"conn","node","connected_at"}`` for every open connection of ``user_id``."""
    entries = await snapshot(kv, keys.user_filter(validate_user_id(user_id)))
    return {keys.conn_id_from_key(k): v for k, v in entries.items()}


async def room_members(kv: KeyValue, room: str) -> dict[str, Any]:
    """conn id -> ``{"conn","node","user","joined_at"}`` for every member of ``room``."""
    entries = await snapshot(kv, keys.room_filter(validate_room(room)))
    return {keys.conn_id_from_key(k): v for k, v in entries.items()}
