"""Presence queries over NATS request/reply, answered by any node for the whole cluster.

Every node subscribes ``presence.>`` in the queue group ``prism-presence``, so each query is answered
once, by whichever node NATS picks. User and room answers come from server-side filtered reads of the
registry's shard buckets (:mod:`shared.presence`), never from a scan, and not from the answering node's
memory; the cluster answer comes from the heartbeats every node hears.

    presence.user.<user>   -> {"user","online","connections":[{"conn","node","connected_at"}]}
    presence.room.<room>   -> {"room","count","users":[...],"members":[{"conn","node","user","joined_at"}],
                               "page":1,"pages":N}   (one message per page of PAGE_SIZE members)
    presence.online        {"users":[...]} -> {"online":{"<user>":true|false}}
    presence.cluster       -> {"nodes":[{"node","started_at","connections","users","rooms"}],
                               "totals":{"nodes","connections"}}

A bad query gets ``{"error":"<code>","message":"..."}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gateway.io.bus import Bus, Headers, SubscriptionHandle
from shared.errors import InvalidName
from shared.presence import PresenceReader
from shared.subjects import MAX_ONLINE_QUERY_USERS, PRESENCE_QUEUE, Subjects, validate_user_id

log = logging.getLogger("prism.presence_api")

# Members in one message of a room answer: about 120 KB, well under NATS's default 1 MiB payload limit.
PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000


class QueryError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PresenceApi:
    def __init__(
        self,
        bus: Bus,
        reader: PresenceReader,
        nodes: Callable[[], Mapping[str, Mapping[str, Any]]],
        subjects: Subjects,
    ) -> None:
        self.bus = bus
        self.reader = reader
        self.nodes = nodes
        self.subjects = subjects
        self._offset = subjects.tail_offset("presence.")
        self._sub: SubscriptionHandle | None = None

    async def start(self) -> None:
        self._sub = await self.bus.subscribe(
            self.subjects.presence_queries, self.on_query, queue=PRESENCE_QUEUE
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def on_query(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        if not reply:
            return  # a query nobody waits for
        try:
            answers = await self.answer(subject[self._offset :], data)
        except QueryError as exc:
            answers = [{"error": exc.code, "message": exc.message}]
        except InvalidName as exc:
            answers = [{"error": "invalid_name", "message": str(exc)}]
        except Exception as exc:  # the registry is unreachable: say so rather than time the caller out
            log.warning("presence query %s failed: %s", subject, exc)
            answers = [{"error": "unavailable", "message": f"presence registry unavailable: {exc}"}]
        for answer in answers:
            await self.bus.publish(reply, orjson.dumps(answer))

    async def answer(self, query: str, data: bytes) -> list[dict[str, Any]]:
        """The answer to one query: one message, or for a large room one message per page."""
        kind, _, name = query.partition(".")
        if kind == "user" and name:
            conns = await self.reader.user_connections(name)
            listed = sorted(conns.values(), key=lambda c: (c.get("connected_at", ""), c.get("conn", "")))
            return [{"user": name, "online": bool(conns), "connections": listed}]
        if kind == "room" and name:
            page_size = _page_size_of(data)
            members = await self.reader.room_members(name)
            return room_pages(name, members, page_size)
        if kind == "online" and not name:
            users = _users_of(data)
            found = await asyncio.gather(*(self.reader.user_online(user) for user in users))
            return [{"online": dict(zip(users, found, strict=True))}]
        if kind == "cluster" and not name:
            nodes = [
                {k: beat.get(k) for k in ("node", "started_at", "connections", "users", "rooms")}
                for _, beat in sorted(self.nodes().items())
            ]
            connections = sum(int(n.get("connections") or 0) for n in nodes)
            return [{"nodes": nodes, "totals": {"nodes": len(nodes), "connections": connections}}]
        raise QueryError(
            "unknown_query",
            f"unknown presence query {query!r}; expected user.<id>, room.<name>, online or cluster",
        )


def room_pages(room: str, members: Mapping[str, Any], page_size: int) -> list[dict[str, Any]]:
    """A room's members sorted by conn id, ``page_size`` per message. Each page lists the users of its
    own members; ``count`` is the room's connections in all pages."""
    listed = [members[conn] for conn in sorted(members)]
    pages = max(1, -(-len(listed) // page_size))
    answers = []
    for page in range(pages):
        chunk = listed[page * page_size : (page + 1) * page_size]
        users = sorted({m["user"] for m in chunk if isinstance(m.get("user"), str)})
        answers.append(
            {
                "room": room,
                "count": len(listed),
                "users": users,
                "members": chunk,
                "page": page + 1,
                "pages": pages,
            }
        )
    return answers


def _page_size_of(data: bytes) -> int:
    if not data.strip():
        return PAGE_SIZE
    body = _json_of(data)
    size = body.get("page_size", PAGE_SIZE) if isinstance(body, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_PAGE_SIZE:
        raise QueryError("invalid_query", f'expected {{"page_size": 1-{MAX_PAGE_SIZE}}} or an empty body')
    return size


def _json_of(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise QueryError("invalid_json", f"query body is not JSON: {exc}") from None


def _users_of(data: bytes) -> list[str]:
    body = _json_of(data)
    users = body.get("users") if isinstance(body, dict) else None
    if not isinstance(users, list):
        raise QueryError("invalid_query", 'expected {"users": ["<id>", ...]}')
    if len(users) > MAX_ONLINE_QUERY_USERS:
        raise QueryError("too_many_users", f"at most {MAX_ONLINE_QUERY_USERS} users per query")
    return list(dict.fromkeys(validate_user_id(u) for u in users))
